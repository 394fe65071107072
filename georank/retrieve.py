"""Retrieve stage: top-k gallery neighbours of query embeddings over a sharded FAISS index.

Each shard is searched for its own top-k; the per-shard lists are merged per query
with ``faiss.merge_knn_results(..., keep_max=True)`` (inner product: larger is
better), which gives exactly the top-k of one index over the whole gallery. Every
FAISS id is mapped to its gallery row (lat, lon, description, image URI) by id,
through the shard's metadata, never by list position.

Loud failures (:class:`~georank.errors.GalleryIndexError`), never a silent neighbour:

- a shard file whose sha256 is not the manifest's (corrupt, truncated, or copied from
  another build), or a metadata file from another index version;
- a shard whose ``ntotal``, dim or metric disagrees with the manifest, or whose
  metadata does not hold exactly its ids;
- a query whose dim is not the index's;
- a ``-1`` id in a merged result (FAISS pads missing hits with -1: the gallery is
  smaller than k, or IVF probed too few cells).

A shard is loaded once per Python worker and kept while its manifest version is
current (:func:`get_shard`, :func:`get_index`; cached by URI + version). The Spark
placements live in :mod:`georank.spark.retrieve`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from georank import schema as S
from georank.config import GeorankConfig, S3Config
from georank.errors import GalleryIndexError, SetupError
from georank.index import (
    IVF_TYPES,
    META_VERSION_KEY,
    Manifest,
    join_uri,
    read_manifest,
    sha256_file,
)

log = logging.getLogger(__name__)


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


def merge_neighbours(parts: Sequence[Neighbours], k: int, *, ntotal: int | None = None) -> Neighbours:
    """Exact merge of per-shard top-k lists of the same q queries into one top-k per query.

    ``parts``: one Neighbours per shard, each ``(q, k_s)`` best first (k_s may differ; -1
    padding allowed). Uses ``faiss.merge_knn_results(keep_max=True)``; then each merged id
    is mapped back to its row among the parts by id. Raises GalleryIndexError on a -1 left in
    the result.
    """
    import faiss

    if not parts:
        raise GalleryIndexError("merge_neighbours: expected results from at least one shard, got none")
    q = len(parts[0])
    if any(len(p) != q for p in parts):
        raise GalleryIndexError(f"merge_neighbours: expected {q} queries from every shard, got {[len(p) for p in parts]}")
    padded = [_pad(p, k) for p in parts]
    d_all = np.stack([p.similarity for p in padded]).astype(np.float32)  # (s, q, k)
    i_all = np.stack([p.gallery_id for p in padded]).astype(np.int64)  # (s, q, k)
    sim, ids = faiss.merge_knn_results(d_all, i_all, keep_max=True)  # (q, k) each
    _check_no_padding(ids, k=k, ntotal=ntotal)
    # Which (shard, column) of the stacked lists holds each merged id, by id.
    flat_ids = np.concatenate([p.gallery_id for p in padded], axis=1)  # (q, s*k)
    lat_all = np.concatenate([p.lat_deg for p in padded], axis=1)
    lon_all = np.concatenate([p.lon_deg for p in padded], axis=1)
    desc_all = [[d for p in padded for d in p.description[r]] for r in range(q)]
    uri_all = [[u for p in padded for u in p.image_uri[r]] for r in range(q)]
    src = np.empty((q, k), dtype=np.int64)
    for r in range(q):
        order = np.argsort(flat_ids[r], kind="stable")
        pos = np.searchsorted(flat_ids[r][order], ids[r])
        pos = np.minimum(pos, len(order) - 1)
        found = order[pos]
        if not np.array_equal(flat_ids[r][found], ids[r]):
            raise GalleryIndexError(f"merge_neighbours: merged id not found among the shard results of query {r}")
        src[r] = found
    rows = np.arange(q)[:, None]
    return Neighbours(
        gallery_id=ids,
        similarity=sim.astype(np.float32),
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


class Shard:
    """One loaded, validated shard: its FAISS index and its rows sorted by gallery id."""

    def __init__(self, *, manifest: Manifest, shard: int, index: Any, meta: pa.Table, uri: str) -> None:
        self.manifest = manifest
        self.shard = shard
        self.index = index
        self.uri = uri
        self.ids = meta.column("gallery_id").to_numpy()  # (n,) int64, sorted
        self.lat_deg = meta.column("lat_deg").to_numpy(zero_copy_only=False).astype(np.float64)
        self.lon_deg = meta.column("lon_deg").to_numpy(zero_copy_only=False).astype(np.float64)
        self.description = np.array([d or "" for d in meta.column("description").to_pylist()], dtype=object)
        self.image_uri = np.array([u or "" for u in meta.column("image_uri").to_pylist()], dtype=object)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of gallery ids in this shard's metadata, by id; -1 stays -1.
        An id the metadata does not hold is a GalleryIndexError."""
        flat = ids.reshape(-1)
        pos = np.searchsorted(self.ids, flat)
        pos_c = np.minimum(pos, max(len(self.ids) - 1, 0))
        valid = flat >= 0
        hit = valid & (len(self.ids) > 0)
        if len(self.ids):
            hit &= self.ids[pos_c] == flat
        if (valid & ~hit).any():
            missing = flat[valid & ~hit][:3].tolist()
            raise GalleryIndexError(
                f"shard {self.shard} of index {self.manifest.index_version} returned ids its metadata does not hold, "
                f"e.g. {missing}; expected every FAISS id in {self.uri}'s Parquet file"
            )
        return np.where(valid, pos_c, -1).reshape(ids.shape)

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        """This shard's top-k for ``queries (q, dim) float32``; may hold -1 padding."""
        queries = _check_queries(queries, self.manifest.dim)
        k_s = min(k, self.ntotal)
        if len(queries) == 0 or k_s == 0:
            q = len(queries)
            return _pad(Neighbours(np.zeros((q, 0), np.int64), np.zeros((q, 0), np.float32), np.zeros((q, 0)),
                                   np.zeros((q, 0)), [[] for _ in range(q)], [[] for _ in range(q)],
                                   self.manifest.index_version), k)
        sim, ids = self.index.search(queries, k_s)  # (q, k_s) each
        rows = self.rows_of(ids)
        r = np.maximum(rows, 0)
        pad = rows < 0
        lat = np.where(pad, np.nan, self.lat_deg[r])
        lon = np.where(pad, np.nan, self.lon_deg[r])
        desc = np.where(pad, "", self.description[r]).tolist()
        uri = np.where(pad, "", self.image_uri[r]).tolist()
        return _pad(Neighbours(ids.astype(np.int64), sim.astype(np.float32), lat, lon, desc, uri,
                               self.manifest.index_version), k)


