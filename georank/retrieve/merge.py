"""Neighbours (the top-k gallery rows of q queries) and their exact merge across shards.

Each shard is searched for its own top-k; the per-shard lists are merged per query with
``faiss.merge_knn_results(..., keep_max=True)`` (inner product: larger is better), which gives
exactly the top-k of one index over the whole gallery; each merged id is then mapped back to its
row by id, never by list position. A ``-1`` id left in a merged result (FAISS pads missing hits
with -1) is a :class:`~georank.errors.GalleryIndexError`. Driver or executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.errors import GalleryIndexError


@dataclass(frozen=True)
class Neighbours:
    """The k nearest gallery photos of q queries, best first.

    gallery_id (q, k) int64; similarity (q, k) float32 (inner product); lat_deg, lon_deg
    (q, k) float64; description, image_uri: q lists of k strings. Per-shard results may
    hold -1 ids (padding, with -inf-like similarity and empty fields); merged results never do.
    """

    gallery_id: np.ndarray
    similarity: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    description: list[list[str]]
    image_uri: list[list[str]]
    index_version: str = ""

    def __len__(self) -> int:
        return int(self.gallery_id.shape[0])

    @property
    def k(self) -> int:
        return int(self.gallery_id.shape[1])

    def to_batch(self, photo_ids: Sequence[str]) -> pa.RecordBatch:
        """The neighbours as a schema.NEIGHBOURS batch, one row per query."""
        q, k = self.gallery_id.shape
        if len(photo_ids) != q:
            raise GalleryIndexError(f"expected {q} photo ids for {q} queries, got {len(photo_ids)}")

        def lists(values: np.ndarray | list[Any], typ: pa.DataType) -> pa.Array:
            flat = pa.array(np.asarray(values).reshape(-1) if not isinstance(values, list) else [v for row in values for v in row], type=typ)
            return pa.ListArray.from_arrays(pa.array(np.arange(0, q * k + 1, k, dtype=np.int32)), flat)

        return pa.RecordBatch.from_arrays(
            [
                pa.array(list(photo_ids), type=pa.string()),
                lists(self.gallery_id, pa.int64()),
                lists(self.similarity, pa.float32()),
                lists(self.lat_deg, pa.float64()),
                lists(self.lon_deg, pa.float64()),
                lists(self.description, pa.string()),
                lists(self.image_uri, pa.string()),
                pa.array([self.index_version] * q, type=pa.string()),
            ],
            schema=S.NEIGHBOURS,
        )

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch | pa.Table) -> Neighbours:
        """Inverse of :meth:`to_batch` (every row must have the same k)."""
        q = batch.num_rows

        def matrix(name: str, dtype: Any) -> np.ndarray:
            col = batch.column(name)
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            return np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(q, -1)

        version = batch.column("index_version")[0].as_py() if q else ""
        return cls(
            gallery_id=matrix("gallery_id", np.int64),
            similarity=matrix("similarity", np.float32),
            lat_deg=matrix("lat_deg", np.float64),
            lon_deg=matrix("lon_deg", np.float64),
            description=batch.column("description").to_pylist(),
            image_uri=batch.column("image_uri").to_pylist(),
            index_version=version or "",
        )


def _check_no_padding(ids: np.ndarray, *, k: int, ntotal: int | None) -> None:
    bad = np.argwhere(ids < 0)
    if len(bad):
        qi, rank = (int(v) for v in bad[0])
        size = f"the gallery holds {ntotal} vectors" if ntotal is not None else "the searched shards"
        raise GalleryIndexError(
            f"search returned id -1 (no neighbour) for {len(np.unique(bad[:, 0]))} queries, first at query {qi} "
            f"rank {rank}: expected k={k} real neighbours per query, {size}; lower retrieve.k, or raise "
            "index.nprobe for an IVF index"
        )


def merge_scores(
    gallery_id: np.ndarray, similarity: np.ndarray, *, ntotal: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact merge of per-shard top-k scores: ``gallery_id (s, q, k) int64`` and ``similarity
    (s, q, k) float32``, each shard's lists best first, -1 / float32-min padded, in shard order
    -> the merged ``ids (q, k) int64``, ``similarity (q, k) float32`` and ``src (q, k)``: where
    each merged id is among the shards' lists laid side by side (column ``shard * k + rank``),
    found by id. ``faiss.merge_knn_results(keep_max=True)``, so the order and ties of one search
    over the whole gallery. Raises GalleryIndexError on a -1 left in the result."""
    import faiss

    s, q, k = gallery_id.shape
    sim, ids = faiss.merge_knn_results(
        np.ascontiguousarray(similarity, dtype=np.float32), np.ascontiguousarray(gallery_id, dtype=np.int64), keep_max=True
    )  # (q, k) each
    _check_no_padding(ids, k=k, ntotal=ntotal)
    flat_ids = np.concatenate(list(gallery_id), axis=1) if s else np.zeros((q, 0), np.int64)  # (q, s*k)
    src = np.empty((q, k), dtype=np.int64)
    for r in range(q):
        order = np.argsort(flat_ids[r], kind="stable")
        pos = np.searchsorted(flat_ids[r][order], ids[r])
        pos = np.minimum(pos, len(order) - 1)
        found = order[pos]
        if not np.array_equal(flat_ids[r][found], ids[r]):
            raise GalleryIndexError(f"merge_neighbours: merged id not found among the shard results of query {r}")
        src[r] = found
    return ids, sim.astype(np.float32), src


