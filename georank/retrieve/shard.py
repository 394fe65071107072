"""One index shard, loaded and validated against its manifest, and searched.

Loud failures (:class:`~georank.errors.GalleryIndexError`), never a silent neighbour: a shard file
whose sha256 is not the manifest's, a metadata file from another index version, a shard whose
``ntotal``, dim or metric disagrees with the manifest or whose metadata does not hold exactly its
ids, a query whose dim is not the index's. Shard files are fetched through
:func:`georank.storage.local_path` (the host's locked artifact cache). Driver or executor.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from georank import schema as S
from georank.config import S3Config
from georank.errors import GalleryIndexError, SetupError
from georank.index import IVF_TYPES, META_VERSION_KEY, Manifest
from georank.retrieve.merge import Neighbours
from georank.storage import join_uri, local_path, sha256_file

log = logging.getLogger(__name__)


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
        return rows_by_id(self.ids, ids, what=f"shard {self.shard} of index {self.manifest.index_version}", uri=self.uri)

    def search_scores(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """This shard's top-k ids ``(q, k) int64`` and inner products ``(q, k) float32`` for
        ``queries (q, dim) float32``, best first, padded with -1 / float32 min (as :meth:`search`),
        without the rows' metadata: what an exact merge needs (the sharded placement's search)."""
        queries = _check_queries(queries, self.manifest.dim)
        q, k_s = len(queries), min(k, self.ntotal)
        if q == 0 or k_s == 0:
            ids, sim = np.zeros((q, 0), np.int64), np.zeros((q, 0), np.float32)
        else:
            sim, ids = self.index.search(queries, k_s)  # (q, k_s) each
        extra = k - k_s
        return (
            np.concatenate([ids.astype(np.int64), np.full((q, extra), -1, np.int64)], axis=1),
            np.concatenate([sim.astype(np.float32), np.full((q, extra), np.finfo(np.float32).min, np.float32)], axis=1),
        )

    def search(self, queries: np.ndarray, k: int) -> Neighbours:
        """This shard's top-k for ``queries (q, dim) float32``, with each row's metadata; may hold
        -1 padding (with NaN coordinates and empty strings)."""
        ids, sim = self.search_scores(queries, k)
        rows = self.rows_of(ids)
        r = np.maximum(rows, 0)
        pad = rows < 0
        if not len(self.ids):  # an empty shard: every row is padding
            nan, empty = np.full(ids.shape, np.nan), np.full(ids.shape, "", dtype=object)
            return Neighbours(ids, sim, nan, nan.copy(), empty.tolist(), empty.tolist(), self.manifest.index_version)
        lat = np.where(pad, np.nan, self.lat_deg[r])
        lon = np.where(pad, np.nan, self.lon_deg[r])
        desc = np.where(pad, "", self.description[r]).tolist()
        uri = np.where(pad, "", self.image_uri[r]).tolist()
        return Neighbours(ids, sim, lat, lon, desc, uri, self.manifest.index_version)


def rows_by_id(sorted_ids: np.ndarray, ids: np.ndarray, *, what: str, uri: str) -> np.ndarray:
    """Row positions ``ids.shape`` of gallery ``ids`` among a shard's ``sorted_ids`` (its
    metadata's, sorted and unique), by binary search; -1 stays -1. An id the metadata does not
    hold is a GalleryIndexError naming ``what`` and the shard's ``uri``."""
    flat = ids.reshape(-1)
    n = len(sorted_ids)
    pos_c = np.minimum(np.searchsorted(sorted_ids, flat), max(n - 1, 0))
    valid = flat >= 0
    hit = valid & (n > 0)
    if n:
        hit &= sorted_ids[pos_c] == flat
    if (valid & ~hit).any():
        missing = flat[valid & ~hit][:3].tolist()
        raise GalleryIndexError(
            f"{what} returned ids its metadata does not hold, e.g. {missing}; expected every FAISS id in {uri}'s Parquet file"
        )
    return np.where(valid, pos_c, -1).reshape(ids.shape)


def _check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise GalleryIndexError(
            f"expected query embeddings (q, {dim}) to match the index, got shape {queries.shape}; "
            "was the index built with another embedder (embed.kind / embed.model_uri)?"
        )
    return queries


def open_meta(manifest: Manifest, shard: int, *, root_uri: str, s3: S3Config) -> pq.ParquetFile:
    """Shard ``shard``'s metadata Parquet file (SHARD_META), fetched through the host's artifact
    cache and checked against ``manifest`` (its index version and sha256). Driver or executor."""
    if not 0 <= shard < manifest.n_shards:
        raise GalleryIndexError(f"expected a shard number in [0, {manifest.n_shards}), got {shard}")
    entry, v = manifest.shards[shard], manifest.index_version
    meta_uri = join_uri(root_uri, entry.meta_file)
    try:
        meta_path = local_path(meta_uri, s3)
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
    if sha256_file(meta_path) != entry.meta_sha256:
        raise GalleryIndexError(
            f"shard {shard} metadata {meta_uri} does not match the manifest of index version {v} (sha256); "
            "the file is corrupt or from another index version"
        )
    return meta_file


def open_shard(
    manifest: Manifest, shard: int, *, root_uri: str, s3: S3Config, nprobe: int | None = None,
    k_factor: int | None = None, device: Literal["cpu", "cuda"] = "cpu",
) -> Shard:
    """Load and validate shard ``shard`` of ``manifest`` from ``root_uri``; set its search
    parameters (``nprobe`` for the IVF types, ``k_factor`` for ivfpq_refine) and, with
    ``device="cuda"``, move it to this process's GPU. Driver or executor."""
    import faiss

    if not 0 <= shard < manifest.n_shards:
        raise GalleryIndexError(f"expected a shard number in [0, {manifest.n_shards}), got {shard}")
    entry = manifest.shards[shard]
    v = manifest.index_version
    index_uri = join_uri(root_uri, entry.index_file)
    try:
        index_path = local_path(index_uri, s3)
    except Exception as exc:  # noqa: BLE001 - InputError or S3 failures: say which shard
        raise GalleryIndexError(f"shard {shard} of index {v} is missing: {exc}") from None
    meta_file = open_meta(manifest, shard, root_uri=root_uri, s3=s3)
    got = sha256_file(index_path)
    if got != entry.sha256:
        raise GalleryIndexError(
            f"shard {shard} file {index_uri} does not match the manifest of index version {v}: "
            f"expected sha256 {entry.sha256[:16]}..., got {got[:16]}...; the file is corrupt, truncated, "
            "or from another index version"
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


__all__ = ["Shard", "open_meta", "open_shard", "rows_by_id", "set_search_params", "to_gpu"]