def _check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise GalleryIndexError(
            f"expected query embeddings (q, {dim}) to match the index, got shape {queries.shape}; "
            "was the index built with another embedder (embed.kind / embed.model_uri)?"
        )
    return queries


def open_shard(
    manifest: Manifest, shard: int, *, root_uri: str, s3: S3Config, nprobe: int | None = None,
    k_factor: int | None = None, device: Literal["cpu", "cuda"] = "cpu",
) -> Shard:
    """Load and validate shard ``shard`` of ``manifest`` from ``root_uri``; set its search
    parameters (``nprobe`` for the IVF types, ``k_factor`` for ivfpq_refine) and, with
    ``device="cuda"``, move it to this process's GPU. Driver or executor."""
    import faiss

    from georank.artifacts import local_path

    if not 0 <= shard < manifest.n_shards:
        raise GalleryIndexError(f"expected a shard number in [0, {manifest.n_shards}), got {shard}")
    entry = manifest.shards[shard]
    v = manifest.index_version
    index_uri, meta_uri = join_uri(root_uri, entry.index_file), join_uri(root_uri, entry.meta_file)
    try:
        index_path, meta_path = local_path(index_uri, s3), local_path(meta_uri, s3)
    except Exception as exc:  # noqa: BLE001 - InputError or S3 failures: say which shard
        raise GalleryIndexError(f"shard {shard} of index {v} is missing: {exc}") from None

    try:
        meta_file = pq.ParquetFile(meta_path)
        meta_version = (meta_file.schema_arrow.metadata or {}).get(META_VERSION_KEY, b"").decode()
    except Exception as exc:  # noqa: BLE001
        raise GalleryIndexError(f"shard {shard} metadata {meta_uri} is corrupt: not a readable Parquet file ({exc})") from None
    if meta_version != v:
        raise GalleryIndexError(
            f"shard {shard} metadata {meta_uri} belongs to index version {meta_version or '(none)'}, "
            f"but the manifest is version {v}; expected the files of one build (rebuild, or restore the shard)"
        )
    got = sha256_file(index_path)
    if got != entry.sha256:
        raise GalleryIndexError(
            f"shard {shard} file {index_uri} does not match the manifest of index version {v}: "
            f"expected sha256 {entry.sha256[:16]}..., got {got[:16]}...; the file is corrupt, truncated, "
            "or from another index version"
        )
    if sha256_file(meta_path) != entry.meta_sha256:
        raise GalleryIndexError(
            f"shard {shard} metadata {meta_uri} does not match the manifest of index version {v} (sha256); "
            "the file is corrupt or from another index version"
        )
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise GalleryIndexError(f"shard {shard} file {index_uri} is corrupt: FAISS cannot read it ({exc})") from None
    problems = []
    if index.ntotal != entry.ntotal:
        problems.append(f"ntotal: manifest {entry.ntotal}, shard {index.ntotal}")
    if index.d != manifest.dim:
        problems.append(f"dim: manifest {manifest.dim}, shard {index.d}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        problems.append(f"metric: manifest inner_product, shard metric_type {index.metric_type}")
    meta = meta_file.read().select(S.SHARD_META.names)
    ids = meta.column("gallery_id").to_numpy()
    if len(ids) != index.ntotal:
        problems.append(f"metadata rows {len(ids)} vs ntotal {index.ntotal}")
    elif len(ids) > 1 and not (np.diff(ids) > 0).all():
        problems.append("metadata ids are not sorted and unique")
    if problems:
        raise GalleryIndexError(f"shard {shard} of index {v} ({index_uri}) disagrees with its manifest: " + "; ".join(problems))
    set_search_params(index, manifest.index_type, nprobe=nprobe, k_factor=k_factor)
    if device == "cuda":
        index = to_gpu(index, what=f"shard {shard} of index {v}")
    log.info("opened shard %d/%d of index %s: %d vectors", shard, manifest.n_shards, v, index.ntotal)
    return Shard(manifest=manifest, shard=shard, index=index, meta=meta, uri=index_uri)


def set_search_params(index: Any, index_type: str, *, nprobe: int | None, k_factor: int | None) -> None:
    """``nprobe`` on the IVF level of an IVF index; ``k_factor`` on the refine level of ivfpq_refine."""
    import faiss

    if index_type in IVF_TYPES and nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    if index_type == "ivfpq_refine" and k_factor is not None:
        refine = faiss.downcast_index(index.index if hasattr(index, "id_map") else index)
        if not hasattr(refine, "k_factor"):
            raise GalleryIndexError(f"index_type ivfpq_refine: expected an IndexRefineFlat inside, got {type(refine).__name__}")
        refine.k_factor = float(k_factor)


_gpu_resources: Any = None  # per process: one StandardGpuResources (scratch memory, streams) for every shard


def to_gpu(index: Any, *, what: str) -> Any:
    """``index`` copied to the GPU this process uses (torch's current device, as bound by
    :func:`georank.spark.executors.bind_gpu`, else 0): ``faiss.index_cpu_to_gpu``. A faiss
    without GPU support or a host without a GPU is a :class:`SetupError`."""
    global _gpu_resources
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        raise SetupError(
            f"index.device=cuda: expected a faiss built with GPU support (faiss-gpu, the [gpu] extra), "
            f"got faiss {faiss.__version__} without it; set index.device=cpu or install faiss-gpu"
        )
    n_gpus = faiss.get_num_gpus()
    if n_gpus < 1:
        raise SetupError(f"index.device=cuda: expected a visible GPU, faiss sees {n_gpus}; set index.device=cpu")
    gpu = 0
    try:
        import torch

        if torch.cuda.is_available():
            gpu = int(torch.cuda.current_device())
    except ImportError:
        pass
    if _gpu_resources is None:
        _gpu_resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_gpu_resources, gpu, index)
    except RuntimeError as exc:
        raise GalleryIndexError(f"{what}: faiss cannot move this index to GPU {gpu} ({exc}); set index.device=cpu") from None


