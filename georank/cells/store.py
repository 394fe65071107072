"""The prototypes' index: build it (cells + proxy classifier + optional aerial keys), open it, search it.

Layout under ``candidates.prototypes.uri`` (a folder or ``s3://`` prefix): the gallery index's own
layout (:mod:`georank.index`: ``manifest.json``, ``<version>/shard-*.faiss`` + ``.parquet`` with
schema.SHARD_META rows: the cell centre as the location, its description, no image) plus
``<version>/cells.parquet`` (schema.CELLS: FAISS id -> S2 token, level, kind, photo count). The
shards are written by :func:`georank.index.write_shard` and searched by
:class:`georank.retrieve.GalleryIndex` (per-shard top-k, exact ``merge_knn_results`` merge), i.e.
exactly like the gallery; ``manifest.json`` is written last (the commit). The manifest's
``embed_version`` is the gallery index's: queries from another embedder are refused.

Runs on the driver (:func:`build_cells`) and on executors (:func:`get_cells_index`, cached per
Python worker by URI + version).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from georank import schema as S
from georank.cells.partition import cell_id_of_token, cell_levels, centres_deg, partition, token
from georank.cells.prototypes import AERIAL_LEVEL, aerial_keys, enclosing_cell, l2_normalize, train_prototypes
from georank.config import GeorankConfig, IndexConfig, PrototypeConfig, S3Config
from georank.errors import ConfigError, GalleryIndexError, InputError

log = logging.getLogger(__name__)

CELLS_FILE = "cells.parquet"


def _descriptions(latlon_deg: np.ndarray) -> list[str]:
    from georank.places import describe, reverse_geocode

    if len(latlon_deg) == 0:
        return []
    places = reverse_geocode(latlon_deg[:, 0], latlon_deg[:, 1])
    return [describe(p.city, p.state, p.country) for p in places]


def read_aerial_tiles(uri: str, s3: S3Config, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Level-16 cell ids ``(m,) uint64`` and embeddings ``(m, dim) float32`` of an AERIAL_TILES table."""
    from georank.index import embeddings_matrix
    from georank.storage import local_path

    table = pq.read_table(local_path(uri, s3))
    missing = [n for n in S.AERIAL_TILES.names if n not in table.column_names]
    if missing:
        raise InputError(f"aerial tiles {uri}: expected columns {S.AERIAL_TILES.names}, missing {missing}")
    ids = []
    for tok in table.column("cell_token").to_pylist():
        try:
            ids.append(cell_id_of_token(str(tok)))
        except ValueError as exc:
            raise InputError(f"aerial tiles {uri}: {exc}") from None
    levels = cell_levels(np.array(ids, dtype=np.uint64))
    if (levels != AERIAL_LEVEL).any():
        bad = int(np.flatnonzero(levels != AERIAL_LEVEL)[0])
        raise InputError(
            f"aerial tiles {uri}: cell {table.column('cell_token')[bad]} is at S2 level {levels[bad]}, expected {AERIAL_LEVEL}"
        )
    try:
        vectors = embeddings_matrix(table.column("embedding"), dim)
    except GalleryIndexError as exc:
        raise InputError(f"aerial tiles {uri}: {exc} (the gallery index's dim is {dim})") from None
    return np.array(ids, dtype=np.uint64), vectors


@dataclass(frozen=True)
class CellKeys:
    """Everything one prototypes' index holds: ``vectors (c + m, d)`` unit rows and their CELLS rows."""

    vectors: np.ndarray
    cells: pa.Table
    train_accuracy: float
    chance_accuracy: float


