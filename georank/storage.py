"""The one storage layer: every read, listing, ranged read, write and download of a local path,
a ``file://`` URI or an ``s3://`` object goes through this module.

S3 is reached with boto3: endpoint, region and path-style addressing from :class:`S3Config`,
credentials from the standard AWS chain (environment, profile, instance role), never from config.
Failures are :class:`~georank.errors.StorageError` with a sentence naming the URI and a ``kind``
(``not_found``, ``denied``, ``too_large``, ``unreachable``, ``other``); callers turn them into
their own errors (an error row, an index error).

:func:`local_path` gives a local file or folder for an artifact (model, adapter, index shard): a
local path as is; an ``s3://`` object or prefix is downloaded once per host into the cache
(``$GEORANK_CACHE`` or ``~/.cache/georank``)::

    s3/<sha256(uri)[:16]>/.lock                 flock: one download of this URI at a time per host
    s3/<sha256(uri)[:16]>/<content>/            one version: <content> hashes the objects' keys and ETags
    s3/<sha256(uri)[:16]>/.tmp-<pid>-<rand>/    a download in progress, renamed to <content> when complete

A process that finds ``<content>/.complete`` uses it without waiting. Otherwise it takes the lock,
checks again (another worker may just have finished), downloads into a temporary folder and renames
it into place, so a reader never sees half a model; then, still holding the lock, it removes the
URI's other versions and leftovers of crashed downloads (the current version is kept). Open files of
a removed version stay readable (POSIX); a reader that still lists an old version's folder after a
newer one arrived must fetch again. Runs on the driver and on executors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from georank.config import S3Config
from georank.errors import InputError, StorageError

log = logging.getLogger(__name__)

S3_SCHEMES = ("s3://", "s3a://")
CLIENT_TTL_S = 300.0  # a worker's shared S3 client is rebuilt this often (credentials re-resolved)
COMPLETE = ".complete"  # written last into a downloaded version folder
_clients_lock = threading.Lock()


# ----------------------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEMES)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``.

    >>> split_s3("s3://photos/night/a.jpg")
    ('photos', 'night/a.jpg')
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise InputError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def local_of(uri: str) -> Path:
    """The local path of a plain path or a ``file://`` URI."""
    return Path(urlparse(uri).path if uri.startswith("file://") else uri)


def join_uri(root: str, rel: str) -> str:
    """``root/rel`` for a local folder or an ``s3://`` prefix.

    >>> join_uri("s3://b/index/", "manifest.json")
    's3://b/index/manifest.json'
    """
    return root.rstrip("/") + "/" + rel


# ----------------------------------------------------------------------------- S3 clients


_loader: Any = None  # botocore's data loader (the parsed service models), shared by every client of this process


def s3_client(s3: S3Config) -> Any:
    """A boto3 S3 client from config: endpoint and addressing from ``s3``, credentials from
    the standard AWS chain (environment, profile, instance role), never from config."""
    global _loader
    import boto3
    import botocore.session
    from botocore.config import Config

    # A new session resolves the credential chain now: boto3's default session would keep the
    # first credentials it found for the life of the (long-lived, reused) Python worker. Only
    # the read-only service models are shared (parsing them again costs ~0.5 s per client).
    session = botocore.session.Session()
    with _clients_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    addressing = "path" if s3.path_style else "auto"
    return boto3.session.Session(botocore_session=session).client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        config=Config(s3={"addressing_style": addressing}, retries={"max_attempts": 3, "mode": "standard"}),
    )


_clients: dict[tuple[Any, ...], tuple[float, Any]] = {}


def worker_client(s3: S3Config) -> Any:
    """One S3 client per Python worker and endpoint for many small reads (a client costs far more
    than a read), rebuilt every ``CLIENT_TTL_S`` so that the credential chain is resolved afresh."""
    key = (s3.endpoint_url, s3.region, s3.path_style)
    now = time.monotonic()
    with _clients_lock:
        hit = _clients.get(key)
        if hit is not None and now - hit[0] < CLIENT_TTL_S:
            return hit[1]
    client = s3_client(s3)
    with _clients_lock:
        _clients[key] = (now, client)
    return client


