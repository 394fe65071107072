"""Gallery index: prepare gallery rows, build FAISS shards, write them with a manifest.

Layout under the index URI (a local folder or an ``s3://`` prefix)::

    manifest.json                                   the current index (written last)
    <index_version>/shard-00000-of-00003.faiss      FAISS index with explicit 64-bit ids
    <index_version>/shard-00000-of-00003.parquet    schema.SHARD_META: the shard's rows, by id

Every build writes a fresh ``<index_version>/`` folder and then replaces
``manifest.json`` in one step, so a reader holding the old manifest keeps finding
its shards, and a crashed build leaves the previous index in place. (Old version
folders are not deleted: remove them when no reader needs them.)

A gallery row goes to shard ``shard_of(gallery_id, n_shards)`` (splitmix64 of the
id, modulo the shard count): the same on the driver, in Spark and in tests,
independent of row order. Each shard is ``IDMap,Flat`` (exact inner product),
``IVF{nlist},Flat`` (ivfflat: exact inner products over the ``index.nprobe`` probed
cells), ``IVF{nlist},PQ{m}x{bits}`` (inner product, ids stored in the inverted lists) or
``IDMap2,IVF{nlist},PQ{m}x{bits},RFlat`` (ivfpq_refine: the IVF-PQ shortlist of
``k * index.k_factor`` is re-ranked with exact inner products, so the scores are
exact and comparable across shards, and the result is the exact top-k whenever the
shortlist holds it). IVF-PQ is trained ONCE on a sample of the whole gallery and
every shard starts from a copy of that trained, empty index.

The manifest records, per shard, its ``ntotal`` and the sha256 of both files; the
Parquet file also carries the index version in its schema metadata. A reader
(:mod:`georank.retrieve`) checks all of it and maps FAISS ids to rows by id.

Runs on the driver (manifest, IVF training, small builds) and on executors
(:func:`prepare_gallery_batch`, :func:`write_shard`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from georank import schema as S
from georank.config import IndexConfig, S3Config
from georank.errors import GalleryIndexError

log = logging.getLogger(__name__)

FORMAT = "georank-index/1"
MANIFEST_NAME = "manifest.json"
METRIC = "inner_product"
SHARD_ASSIGNMENT = "splitmix64(gallery_id) mod n_shards"
INDEX_TYPES = ("flat", "ivfflat", "ivfpq", "ivfpq_refine")
IVF_TYPES = ("ivfflat", "ivfpq", "ivfpq_refine")  # trained on a sample; searched with index.nprobe
TRAIN_POINTS_PER_CENTROID = 64  # IVF-PQ training sample: this many vectors per coarse / PQ centroid
META_VERSION_KEY = b"georank.index_version"
META_SHARD_KEY = b"georank.shard"


# ----------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it. File names are relative to the index URI."""

    shard: int
    index_file: str
    meta_file: str
    ntotal: int
    sha256: str  # of the FAISS file
    meta_sha256: str  # of the Parquet file


@dataclass(frozen=True)
class Manifest:
    """What an index is: its version, shape and shards. ``manifest.json`` on disk."""

    index_version: str
    index_type: Literal["flat", "ivfflat", "ivfpq", "ivfpq_refine"]
    dim: int
    ntotal: int
    shards: tuple[ShardEntry, ...]
    embed_version: str
    gallery_table: str | None = None
    gallery_table_version: str | None = None
    params: dict[str, int] = field(default_factory=dict)  # nlist, pq_m, pq_bits (ivf types)
    metric: str = METRIC
    shard_assignment: str = SHARD_ASSIGNMENT
    created_utc: str = ""
    format: str = FORMAT

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def gallery_version(self) -> str | None:
        """Alias of :attr:`gallery_table_version` (the demo compares it with its world id)."""
        return self.gallery_table_version

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shards"] = [dataclasses.asdict(s) for s in self.shards]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "manifest") -> Manifest:
        """Parse and check a manifest; :class:`GalleryIndexError` says what is wrong."""
        if d.get("format") != FORMAT:
            raise GalleryIndexError(f"{source}: expected format {FORMAT!r}, got {d.get('format')!r}")
        try:
            shards = tuple(ShardEntry(**s) for s in d["shards"])
            m = cls(**{**d, "shards": shards})
        except (KeyError, TypeError) as exc:
            raise GalleryIndexError(f"{source}: not a georank index manifest ({exc})") from None
        if m.metric != METRIC:
            raise GalleryIndexError(f"{source}: expected metric {METRIC!r}, got {m.metric!r}")
        if m.index_type not in INDEX_TYPES:
            raise GalleryIndexError(f"{source}: expected index_type one of {list(INDEX_TYPES)}, got {m.index_type!r}")
        if [s.shard for s in shards] != list(range(len(shards))) or not shards:
            raise GalleryIndexError(
                f"{source}: expected shards numbered 0..n-1 in order, got {[s.shard for s in shards]}"
            )
        total = sum(s.ntotal for s in shards)
        if total != m.ntotal:
            raise GalleryIndexError(f"{source}: ntotal is {m.ntotal} but the shards hold {total} vectors")
        if m.dim < 1:
            raise GalleryIndexError(f"{source}: expected dim >= 1, got {m.dim}")
        return m


