"""Artifacts (models, adapters, index shards) named by a local path or an ``s3://`` URI.

:func:`local_path` gives a local file or directory for either: a local path is
returned as is; an ``s3://`` object or prefix is downloaded once into a local
cache folder (``$GEORANK_CACHE`` or ``~/.cache/georank``) keyed by the URI and
the objects' ETags, so a changed artifact is fetched again. Nothing is ever
fetched from a model hub. Runs on the driver and on executors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from georank.config import S3Config
from georank.errors import InputError

log = logging.getLogger(__name__)


def s3_client(s3: S3Config):  # type: ignore[no-untyped-def]
    """A boto3 S3 client from config: endpoint and addressing from ``s3``, credentials from
    the standard AWS chain (environment, profile, instance role), never from config."""
    import boto3
    from botocore.config import Config

    addressing = "path" if s3.path_style else "auto"
    # A new session resolves the credential chain now: boto3's default session would keep the
    # first credentials it found for the life of the (long-lived, reused) Python worker.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        config=Config(s3={"addressing_style": addressing}, retries={"max_attempts": 3, "mode": "standard"}),
    )


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("s3", "s3a") or not parsed.netloc:
        raise InputError(f"expected an s3://bucket/key URI, got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def cache_root() -> Path:
    return Path(os.environ.get("GEORANK_CACHE", Path.home() / ".cache" / "georank"))


def local_path(uri: str, s3: S3Config) -> Path:
    """A local path for a local or ``s3://`` artifact (file or directory).

    Raises :class:`InputError` when the artifact does not exist.
    """
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    if "://" not in uri:
        p = Path(uri)
        if not p.exists():
            raise InputError(f"artifact not found: expected a file or directory at {uri}")
        return p
    bucket, key = split_s3(uri)
    client = s3_client(s3)
    prefix = key.rstrip("/")
    paginator = client.get_paginator("list_objects_v2")
    objects: list[tuple[str, str]] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            k = obj["Key"]
            if k == prefix or k.startswith(prefix + "/"):
                objects.append((k, obj["ETag"]))
    if not objects:
        raise InputError(f"artifact not found: expected objects at {uri}, got none")
    digest = hashlib.sha256(repr((uri, sorted(objects))).encode()).hexdigest()[:16]
    dest = cache_root() / "s3" / digest
    is_file = len(objects) == 1 and objects[0][0] == prefix
    target = dest / Path(prefix).name if is_file else dest
    if (dest / ".complete").exists():
        return target
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for k, _ in objects:
        rel = Path(prefix).name if is_file else os.path.relpath(k, prefix)
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, k, str(out))
    (tmp / ".complete").write_text(uri)
    try:
        tmp.rename(dest)
    except OSError:  # another worker finished first: theirs is the same content
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fetched %s (%d objects) into %s", uri, len(objects), dest)
    return target
