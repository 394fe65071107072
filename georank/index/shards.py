"""Index shards: which shard holds a gallery id, the FAISS index of one shard (factory string,
IVF training) and writing one shard's FAISS and Parquet files.

A gallery row goes to shard ``shard_of(gallery_id, n_shards)`` (splitmix64 of the id, modulo
the shard count): the same on the driver, in Spark and in tests, independent of row order.
Runs on the driver (IVF training, small builds) and on executors (:func:`write_shard`, one task
per shard); files are written through :mod:`georank.storage`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from georank import schema as S
from georank import storage
from georank.config import IndexConfig, S3Config
from georank.errors import GalleryIndexError
from georank.index.manifest import ShardEntry
from georank.storage import join_uri, sha256_file

log = logging.getLogger(__name__)

TRAIN_POINTS_PER_CENTROID = 64  # IVF-PQ training sample: this many vectors per coarse / PQ centroid
META_VERSION_KEY = b"georank.index_version"
META_SHARD_KEY = b"georank.shard"


def shard_of(gallery_id: np.ndarray, n_shards: int) -> np.ndarray:
    """The shard of each id, ``(n,) int32`` in ``[0, n_shards)``: splitmix64(id) mod n_shards."""
    z = np.asarray(gallery_id, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(n_shards)).astype(np.int32)


def train_size(cfg: IndexConfig, n: int) -> int:
    """How many gallery vectors train an IVF-PQ index (all of them when the gallery is small)."""
    return min(n, TRAIN_POINTS_PER_CENTROID * _min_train(cfg))


def _min_train(cfg: IndexConfig) -> int:
    """Fewest training vectors: one per IVF cell, and one per PQ centroid for the PQ types."""
    return cfg.nlist if cfg.type == "ivfflat" else max(cfg.nlist, 2**cfg.pq_bits)


def empty_index(dim: int, cfg: IndexConfig, train_vectors: np.ndarray | None = None) -> Any:
    """An empty, trained FAISS index for ``cfg.type`` with explicit ids (inner product).

    ``train_vectors (t, dim) float32`` is required for the IVF types (see :func:`train_size`).
    """
    import faiss

    if cfg.type == "flat":
        return faiss.index_factory(dim, factory_string(cfg), faiss.METRIC_INNER_PRODUCT)
    if cfg.type != "ivfflat" and dim % cfg.pq_m:
        raise GalleryIndexError(
            f"index.pq_m={cfg.pq_m} must divide the embedding dim {dim}; "
            f"valid values include {[m for m in (8, 16, 32, 48, 64, 96, 128, 192, 256) if dim % m == 0]}"
        )
    need = _min_train(cfg)
    got = 0 if train_vectors is None else len(train_vectors)
    if got < need:
        raise GalleryIndexError(
            f"index.type={cfg.type} needs at least {'index.nlist' if cfg.type == 'ivfflat' else 'max(index.nlist, 2**index.pq_bits)'} "
            f"= {need} training vectors, "
            f"got {got}; lower index.nlist / index.pq_bits, or use index.type=flat for a small gallery"
        )
    index = untrained_index(dim, cfg)
    index.train(np.ascontiguousarray(train_vectors, dtype=np.float32))
    return index


def untrained_index(dim: int, cfg: IndexConfig) -> Any:
    """The FAISS index of ``factory_string(cfg)`` (inner product), not trained yet.

    For the PQ types, polysemous training is off: ``index_factory`` turns it on for 8-bit PQ,
    and it only reorders the PQ centroids for Hamming-distance filtering (``polysemous_ht``),
    which no search here uses, at a cost that dwarfs the k-means itself (IVF64,PQ16x8 on
    5,000 x 64-d: 83 s with it, 3.3 s without, one thread)."""
    import faiss

    index = faiss.index_factory(dim, factory_string(cfg), faiss.METRIC_INNER_PRODUCT)
    if cfg.type in ("ivfpq", "ivfpq_refine"):
        ivfpq: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivfpq.do_polysemous_training = False
    return index


def factory_string(cfg: IndexConfig) -> str:
    """The FAISS ``index_factory`` description of one shard (metric: inner product)."""
    if cfg.type == "flat":
        return "IDMap,Flat"
    if cfg.type == "ivfflat":
        return f"IVF{cfg.nlist},Flat"  # exact inner products within the probed cells, ids in the lists
    ivfpq = f"IVF{cfg.nlist},PQ{cfg.pq_m}x{cfg.pq_bits}"
    # IndexRefineFlat keeps the vectors by position: the outer IDMap2 maps positions to gallery ids.
    return f"IDMap2,{ivfpq},RFlat" if cfg.type == "ivfpq_refine" else ivfpq


def serialize(index: Any) -> bytes:
    import faiss

    return bytes(faiss.serialize_index(index))


def _shard_name(shard: int, n_shards: int) -> str:
    return f"shard-{shard:05d}-of-{n_shards:05d}"


def embeddings_matrix(column: pa.ChunkedArray | pa.Array, dim: int | None = None) -> np.ndarray:
    """A ``list<float32>`` column as ``(n, dim) float32``; every row must have the same length."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if arr.null_count:
        raise GalleryIndexError(f"expected no null embeddings, got {arr.null_count} of {n}")
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    d = int(lengths[0]) if dim is None else dim
    if (lengths != d).any():
        bad = sorted(set(lengths.tolist()) - {d})
        raise GalleryIndexError(f"expected every embedding to have {d} values, got lengths {bad[:5]}")
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(flat.reshape(n, d))


