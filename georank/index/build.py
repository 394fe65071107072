"""Build and commit a whole index from in-memory arrays on the driver (tests, demo, benchmarks).
The Spark job (:mod:`georank.spark.index_job`) does the same with one task per shard.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from georank.config import IndexConfig, S3Config
from georank.index.manifest import IVF_TYPES, Manifest, check_writable, make_manifest, new_index_version, write_manifest
from georank.index.shards import _checked_vectors, empty_index, serialize, shard_of, train_size, write_shard


def build_index(
    *,
    ids: np.ndarray,
    vectors: np.ndarray,
    meta: pa.Table,
    cfg: IndexConfig,
    uri: str,
    s3: S3Config,
    embed_version: str,
    gallery_table: str | None = None,
    gallery_table_version: str | None = None,
    mode: Literal["error", "overwrite"] = "error",
    seed: int = 0,
) -> Manifest:
    """Build and commit an index from in-memory arrays (driver; tests, demo, benchmarks).
    The Spark job (:mod:`georank.spark.index_job`) does the same with one task per shard.

    ``ids (n,) int64`` unique, ``vectors (n, d) float32``, ``meta``: SHARD_META columns, any order.
    """
    check_writable(uri, s3, mode)
    ids, vectors = _checked_vectors(ids, vectors, where="")
    dim = vectors.shape[1]
    train = None
    if cfg.type in IVF_TYPES:
        pick = np.random.default_rng(seed).choice(len(ids), size=train_size(cfg, len(ids)), replace=False)
        train = vectors[np.sort(pick)]
    template = serialize(empty_index(dim, cfg, train))
    version = new_index_version()
    owner = shard_of(ids, cfg.shards)
    meta_ids = meta.column("gallery_id").to_numpy()
    entries = []
    for s in range(cfg.shards):
        rows = np.flatnonzero(owner == s)
        take = np.flatnonzero(np.isin(meta_ids, ids[rows]))
        entries.append(
            write_shard(
                shard=s, n_shards=cfg.shards, ids=ids[rows], vectors=vectors[rows], meta=meta.take(take),
                template=template, root_uri=uri, index_version=version, s3=s3,
            )
        )
    manifest = make_manifest(
        index_version=version, cfg=cfg, dim=dim, entries=entries, embed_version=embed_version,
        gallery_table=gallery_table, gallery_table_version=gallery_table_version,
    )
    write_manifest(manifest, uri, s3)
    return manifest


__all__ = ["build_index"]