def join_uri(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


def read_manifest(uri: str, s3: S3Config) -> Manifest:
    """The manifest of the index at ``uri`` (folder or ``s3://`` prefix). Driver or executor."""
    text = _read_text(join_uri(uri, MANIFEST_NAME), s3)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GalleryIndexError(f"{join_uri(uri, MANIFEST_NAME)} is not valid JSON: {exc}") from None
    return Manifest.from_dict(d, source=join_uri(uri, MANIFEST_NAME))


def new_index_version() -> str:
    """A fresh, time-ordered version id, e.g. ``20261103T221501Z-3f9c2a1b``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- storage


def _is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _read_text(uri: str, s3: S3Config) -> str:
    if _is_s3(uri):
        from botocore.exceptions import ClientError

        from georank.artifacts import s3_client, split_s3

        bucket, key = split_s3(uri)
        try:
            return s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except ClientError as exc:
            raise GalleryIndexError(f"no index manifest at {uri}: {exc.response.get('Error', {}).get('Code')}") from None
    p = _local(uri)
    if not p.is_file():
        raise GalleryIndexError(f"no index manifest at {uri}: expected a file written by the build_index job")
    return p.read_text()


def _exists(uri: str, s3: S3Config) -> bool:
    if _is_s3(uri):
        from botocore.exceptions import ClientError

        from georank.artifacts import s3_client, split_s3

        bucket, key = split_s3(uri)
        try:
            s3_client(s3).head_object(Bucket=bucket, Key=key)
            return True
        except ClientError:
            return False
    return _local(uri).exists()


def _put_file(local: Path, uri: str, s3: S3Config) -> None:
    """Move/upload a finished local file to ``uri`` (atomic rename locally)."""
    if _is_s3(uri):
        from georank.artifacts import s3_client, split_s3

        bucket, key = split_s3(uri)
        s3_client(s3).upload_file(str(local), bucket, key)
        return
    dest = _local(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.copyfile(local, tmp)
    os.replace(tmp, dest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- shards


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
    index = faiss.index_factory(dim, factory_string(cfg), faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(train_vectors, dtype=np.float32))
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
        _put_file(index_path, join_uri(root_uri, rel_index), s3)
        _put_file(meta_path, join_uri(root_uri, rel_meta), s3)
    log.info("wrote shard %d/%d of index %s: %d vectors", shard, n_shards, index_version, entry.ntotal)
    return entry


def check_writable(uri: str, s3: S3Config, mode: Literal["error", "overwrite"]) -> None:
    """Refuse (mode="error") when an index already exists at ``uri``."""
    if mode not in ("error", "overwrite"):
        raise GalleryIndexError(f"unknown mode {mode!r}; expected one of ['error', 'overwrite']")
    if mode == "error" and _exists(join_uri(uri, MANIFEST_NAME), s3):
        raise GalleryIndexError(
            f"an index already exists at {uri} (manifest.json); expected none with mode='error' "
            "(use mode='overwrite' to replace it: readers keep the old version until they reload)"
        )


def write_manifest(manifest: Manifest, uri: str, s3: S3Config) -> None:
    """Write ``manifest.json`` last: this is the commit of a build."""
    with tempfile.TemporaryDirectory(prefix="georank-manifest-") as tmp:
        p = Path(tmp) / MANIFEST_NAME
        p.write_text(manifest.to_json())
        _put_file(p, join_uri(uri, MANIFEST_NAME), s3)
    log.info("index %s committed at %s: %d vectors in %d shards", manifest.index_version, uri, manifest.ntotal, manifest.n_shards)


def make_manifest(
    *,
    index_version: str,
    cfg: IndexConfig,
    dim: int,
    entries: Iterable[ShardEntry],
    embed_version: str,
    gallery_table: str | None,
    gallery_table_version: str | None,
) -> Manifest:
    shards = tuple(sorted(entries, key=lambda e: e.shard))
    params = {"nlist": cfg.nlist, "pq_m": cfg.pq_m, "pq_bits": cfg.pq_bits} if cfg.type in IVF_TYPES else {}
    return Manifest(
        index_version=index_version,
        index_type=cfg.type,
        dim=dim,
        ntotal=sum(e.ntotal for e in shards),
        shards=shards,
        embed_version=embed_version,
        gallery_table=gallery_table,
        gallery_table_version=gallery_table_version,
        params=params,
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


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


__all__ = [
    "Manifest",
    "ShardEntry",
    "build_index",
    "check_writable",
    "embeddings_matrix",
    "empty_index",
    "factory_string",
    "join_uri",
    "make_manifest",
    "new_index_version",
    "read_manifest",
    "serialize",
    "sha256_file",
    "shard_of",
    "train_size",
    "write_manifest",
    "write_shard",
]