def _checked_vectors(ids: np.ndarray, vectors: np.ndarray, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``ids (n,)`` int64 and ``vectors (n, d)`` float32, contiguous; unique ids, one vector per id."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise GalleryIndexError(f"{where}expected vectors (n, d) with n = {len(ids)} ids, got shape {vectors.shape}")
    if len(np.unique(ids)) != len(ids):
        raise GalleryIndexError(f"{where}expected unique gallery ids, got {len(ids) - len(np.unique(ids))} repeats")
    return ids, vectors


def write_shard(
    *,
    shard: int,
    n_shards: int,
    ids: np.ndarray,
    vectors: np.ndarray,
    meta: pa.Table,
    template: bytes,
    root_uri: str,
    index_version: str,
    s3: S3Config,
) -> ShardEntry:
    """Build shard ``shard`` from ``ids (n,) int64`` and ``vectors (n, d) float32`` starting from the
    serialized empty index ``template``, and write its FAISS and Parquet files under
    ``root_uri/index_version/``. ``meta`` holds the SHARD_META columns of the same rows (any order).
    Runs on an executor (one task per shard) or on the driver."""
    import faiss

    ids, vectors = _checked_vectors(ids, vectors, where=f"shard {shard}: ")
    wrong = ids[shard_of(ids, n_shards) != shard] if len(ids) else ids
    if len(wrong):
        raise GalleryIndexError(f"shard {shard}: got ids that belong to other shards, e.g. {wrong[:3].tolist()}")
    meta = meta.select(S.SHARD_META.names).cast(S.SHARD_META).sort_by("gallery_id")
    if not np.array_equal(meta.column("gallery_id").to_numpy(), np.sort(ids)):
        raise GalleryIndexError(f"shard {shard}: the metadata rows do not have the same ids as the vectors")
    index = faiss.deserialize_index(np.frombuffer(template, dtype=np.uint8))
    if vectors.shape[1] != index.d:
        raise GalleryIndexError(f"shard {shard}: expected vectors of dim {index.d}, got {vectors.shape[1]}")
    if len(ids):
        index.add_with_ids(vectors, ids)
    name = _shard_name(shard, n_shards)
    rel_index, rel_meta = f"{index_version}/{name}.faiss", f"{index_version}/{name}.parquet"
    with tempfile.TemporaryDirectory(prefix="georank-shard-") as tmp:
        index_path, meta_path = Path(tmp) / f"{name}.faiss", Path(tmp) / f"{name}.parquet"
        faiss.write_index(index, str(index_path))
        md = {META_VERSION_KEY: index_version.encode(), META_SHARD_KEY: str(shard).encode()}
        pq.write_table(meta.replace_schema_metadata(md), meta_path)
        entry = ShardEntry(
            shard=shard,
            index_file=rel_index,
            meta_file=rel_meta,
            ntotal=int(index.ntotal),
            sha256=sha256_file(index_path),
            meta_sha256=sha256_file(meta_path),
        )
        storage.put_file(index_path, join_uri(root_uri, rel_index), s3)
        storage.put_file(meta_path, join_uri(root_uri, rel_meta), s3)
    log.info("wrote shard %d/%d of index %s: %d vectors", shard, n_shards, index_version, entry.ntotal)
    return entry


__all__ = [
    "META_SHARD_KEY",
    "META_VERSION_KEY",
    "TRAIN_POINTS_PER_CENTROID",
    "embeddings_matrix",
    "empty_index",
    "factory_string",
    "serialize",
    "shard_of",
    "train_size",
    "untrained_index",
    "write_shard",
]