def cell_keys(
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    embeddings: np.ndarray,
    cfg: PrototypeConfig,
    *,
    aerial: tuple[np.ndarray, np.ndarray] | None = None,
) -> CellKeys:
    """Adaptive cells of the gallery photos, one prototype per cell, and (optional) aerial keys."""
    part = partition(lat_deg, lon_deg, start_level=cfg.start_level, max_level=cfg.max_level,
                     max_photos_per_cell=cfg.max_photos_per_cell)
    protos = train_prototypes(embeddings, part.photo_cell, len(part), epochs=cfg.epochs,
                              learning_rate=cfg.learning_rate, logit_scale=cfg.logit_scale, seed=cfg.seed)
    centres = centres_deg(part.cell_ids)
    vectors, tokens, levels, kinds, counts = [protos.vectors], part.tokens(), part.levels.tolist(), ["prototype"] * len(part), part.counts.tolist()
    if aerial is not None:
        ids16, z_aerial = aerial
        owner = enclosing_cell(ids16, part.cell_ids)
        z_proto = np.where((owner >= 0)[:, None], protos.vectors[np.maximum(owner, 0)], 0.0)
        vectors.append(aerial_keys(z_aerial, z_proto, kappa=cfg.kappa))
        centres = np.concatenate([centres, centres_deg(ids16)])
        tokens += [token(c) for c in ids16]
        levels += [AERIAL_LEVEL] * len(ids16)
        kinds += ["aerial"] * len(ids16)
        counts += [0] * len(ids16)
    all_vectors = l2_normalize(np.concatenate(vectors))
    cells = pa.table(
        {
            "prototype_id": pa.array(np.arange(len(all_vectors), dtype=np.int64)),
            "cell_token": pa.array(tokens, type=pa.string()),
            "level": pa.array(levels, type=pa.int32()),
            "kind": pa.array(kinds, type=pa.string()),
            "lat_deg": pa.array(centres[:, 0]),
            "lon_deg": pa.array(centres[:, 1]),
            "description": pa.array(_descriptions(centres), type=pa.string()),
            "n_photos": pa.array(counts, type=pa.int64()),
        },
        schema=S.CELLS,
    )
    return CellKeys(all_vectors, cells, protos.train_accuracy, protos.chance_accuracy)


def write_cells_index(
    keys: CellKeys, *, uri: str, s3: S3Config, n_shards: int, embed_version: str,
    gallery_index_version: str | None, mode: Literal["error", "overwrite"] = "error",
) -> Any:  # georank.index.Manifest
    """Write the keys as a sharded exact (``IDMap,Flat``) index plus ``cells.parquet``; manifest last."""
    from georank.index import (
        _put_file,
        check_writable,
        empty_index,
        join_uri,
        make_manifest,
        new_index_version,
        serialize,
        shard_of,
        write_manifest,
        write_shard,
    )

    check_writable(uri, s3, mode)
    index_cfg = IndexConfig(type="flat", shards=n_shards)
    ids = keys.cells.column("prototype_id").to_numpy()
    dim = int(keys.vectors.shape[1])
    template = serialize(empty_index(dim, index_cfg))
    version = new_index_version()
    meta = keys.cells.select(["prototype_id", "lat_deg", "lon_deg", "description"]).rename_columns(
        ["gallery_id", "lat_deg", "lon_deg", "description"]
    ).append_column("image_uri", pa.nulls(keys.cells.num_rows, pa.string()))
    owner = shard_of(ids, n_shards)
    entries = [
        write_shard(shard=s, n_shards=n_shards, ids=ids[owner == s], vectors=keys.vectors[owner == s],
                    meta=meta.filter(pa.array(owner == s)), template=template, root_uri=uri,
                    index_version=version, s3=s3)
        for s in range(n_shards)
    ]
    with tempfile.TemporaryDirectory(prefix="georank-cells-") as tmp:
        path = Path(tmp) / CELLS_FILE
        pq.write_table(keys.cells, path)
        _put_file(path, join_uri(uri, f"{version}/{CELLS_FILE}"), s3)
    manifest = make_manifest(index_version=version, cfg=index_cfg, dim=dim, entries=entries,
                             embed_version=embed_version, gallery_table=None,
                             gallery_table_version=gallery_index_version)  # the gallery index it was learned from
    write_manifest(manifest, uri, s3)
    return manifest


