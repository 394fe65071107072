"""Storage, part one: URIs (local path, ``file://``, ``s3://``), S3 clients and the translation of
storage failures into :class:`~georank.errors.StorageError`. Driver or executor.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from georank.config import S3Config
from georank.errors import InputError, StorageError

S3_SCHEMES = ("s3://", "s3a://")
CLIENT_TTL_S = 300.0  # a worker's shared S3 client is rebuilt this often (credentials re-resolved)
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


def bad_relative(rel: str) -> str | None:
    """Why ``rel`` (``/``-separated) is not a path inside a folder, or None when it is: absolute,
    empty, climbing out (``..``) or with a ``.`` or empty segment (``a//b`` and ``a/./b`` would
    land on ``a/b``).

    >>> bad_relative("shards/0.faiss") is None, bad_relative("a/../../x")
    (True, "one that climbs out of it ('..')")
    """
    if rel == "":
        return "an empty name"
    if rel.startswith("/"):
        return "an absolute path"
    parts = rel.split("/")
    if ".." in parts:
        return "one that climbs out of it ('..')"
    if any(p in ("", ".") for p in parts):
        return "a '.' or empty path segment"
    return None


def join_uri(root: str, rel: str) -> str:
    """``root/rel`` for a local folder or an ``s3://`` prefix; ``rel`` must stay inside ``root``
    (:func:`bad_relative`): a name read from a manifest never reaches beside its index.

    >>> join_uri("s3://b/index/", "manifest.json")
    's3://b/index/manifest.json'
    """
    why = bad_relative(rel)
    if why is not None:
        raise InputError(f"expected a relative name inside {root.rstrip('/')}, got {why}: {rel!r}")
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
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(f"no usable AWS credentials for {uri}: {exc.__class__.__name__}", kind="credentials")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        words, kind = {
            "NoSuchKey": ("object not found", "not_found"),
            "404": ("object not found", "not_found"),
            "NotFound": ("object not found", "not_found"),
            "NoSuchBucket": ("bucket not found", "not_found"),
            "AccessDenied": ("access denied", "denied"),
            "403": ("access denied", "denied"),
            "InvalidAccessKeyId": ("credentials rejected (InvalidAccessKeyId)", "credentials"),
            "SignatureDoesNotMatch": ("credentials rejected (SignatureDoesNotMatch)", "credentials"),
            "ExpiredToken": ("credentials expired (ExpiredToken)", "credentials"),
            "TokenRefreshRequired": ("credentials expired (TokenRefreshRequired)", "credentials"),
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


def _list_s3(bucket: str, prefix: str, client: Any, *, uri: str) -> Iterator[tuple[str, int, str]]:
    """``(key, size, etag)`` of every object under ``prefix`` (a plain key prefix)."""
    with _s3_errors(uri):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], int(obj.get("Size", 0)), str(obj.get("ETag", ""))


__all__ = ["CLIENT_TTL_S", "S3_SCHEMES", "bad_relative", "is_s3", "join_uri", "s3_client", "split_s3", "worker_client"]
