"""Gallery images inside one large tar (MP16-Pro ships ``mp-16-images.tar``, 4.1M members), read
by offset: no unpacking, no pickled member index.

- :func:`build_tar_index` scans the archive ONCE (a local file, or an ``s3://`` object streamed)
  into a Parquet table (schema ``TAR_INDEX``: member, offset_data, size), by default beside the
  archive as ``<archive>.index.parquet``, and records what it was built from next to it
  (``<index>.source.json``: the archive's size and version tag from :func:`georank.storage.stat_file`,
  the S3 ETag or the local mtime_ns). :func:`ensure_tar_index` reuses an index whose record still
  matches the archive and scans again (saying why in the log) when it does not or when forced.
- :func:`read_tar_member` reads ``tar://<archive uri>#<member>`` (``tar:///data/mp-16-images.tar#a/b.jpg``,
  ``tar://s3://bucket/mp-16-images.tar#a/b.jpg``): the member's bytes, read with one seek (local)
  or one ranged GET (S3). The member's own 512-byte header (just before its data) is read too and
  checked (checksum, size, and the name when it fits the header), so an index that no longer
  matches its archive fails loudly instead of returning another photo's bytes.
  :func:`georank.io.read_bytes` dispatches ``tar://`` URIs here, so they work wherever a gallery
  image is read.

The index is loaded once per Python worker (:func:`georank.resources.cached`, keyed by the index
URI) and held as sorted 64-bit name hashes with their offsets and sizes (~24 bytes per member;
collisions are refused when the index is loaded). Archive URIs must not contain ``#``. Runs on
executors (reading) and on the driver (building).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from georank import schema as S
from georank import storage
from georank.config import S3Config
from georank.errors import InputError, PhotoError, StorageError

log = logging.getLogger(__name__)

SCHEME = "tar://"
INDEX_SUFFIX = ".index.parquet"
SOURCE_SUFFIX = ".source.json"  # beside the index: what it was built from
_BLOCK = 512


def split_tar_uri(uri: str) -> tuple[str, str]:
    """``tar://<archive uri>#<member>`` -> ``(archive uri, member)``."""
    if not uri.startswith(SCHEME):
        raise PhotoError("read", f"expected a tar://<archive>#<member> URI, got {uri!r}")
    archive, sep, member = uri[len(SCHEME) :].partition("#")
    if not sep or not archive or not member:
        raise PhotoError("read", f"expected a tar://<archive>#<member> URI with both parts, got {uri!r}")
    return archive, member


def index_uri_of(archive_uri: str) -> str:
    """Where the member index of an archive lives: ``<archive uri>.index.parquet``."""
    return archive_uri + INDEX_SUFFIX


# ----------------------------------------------------------------------------- build


def scan_tar(fileobj: Any, *, stream: bool) -> pa.Table:
    """TAR_INDEX rows of the regular-file members of a tar read from ``fileobj`` (one pass)."""
    names: list[str] = []
    offsets: list[int] = []
    sizes: list[int] = []
    with tarfile.open(fileobj=fileobj, mode="r|" if stream else "r:") as tar:
        for info in tar:
            if info.isfile():
                names.append(info.name)
                offsets.append(info.offset_data)
                sizes.append(info.size)
    return pa.table({"member": names, "offset_data": offsets, "size": sizes}, schema=S.TAR_INDEX)


def build_tar_index(archive_uri: str, s3: S3Config, *, index_uri: str | None = None) -> tuple[str, int]:
    """Scan ``archive_uri`` (local or ``s3://``) once and write its member index (Parquet) to
    ``index_uri`` (default: beside the archive), then the record of the archive it was built from.
    Returns ``(index uri, members)``. Runs on the driver."""
    out = index_uri or index_uri_of(archive_uri)
    source = _source_record(archive_uri, s3)  # taken before the scan: a change during it rebuilds next time
    with storage.open_input(archive_uri, s3) as f:  # an S3 object is streamed, never downloaded whole
        table = scan_tar(f, stream=storage.is_s3(archive_uri))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.put_bytes(buf.getvalue(), out, s3)
    # written after the index: a run that dies in between leaves no record of the new index (or the
    # old archive's record), so the next run scans again rather than trusting it
    record = {**source, "members": table.num_rows}
    storage.put_bytes(json.dumps(record, sort_keys=True).encode(), out + SOURCE_SUFFIX, s3)
    log.info("indexed %d members of %s into %s", table.num_rows, archive_uri, out)
    return out, table.num_rows


@dataclass(frozen=True)
class IndexedTar:
    """The outcome of :func:`ensure_tar_index`: where the index is, how many members it holds, and
    whether this call scanned the archive (``reason``: why it did, or why it did not)."""

    index_uri: str
    members: int
    scanned: bool
    reason: str


def ensure_tar_index(archive_uri: str, s3: S3Config, *, force: bool = False, index_uri: str | None = None) -> IndexedTar:
    """The member index of ``archive_uri``, scanned only when needed: reused when the record beside
    it names the archive's current size and version tag (S3 ETag, local mtime_ns), rebuilt when the
    index or its record is missing, the archive changed, or ``force``. Runs on the driver."""
    out = index_uri or index_uri_of(archive_uri)
    why = "forced (--reindex)" if force else _stale_reason(archive_uri, out, s3)
    if why is None:
        record = json.loads(storage.read_bytes(out + SOURCE_SUFFIX, s3))
        log.info("reusing the member index %s: built from %s as it is now (%d bytes, version %s)",
                 out, archive_uri, record["size_bytes"], record["version"])
        return IndexedTar(out, int(record["members"]), False, "the archive is unchanged since the index was built")
    log.info("building the member index of %s: %s", archive_uri, why)
    _, members = build_tar_index(archive_uri, s3, index_uri=out)
    return IndexedTar(out, members, True, why)