def gallery_vectors(cfg: GeorankConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """Ids ``(n,)``, coordinates ``(n, 2)`` and embeddings ``(n, d)`` of every gallery photo, read back
    from the gallery index's exact (flat) shards, and its manifest. Driver."""
    import faiss

    from georank.retrieve import open_index

    root = cfg.resolve(cfg.index.uri)
    index = open_index(root, cfg.s3)
    if index.manifest.index_type != "flat":
        raise GalleryIndexError(
            f"index {root} is {index.manifest.index_type}: its vectors cannot be read back exactly; "
            "expected a flat index (index.type=flat) to build cell prototypes from"
        )
    ids, latlon, vectors = [], [], []
    for shard in index.shards:
        inner = faiss.downcast_index(shard.index.index)
        shard_ids = faiss.vector_to_array(shard.index.id_map).astype(np.int64)
        shard_vecs = inner.reconstruct_n(0, shard.ntotal) if shard.ntotal else np.zeros((0, index.manifest.dim), np.float32)
        rows = shard.rows_of(shard_ids)
        ids.append(shard_ids)
        latlon.append(np.stack([shard.lat_deg[rows], shard.lon_deg[rows]], axis=1))
        vectors.append(np.asarray(shard_vecs, dtype=np.float32))
    return np.concatenate(ids), np.concatenate(latlon), np.concatenate(vectors), index.manifest


def build_cells(cfg: GeorankConfig, *, mode: Literal["error", "overwrite"] = "error") -> dict[str, Any]:
    """jobs/build_cells.py's work: gallery vectors (from the gallery index) -> cells -> prototypes
    (+ aerial keys when ``candidates.prototypes.aerial_uri`` is set) -> the prototypes' index."""
    pcfg = cfg.candidates.prototypes
    if pcfg.uri is None:
        raise ConfigError("config key 'candidates.prototypes.uri': expected a folder or s3:// prefix for the prototypes' index, got null")
    if pcfg.start_level > pcfg.max_level:
        raise ConfigError(
            f"config key 'candidates.prototypes.start_level': expected at most candidates.prototypes.max_level = "
            f"{pcfg.max_level}, got {pcfg.start_level}"
        )
    _, latlon, vectors, gallery_manifest = gallery_vectors(cfg)
    aerial = read_aerial_tiles(cfg.resolve(pcfg.aerial_uri), cfg.s3, gallery_manifest.dim) if pcfg.aerial_uri else None
    keys = cell_keys(latlon[:, 0], latlon[:, 1], vectors, pcfg, aerial=aerial)
    manifest = write_cells_index(keys, uri=cfg.resolve(pcfg.uri), s3=cfg.s3, n_shards=cfg.index.shards,
                                 embed_version=gallery_manifest.embed_version,
                                 gallery_index_version=gallery_manifest.index_version, mode=mode)
    kinds = keys.cells.column("kind").to_pylist()
    return {
        "gallery_photos": len(latlon),
        "cells": kinds.count("prototype"),
        "aerial_keys": kinds.count("aerial"),
        "max_photos_in_a_cell": int(max(keys.cells.column("n_photos").to_pylist() or [0])),
        "classifier_train_top1": round(keys.train_accuracy, 4),
        "classifier_majority_share": round(keys.chance_accuracy, 4),
        "cells_index_version": manifest.index_version,
    }


def ensure_cells(cfg: GeorankConfig) -> dict[str, Any] | None:
    """Build the prototypes' index when it is missing or was learned from another gallery index
    version than the current one (the embedded demo); None when it is current. Driver."""
    from georank.errors import GeorankError
    from georank.index import read_manifest

    gallery = read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    try:
        current = read_manifest(cfg.resolve(cfg.candidates.prototypes.uri or ""), cfg.s3)
        if current.gallery_table_version == gallery.index_version:
            return None
    except GeorankError:
        pass
    return build_cells(cfg, mode="overwrite")


def get_cells_index(cfg: GeorankConfig) -> Any:  # georank.retrieve.GalleryIndex
    """The worker's prototypes' index (all shards), loaded once per Python worker per version.
    Runs on executors."""
    from georank.index import read_manifest
    from georank.resources import cached
    from georank.retrieve import open_index

    uri = cfg.resolve(cfg.candidates.prototypes.uri or "")
    manifest = read_manifest(uri, cfg.s3)
    return cached("cells_index", (uri, manifest.index_version), lambda: open_index(uri, cfg.s3, manifest=manifest))


def search_cells(cfg: GeorankConfig, queries: np.ndarray, *, embed_version: str | None = None) -> Any:  # Neighbours
    """Top ``candidates.prototypes.k`` cell keys of ``queries (q, d)``, merged exactly over the shards."""
    index = get_cells_index(cfg)
    if embed_version is not None and index.manifest.embed_version != embed_version:
        raise GalleryIndexError(
            f"prototypes' index {cfg.candidates.prototypes.uri} was built from embedder {index.manifest.embed_version}, "
            f"the queries come from {embed_version}; expected the same: rebuild it (jobs/build_cells.py)"
        )
    k = min(cfg.candidates.prototypes.k, index.manifest.ntotal)
    return index.search(queries, k)


__all__ = ["CELLS_FILE", "CellKeys", "build_cells", "cell_keys", "ensure_cells", "gallery_vectors", "get_cells_index",
           "read_aerial_tiles", "search_cells", "write_cells_index"]
