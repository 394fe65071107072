"""Storage, part two: reading, ranged reads, listing and writing files of a local folder or an
``s3://`` prefix. Failures are :class:`~georank.errors.StorageError`. Driver or executor.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from georank.config import S3Config
from georank.errors import StorageError
from georank.storage.s3 import _list_s3, _local_error, _s3_errors, is_s3, s3_client, split_s3, worker_client
from georank.uris import local_of

# ----------------------------------------------------------------------------- reading


def read_bytes(uri: str, s3: S3Config, *, max_bytes: int | None = None, client: Any | None = None) -> bytes:
    """The bytes of the file or object at ``uri``; over ``max_bytes`` is a ``too_large`` error.
    ``client``: an S3 client to reuse (default: a new one)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            obj = (client or s3_client(s3)).get_object(Bucket=bucket, Key=key)
            size = int(obj.get("ContentLength", 0))
            if max_bytes is not None and size > max_bytes:
                raise StorageError(f"object is {size} bytes, over the limit of {max_bytes}", kind="too_large")
            data: bytes = obj["Body"].read()
            return data
    path = local_of(uri)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise StorageError(f"file is {size} bytes, over the limit of {max_bytes}", kind="too_large")
        return path.read_bytes()
    except OSError as exc:
        raise _local_error(exc, path) from None


def read_range(uri: str, s3: S3Config, *, start: int, length: int, client: Any | None = None) -> bytes:
    """``length`` bytes of ``uri`` from offset ``start`` (one seek locally, one ranged GET on S3;
    default client: the worker's shared one). Fewer bytes when the file ends first."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            c = client if client is not None else worker_client(s3)
            data: bytes = c.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")["Body"].read()
            return data
    path = local_of(uri)
    try:
        with path.open("rb") as f:
            f.seek(start)
            return f.read(length)
    except OSError as exc:
        raise _local_error(exc, path) from None


def read_text(uri: str, s3: S3Config) -> str:
    return read_bytes(uri, s3).decode()


@contextlib.contextmanager
def open_input(uri: str, s3: S3Config) -> Iterator[BinaryIO]:
    """A binary file object over ``uri``: seekable locally, a forward-only stream on S3."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            body = s3_client(s3).get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield body
        finally:
            body.close()
        return
    path = local_of(uri)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise _local_error(exc, path) from None
    with f:
        yield f


def exists(uri: str, s3: S3Config) -> bool:
    """Whether a file (or folder, locally) is at ``uri``."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            with _s3_errors(uri):
                s3_client(s3).head_object(Bucket=bucket, Key=key)
            return True
        except StorageError as err:
            if err.kind == "not_found":
                return False
            raise
    return local_of(uri).exists()


# ----------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class StoredFile:
    """One file found by :func:`list_files`: its URI (a local path for local folders), size and
    version tag (the S3 ETag; size and mtime locally)."""

    uri: str
    size: int
    etag: str


def list_files(folder: str, s3: S3Config) -> list[StoredFile]:
    """Every file under a local folder (recursively, symlinks included) or an ``s3://`` prefix taken
    as a folder (``s3://b/night`` lists ``s3://b/night/...``, not ``s3://b/night2/...``), sorted by URI.
    A missing local folder lists nothing."""
    if is_s3(folder):
        bucket, prefix = split_s3(folder)
        prefix = prefix if (not prefix or prefix.endswith("/")) else prefix + "/"
        found = [
            StoredFile(f"s3://{bucket}/{key}", size, etag)
            for key, size, etag in _list_s3(bucket, prefix, s3_client(s3), uri=folder)
            if not key.endswith("/")
        ]
        return sorted(found, key=lambda f: f.uri)
    out = []
    for p in local_of(folder).rglob("*"):
        if p.is_file() or p.is_symlink():
            out.append(_local_file(p, p.stat() if p.exists() else p.lstat()))
    return sorted(out, key=lambda f: f.uri)


def stat_file(uri: str, s3: S3Config) -> StoredFile:
    """Size and version tag of the one file or object at ``uri`` (the S3 ETag by one HEAD; size and
    mtime_ns locally), as :func:`list_files` gives them; a missing file is a ``not_found`` error."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            head = s3_client(s3).head_object(Bucket=bucket, Key=key)
        return StoredFile(uri, int(head.get("ContentLength", 0)), str(head.get("ETag", "")))
    path = local_of(uri)
    try:
        st = path.stat()
    except OSError as exc:
        raise _local_error(exc, path) from None
    if not path.is_file():
        raise StorageError(f"expected a file, got a directory: {path}", kind="other")
    return _local_file(path, st)


def _local_file(path: Path, st: os.stat_result) -> StoredFile:
    return StoredFile(str(path), st.st_size, f"{st.st_size}-{st.st_mtime_ns}")


# ----------------------------------------------------------------------------- writing


def put_file(local: Path, uri: str, s3: S3Config) -> None:
    """Copy (upload) a finished local file to ``uri``; locally by atomic rename of a temporary copy."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client(s3).upload_file(str(local), bucket, key)
        return
    dest = local_of(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    shutil.copyfile(local, tmp)
    os.replace(tmp, dest)


def put_bytes(data: bytes, uri: str, s3: S3Config) -> None:
    """Write ``data`` to ``uri`` (one PUT on S3; atomic rename locally)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            s3_client(s3).put_object(Bucket=bucket, Key=key, Body=data)
        return
    dest = local_of(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


__all__ = [
    "StoredFile", "exists", "list_files", "open_input", "put_bytes", "put_file", "read_bytes", "read_range",
    "read_text", "stat_file",
]