def _source_record(archive_uri: str, s3: S3Config) -> dict[str, Any]:
    found = storage.stat_file(archive_uri, s3)
    return {"archive": archive_uri, "size_bytes": found.size, "version": found.etag}


def _stale_reason(archive_uri: str, index_uri: str, s3: S3Config) -> str | None:
    """Why the index at ``index_uri`` cannot be trusted for ``archive_uri`` as it is now (None: it can)."""
    if not storage.exists(index_uri, s3):
        return f"no index at {index_uri}"
    try:
        record = json.loads(storage.read_bytes(index_uri + SOURCE_SUFFIX, s3))
    except StorageError as err:
        return f"no record of what {index_uri} was built from ({err.reason})"
    except ValueError:
        return f"the record {index_uri + SOURCE_SUFFIX} is not JSON"
    now = _source_record(archive_uri, s3)
    was = {k: record.get(k) for k in now}
    if was != now or not isinstance(record.get("members"), int):
        return f"the archive is not the one the index was built from (expected {was}, got {now})"
    return None


# ----------------------------------------------------------------------------- read


def _hash64(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class TarIndex:
    """Members of one archive as sorted name hashes ``(n,)`` uint64 with offsets and sizes ``(n,)``."""

    hashes: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table, *, where: str) -> "TarIndex":
        names = table.column("member").to_pylist()
        h = np.fromiter((_hash64(n) for n in names), dtype=np.uint64, count=len(names))
        order = np.argsort(h, kind="stable")
        hs = h[order]
        if len(hs) > 1 and (hs[1:] == hs[:-1]).any():
            i = int(np.flatnonzero(hs[1:] == hs[:-1])[0])
            a, b = names[int(order[i])], names[int(order[i + 1])]
            raise InputError(f"tar index {where}: members {a!r} and {b!r} repeat or share a 64-bit hash; expected unique names")
        offsets = table.column("offset_data").to_numpy()[order]
        sizes = table.column("size").to_numpy()[order]
        return cls(hs, offsets.astype(np.int64), sizes.astype(np.int64))

    def find(self, member: str) -> tuple[int, int] | None:
        """``(offset_data, size)`` of ``member``, or None."""
        h = np.uint64(_hash64(member))
        i = int(np.searchsorted(self.hashes, h))
        if i < len(self.hashes) and self.hashes[i] == h:
            return int(self.offsets[i]), int(self.sizes[i])
        return None


def _load_index(index_uri: str, s3: S3Config) -> TarIndex:
    try:
        data = storage.read_bytes(index_uri, s3)
    except StorageError as err:
        raise PhotoError("read", f"tar member index {index_uri} unreadable ({err.reason}); build it with "
                                 "georank.storage.tar.build_tar_index", kind=err.kind) from None
    return TarIndex.from_table(pq.read_table(pa.BufferReader(data)), where=index_uri)


def get_index(archive_uri: str, s3: S3Config) -> TarIndex:
    """The archive's member index, loaded once per Python worker."""
    from georank.resources import cached

    index_uri = index_uri_of(archive_uri)
    return cached("tar_index", index_uri, lambda: _load_index(index_uri, s3))


def _header_ok(header: bytes, member: str, size: int) -> str | None:
    """Why the 512-byte tar header does not describe ``member`` of ``size`` bytes (None when it does)."""
    if len(header) != _BLOCK:
        return "the archive is shorter than the index says"
    stored = header[148:156].split(b"\0", 1)[0].strip()
    try:
        want = int(stored or b"-1", 8)
    except ValueError:
        return "no tar header where the index says the member starts"
    if sum(header[:148]) + 8 * 32 + sum(header[156:]) != want:
        return "no tar header where the index says the member starts (checksum mismatch)"
    try:
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return "unreadable tar header"
    if info.size != size:
        return f"the header says {info.size} bytes, the index {size}"
    # a long or non-ASCII name lives in a PAX/GNU header before this one; only a plain short name is here in full
    plain = member.isascii() and len(member) < 100 and not header[345:500].strip(b"\0")
    if plain and info.name != member:
        return f"the header names {info.name!r}"
    return None


def read_tar_member(uri: str, s3cfg: S3Config, *, max_bytes: int | None = None, client: Any | None = None) -> bytes:
    """The bytes of ``tar://<archive uri>#<member>`` by offset (local seek or S3 ranged GET).
    Raises PhotoError("read", ...) for a missing member, archive or index, or a stale index."""
    archive, member = split_tar_uri(uri)
    found = get_index(archive, s3cfg).find(member)
    if found is None:
        raise PhotoError("read", f"member {member!r} not in the index of {archive}", kind="not_found")
    offset, size = found
    if max_bytes is not None and size > max_bytes:
        raise PhotoError("read", f"member is {size} bytes, over the limit of {max_bytes} (decode.max_bytes)", kind="too_large")
    start = offset - _BLOCK  # the member's own header, checked before its bytes are trusted
    try:
        blob = storage.read_range(archive, s3cfg, start=start, length=size + _BLOCK, client=client)
    except StorageError as err:
        raise PhotoError("read", f"tar archive unreadable ({err.reason})", kind=err.kind) from None
    why = _header_ok(blob[:_BLOCK], member, size)
    if why is None and len(blob) != size + _BLOCK:
        why = "the archive is shorter than the index says"
    if why is not None:
        raise PhotoError("read", f"member {member!r} of {archive}: {why}; the index does not match the archive (rebuild it)")
    return blob[_BLOCK:]


__all__ = [
    "IndexedTar", "TarIndex", "build_tar_index", "ensure_tar_index", "get_index", "index_uri_of", "read_tar_member",
    "scan_tar", "split_tar_uri",
]
