"""The gallery rows (coordinates, place, image URI) of merged neighbour ids, from the shards'
metadata alone: no FAISS index loaded. The sharded placement's search shuffles only each shard's
ids and scores; its rank stage merges them exactly (:func:`~georank.retrieve.merge.merge_scores`)
and looks up the winners here (:func:`neighbours_from_scores`).

A shard's metadata Parquet file (SHARD_META), checked against the manifest (index version,
sha256, rows sorted and unique, one per vector), is written once per host as an uncompressed
Arrow IPC file in the artifact cache and memory-mapped by every worker::

    shard_meta/<sha256(metadata uri)[:16]>/<metadata sha256>.arrow   one index version's rows
    shard_meta/<sha256(metadata uri)[:16]>/.lock                     flock: one writer per host

A lookup binary-searches the memory-mapped id column and takes the rows it found, so a worker
reads the pages it touches, not the shard (the demo's rows take ~107 bytes each there, so a
4M-photo gallery's metadata is ~0.4 GB on disk; the page cache holds what the night's neighbours
use, shared by the host's workers). Written to a temporary file and
renamed, so a reader never sees half of it; the same URI's files of other versions are removed
then (open maps of a removed file stay readable, POSIX). Driver or executor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.config import GeorankConfig, S3Config
from georank.errors import GalleryIndexError
from georank.index import Manifest
from georank.retrieve.merge import Neighbours, merge_scores
from georank.retrieve.shard import open_meta, rows_by_id
from georank.storage import join_uri
from georank.storage.cache import cache_root, host_lock

log = logging.getLogger(__name__)


class ShardMeta:
    """One shard's metadata rows (SHARD_META, sorted by gallery id), memory-mapped."""

    def __init__(self, table: pa.Table, *, shard: int, what: str, uri: str) -> None:
        self.table = table.combine_chunks()  # one chunk per column: zero-copy views of the map
        self.shard = shard
        self.what = what
        self.uri = uri
        col = self.table.column("gallery_id")
        self.ids = col.chunk(0).to_numpy() if col.num_chunks else np.zeros(0, np.int64)  # (n,) int64, sorted

    def rows(self, ids: np.ndarray) -> pa.Table:
        """The SHARD_META rows of gallery ``ids (n,)`` (none -1), in that order; an id this shard
        does not hold is a GalleryIndexError."""
        return self.table.take(pa.array(rows_by_id(self.ids, ids, what=self.what, uri=self.uri)))


def open_shard_meta(manifest: Manifest, shard: int, *, root_uri: str, s3: S3Config) -> ShardMeta:
    """Shard ``shard``'s metadata of ``manifest`` from ``root_uri``, memory-mapped from the host's
    Arrow copy (written from the checked Parquet file when this host has none). Driver or executor."""
    entry, v = manifest.shards[shard], manifest.index_version
    meta_uri = join_uri(root_uri, entry.meta_file)
    base = cache_root() / "shard_meta" / hashlib.sha256(meta_uri.encode()).hexdigest()[:16]
    path = base / f"{entry.meta_sha256}.arrow"
    if not path.exists():
        base.mkdir(parents=True, exist_ok=True)
        with host_lock(base / ".lock"):
            if not path.exists():  # nobody wrote it while this process waited
                _write_arrow(manifest, shard, root_uri=root_uri, s3=s3, dest=path)
            for other in base.iterdir():
                if other.name != path.name and other.name != ".lock":
                    other.unlink(missing_ok=True)
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    return ShardMeta(table, shard=shard, what=f"shard {shard} of index {v}", uri=meta_uri)


def _write_arrow(manifest: Manifest, shard: int, *, root_uri: str, s3: S3Config, dest: Path) -> None:
    entry, v = manifest.shards[shard], manifest.index_version
    meta = open_meta(manifest, shard, root_uri=root_uri, s3=s3).read().select(S.SHARD_META.names).combine_chunks()
    ids = meta.column("gallery_id").to_numpy()
    if len(ids) != entry.ntotal:
        raise GalleryIndexError(
            f"shard {shard} of index {v} disagrees with its manifest: metadata rows {len(ids)} vs ntotal {entry.ntotal}"
        )
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        raise GalleryIndexError(f"shard {shard} of index {v} disagrees with its manifest: metadata ids are not sorted and unique")
    tmp = dest.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, meta.schema) as writer:
            writer.write_table(meta)
        tmp.rename(dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote shard %d of index %s's metadata (%d rows) to %s", shard, v, len(ids), dest)


def get_shard_meta(cfg: GeorankConfig, manifest: Manifest, shard: int) -> ShardMeta:
    """The worker's map of one shard's metadata, opened once per Python worker per index version."""
    from georank.resources import cached

    root = cfg.resolve(cfg.index.uri)
    key = (root, manifest.index_version, shard)
    return cached("shard_meta", key, lambda: open_shard_meta(manifest, shard, root_uri=root, s3=cfg.s3))


def neighbours_from_scores(
    gallery_id: np.ndarray, similarity: np.ndarray, metas: Sequence[ShardMeta], *, index_version: str,
    ntotal: int | None = None,
) -> Neighbours:
    """Per-shard top-k scores, ``gallery_id (s, q, k)`` and ``similarity (s, q, k)`` in shard order
    (-1 padded; ``metas[i]`` is shard i's metadata) -> the exact top-k over all shards with each
    neighbour's row looked up in the shard whose list it came from: the ids, scores, order and
    ties of :func:`~georank.retrieve.merge.merge_neighbours` over the shards' full lists."""
    s, q, k = gallery_id.shape
    if len(metas) != s:
        raise GalleryIndexError(f"expected the metadata of all {s} shards, got {len(metas)}")
    ids, sim, src = merge_scores(gallery_id, similarity, ntotal=ntotal)
    shard_of = src // k if k else src  # (q, k): the shard each neighbour came from
    flat_ids, flat_shard = ids.reshape(-1), shard_of.reshape(-1)
    lat, lon = np.full(q * k, np.nan), np.full(q * k, np.nan)
    desc, uri = np.full(q * k, "", dtype=object), np.full(q * k, "", dtype=object)
    for i in np.unique(flat_shard):
        at = np.flatnonzero(flat_shard == i)
        rows = metas[int(i)].rows(flat_ids[at])
        lat[at] = rows.column("lat_deg").to_numpy(zero_copy_only=False)
        lon[at] = rows.column("lon_deg").to_numpy(zero_copy_only=False)
        desc[at] = [d or "" for d in rows.column("description").to_pylist()]
        uri[at] = [u or "" for u in rows.column("image_uri").to_pylist()]
    return Neighbours(
        gallery_id=ids, similarity=sim, lat_deg=lat.reshape(q, k), lon_deg=lon.reshape(q, k),
        description=desc.reshape(q, k).tolist(), image_uri=uri.reshape(q, k).tolist(), index_version=index_version,
    )


__all__ = ["ShardMeta", "get_shard_meta", "neighbours_from_scores", "open_shard_meta"]