def merge_neighbours(parts: Sequence[Neighbours], k: int, *, ntotal: int | None = None) -> Neighbours:
    """Exact merge of per-shard top-k lists of the same q queries into one top-k per query.

    ``parts``: one Neighbours per shard, each ``(q, k_s)`` best first (k_s may differ; -1
    padding allowed). Uses ``faiss.merge_knn_results(keep_max=True)``; then each merged id
    is mapped back to its row among the parts by id. Raises GalleryIndexError on a -1 left in
    the result.
    """
    if not parts:
        raise GalleryIndexError("merge_neighbours: expected results from at least one shard, got none")
    q = len(parts[0])
    if any(len(p) != q for p in parts):
        raise GalleryIndexError(f"merge_neighbours: expected {q} queries from every shard, got {[len(p) for p in parts]}")
    padded = [_pad(p, k) for p in parts]
    ids, sim, src = merge_scores(
        np.stack([p.gallery_id for p in padded]), np.stack([p.similarity for p in padded]), ntotal=ntotal
    )
    lat_all = np.concatenate([p.lat_deg for p in padded], axis=1)  # (q, s*k), as src counts
    lon_all = np.concatenate([p.lon_deg for p in padded], axis=1)
    desc_all = [[d for p in padded for d in p.description[r]] for r in range(q)]
    uri_all = [[u for p in padded for u in p.image_uri[r]] for r in range(q)]
    rows = np.arange(q)[:, None]
    return Neighbours(
        gallery_id=ids,
        similarity=sim,
        lat_deg=lat_all[rows, src],
        lon_deg=lon_all[rows, src],
        description=[[desc_all[r][j] for j in src[r]] for r in range(q)],
        image_uri=[[uri_all[r][j] for j in src[r]] for r in range(q)],
        index_version=parts[0].index_version,
    )


def _pad(p: Neighbours, k: int) -> Neighbours:
    """Cut or pad (with -1, -FLT_MAX) a per-shard result to exactly k columns."""
    if p.k >= k:
        if p.k == k:
            return p
        return Neighbours(
            p.gallery_id[:, :k], p.similarity[:, :k], p.lat_deg[:, :k], p.lon_deg[:, :k],
            [r[:k] for r in p.description], [r[:k] for r in p.image_uri], p.index_version,
        )
    q, extra = len(p), k - p.k
    low = np.finfo(np.float32).min
    return Neighbours(
        np.concatenate([p.gallery_id, np.full((q, extra), -1, np.int64)], axis=1),
        np.concatenate([p.similarity, np.full((q, extra), low, np.float32)], axis=1),
        np.concatenate([p.lat_deg, np.full((q, extra), np.nan)], axis=1),
        np.concatenate([p.lon_deg, np.full((q, extra), np.nan)], axis=1),
        [r + [""] * extra for r in p.description],
        [r + [""] * extra for r in p.image_uri],
        p.index_version,
    )


__all__ = ["Neighbours", "merge_neighbours", "merge_scores"]