def _s3_error(exc: Exception, uri: str) -> StorageError:
    """A boto3/botocore failure as a StorageError naming ``uri``."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        words, kind = {
            "NoSuchKey": ("object not found", "not_found"),
            "404": ("object not found", "not_found"),
            "NotFound": ("object not found", "not_found"),
            "NoSuchBucket": ("bucket not found", "not_found"),
            "AccessDenied": ("access denied", "denied"),
            "403": ("access denied", "denied"),
        }.get(code, (f"S3 error {code}", "other"))
        return StorageError(f"{words}: {uri}", kind=kind)
    return StorageError(f"could not reach S3 for {uri}: {exc.__class__.__name__}", kind="unreachable")


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(exc, uri) from None


def _local_error(exc: OSError, path: Path) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"file not found: {path}", kind="not_found")
    if isinstance(exc, IsADirectoryError):
        return StorageError(f"expected a file, got a directory: {path}", kind="other")
    if isinstance(exc, PermissionError):
        return StorageError(f"permission denied reading {path}", kind="denied")
    return StorageError(f"could not read {path}: {exc.strerror or exc}", kind="other")


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


def _list_s3(bucket: str, prefix: str, client: Any, *, uri: str) -> Iterator[tuple[str, int, str]]:
    with _s3_errors(uri):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], int(obj.get("Size", 0)), str(obj.get("ETag", ""))


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
            st = p.stat() if p.exists() else p.lstat()
            out.append(StoredFile(str(p), st.st_size, f"{st.st_size}-{st.st_mtime_ns}"))
    return sorted(out, key=lambda f: f.uri)


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


def sha256_file(path: Path) -> str:
    """The sha256 of a local file, hex, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- artifact cache


def cache_root() -> Path:
    return Path(os.environ.get("GEORANK_CACHE", Path.home() / ".cache" / "georank"))


def local_path(uri: str, s3: S3Config) -> Path:
    """A local path for a local or ``s3://`` artifact (file or folder); an ``s3://`` one is
    downloaded once per host and version (see the module docstring for the cache's layout and lock).

    Raises :class:`~georank.errors.InputError` (a StorageError for S3) when nothing is there.
    """
    if "://" not in uri or uri.startswith("file://"):
        p = local_of(uri)
        if not p.exists():
            raise StorageError(f"artifact not found: expected a file or directory at {p}", kind="not_found")
        return p
    bucket, key = split_s3(uri)
    prefix = key.rstrip("/")
    client = s3_client(s3)
    objects = sorted(
        (k, etag) for k, _, etag in _list_s3(bucket, prefix, client, uri=uri) if k == prefix or k.startswith(prefix + "/")
    )
    if not objects:
        raise StorageError(f"artifact not found: expected objects at {uri}, got none", kind="not_found")
    base = cache_root() / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    version = hashlib.sha256(repr(objects).encode()).hexdigest()[:16]
    dest = base / version
    is_file = len(objects) == 1 and objects[0][0] == prefix
    target = dest / Path(prefix).name if is_file else dest
    if (dest / COMPLETE).exists():
        return target
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / ".lock"):
        if not (dest / COMPLETE).exists():  # nobody finished it while this process waited
            tmp = base / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                _download(client, bucket, prefix, [k for k, _ in objects], tmp, is_file=is_file)
                (tmp / COMPLETE).write_text(uri)
                tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("fetched %s (%d objects) into %s", uri, len(objects), dest)
        _remove_other_versions(base, keep=dest.name)
    return target


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path``: between processes, and between threads (each
    opens its own file description)."""
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _download(client: Any, bucket: str, prefix: str, keys: list[str], into: Path, *, is_file: bool) -> None:
    for k in keys:
        out = into / (Path(prefix).name if is_file else os.path.relpath(k, prefix))
        out.parent.mkdir(parents=True, exist_ok=True)
        with _s3_errors(f"s3://{bucket}/{k}"):
            client.download_file(bucket, k, str(out))


def _remove_other_versions(base: Path, *, keep: str) -> None:
    """Called under the URI's lock: every other version folder, and the temporary folders of
    downloads that crashed (none is running: they all hold this lock)."""
    for p in base.iterdir():
        if p.is_dir() and p.name != keep:
            shutil.rmtree(p, ignore_errors=True)
            log.info("removed cached version %s", p)


__all__ = [
    "StoredFile",
    "cache_root",
    "exists",
    "is_s3",
    "join_uri",
    "list_files",
    "local_of",
    "local_path",
    "open_input",
    "put_bytes",
    "put_file",
    "read_bytes",
    "read_range",
    "read_text",
    "s3_client",
    "sha256_file",
    "split_s3",
    "worker_client",
]