class GalleryIndex:
    """Shards of one manifest held by this process; :meth:`search` merges them exactly."""

    def __init__(self, manifest: Manifest, shards: Sequence[Shard]) -> None:
        self.manifest = manifest
        self.shards = list(shards)

    @property
    def version(self) -> str:
        return self.manifest.index_version

    def search_parts(self, queries: np.ndarray, k: int) -> list[Neighbours]:
        """Each held shard's own top-k (with -1 padding), in shard order."""
        queries = _check_queries(queries, self.manifest.dim)
        return [s.search(queries, k) for s in self.shards]

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        """Top-k over the held shards for ``queries (q, dim) float32``, merged exactly."""
        if k < 1:
            raise GalleryIndexError(f"expected k >= 1, got {k}")
        total = sum(s.ntotal for s in self.shards)
        return merge_neighbours(self.search_parts(queries, k), k, ntotal=total)


def open_index(uri: str, s3: S3Config, *, nprobe: int | None = None, shards: Sequence[int] | None = None,
               manifest: Manifest | None = None, k_factor: int | None = None,
               device: Literal["cpu", "cuda"] = "cpu") -> GalleryIndex:
    """Open (all or some) shards of the index at ``uri``, validated against its manifest."""
    m = manifest if manifest is not None else read_manifest(uri, s3)
    which = range(m.n_shards) if shards is None else shards
    return GalleryIndex(
        m, [open_shard(m, i, root_uri=uri, s3=s3, nprobe=nprobe, k_factor=k_factor, device=device) for i in which]
    )


