"""The index manifest: what an index is (version, type, shape, shards and their hashes), read and
written as ``manifest.json`` at the root of the index URI. Writing it is the commit of a build.

Driver or executor; storage through :mod:`georank.storage`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from georank import storage
from georank.config import IndexConfig, S3Config
from georank.errors import GalleryIndexError, StorageError
from georank.storage import join_uri

log = logging.getLogger(__name__)

FORMAT = "georank-index/1"
MANIFEST_NAME = "manifest.json"
METRIC = "inner_product"
SHARD_ASSIGNMENT = "splitmix64(gallery_id) mod n_shards"
INDEX_TYPES = ("flat", "ivfflat", "ivfpq", "ivfpq_refine")
IVF_TYPES = ("ivfflat", "ivfpq", "ivfpq_refine")  # trained on a sample; searched with index.nprobe


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


def read_manifest(uri: str, s3: S3Config) -> Manifest:
    """The manifest of the index at ``uri`` (folder or ``s3://`` prefix). Driver or executor."""
    where = join_uri(uri, MANIFEST_NAME)
    try:
        text = storage.read_text(where, s3)
    except StorageError as err:
        raise GalleryIndexError(f"no index manifest at {where}: expected a file written by the build_index job, got {err.reason}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GalleryIndexError(f"{join_uri(uri, MANIFEST_NAME)} is not valid JSON: {exc}") from None
    return Manifest.from_dict(d, source=join_uri(uri, MANIFEST_NAME))


def new_index_version() -> str:
    """A fresh, time-ordered version id, e.g. ``20261103T221501Z-3f9c2a1b``."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def check_writable(uri: str, s3: S3Config, mode: Literal["error", "overwrite"]) -> None:
    """Refuse (mode="error") when an index already exists at ``uri``."""
    if mode not in ("error", "overwrite"):
        raise GalleryIndexError(f"unknown mode {mode!r}; expected one of ['error', 'overwrite']")
    if mode == "error" and storage.exists(join_uri(uri, MANIFEST_NAME), s3):
        raise GalleryIndexError(
            f"an index already exists at {uri} (manifest.json); expected none with mode='error' "
            "(use mode='overwrite' to replace it: readers keep the old version until they reload)"
        )


def write_manifest(manifest: Manifest, uri: str, s3: S3Config) -> None:
    """Write ``manifest.json`` last: this is the commit of a build."""
    with tempfile.TemporaryDirectory(prefix="georank-manifest-") as tmp:
        p = Path(tmp) / MANIFEST_NAME
        p.write_text(manifest.to_json())
        storage.put_file(p, join_uri(uri, MANIFEST_NAME), s3)
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


__all__ = [
    "FORMAT",
    "INDEX_TYPES",
    "IVF_TYPES",
    "MANIFEST_NAME",
    "METRIC",
    "Manifest",
    "ShardEntry",
    "check_writable",
    "make_manifest",
    "new_index_version",
    "read_manifest",
    "write_manifest",
]