def get_shard(cfg: GeorankConfig, manifest: Manifest, shard: int) -> Shard:
    """The worker's copy of one shard, loaded once per Python worker per index version.
    Runs on executors (sharded placement)."""
    from georank.resources import cached

    root = cfg.resolve(cfg.index.uri)
    ix = cfg.index
    key = (root, manifest.index_version, shard, ix.nprobe, ix.k_factor, ix.device)
    return cached(
        "index_shard", key,
        lambda: open_shard(manifest, shard, root_uri=root, s3=cfg.s3, nprobe=ix.nprobe, k_factor=ix.k_factor, device=ix.device),
    )


def get_index(cfg: GeorankConfig, manifest: Manifest) -> GalleryIndex:
    """The worker's copy of every shard, loaded once per Python worker per index version.
    Runs on executors (replicated placement) or the driver."""
    from georank.resources import cached

    root = cfg.resolve(cfg.index.uri)
    ix = cfg.index
    key = (root, manifest.index_version, ix.nprobe, ix.k_factor, ix.device)
    return cached(
        "gallery_index", key,
        lambda: open_index(root, cfg.s3, nprobe=ix.nprobe, k_factor=ix.k_factor, device=ix.device, manifest=manifest),
    )


def search(cfg: GeorankConfig, queries: np.ndarray, *, k: int | None = None, manifest: Manifest | None = None) -> Neighbours:
    """Top-``retrieve.k`` neighbours of ``queries (q, dim)`` over the configured index (all shards)."""
    m = manifest if manifest is not None else read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    return get_index(cfg, m).search(queries, k or cfg.retrieve.k)


__all__ = [
    "GalleryIndex",
    "Neighbours",
    "Shard",
    "get_index",
    "get_shard",
    "merge_neighbours",
    "open_index",
    "open_shard",
    "search",
]
