"""The one storage layer: every read, listing, ranged read, write and download of a local path,
a ``file://`` URI or an ``s3://`` object goes through this package.

S3 is reached with boto3: endpoint, region and path-style addressing from :class:`S3Config`,
credentials from the standard AWS chain (environment, profile, instance role), never from config.
Failures are :class:`~georank.errors.StorageError` with a sentence naming the URI and a ``kind``
(``not_found``, ``denied``, ``too_large``, ``unreachable``, ``other``); callers turn them into
their own errors (an error row, an index error).

:func:`local_path` gives a local file or folder for an artifact, downloading an ``s3://`` one
once per host into a locked cache (:mod:`georank.storage.cache`); :func:`file_digest` and
:func:`digest` hash local files once per host (:mod:`georank.storage.digests`);
:func:`pin_artifacts` fixes every artifact's version once per run on the driver, and inside
:func:`pinned` executors get exactly those versions (:mod:`georank.storage.pins`).

The package, by job: :mod:`~georank.storage.host` (the cache root, file locks),
:mod:`~georank.storage.s3` (URIs, clients, errors), :mod:`~georank.storage.files` (read, ranged
read, list, write), :mod:`~georank.storage.cache` (the artifact cache),
:mod:`~georank.storage.digests` (content digests), :mod:`~georank.storage.pins` (pinned versions).
"""

from __future__ import annotations

from georank.storage.cache import local_path
from georank.storage.digests import digest, file_digest, sha256_file
from georank.storage.files import (
    StoredFile,
    exists,
    list_files,
    open_input,
    put_bytes,
    put_file,
    read_bytes,
    read_range,
    read_text,
    stat_file,
)
from georank.storage.host import cache_root
from georank.storage.pins import artifact_version, pin_artifacts, pinned, pinned_version
from georank.storage.s3 import S3_SCHEMES, bad_relative, is_s3, join_uri, s3_client, split_s3, worker_client

__all__ = [
    "S3_SCHEMES",
    "StoredFile",
    "artifact_version",
    "bad_relative",
    "cache_root",
    "digest",
    "exists",
    "file_digest",
    "is_s3",
    "join_uri",
    "list_files",
    "local_path",
    "pin_artifacts",
    "pinned",
    "pinned_version",
    "open_input",
    "put_bytes",
    "put_file",
    "read_bytes",
    "read_range",
    "read_text",
    "s3_client",
    "sha256_file",
    "split_s3",
    "stat_file",
    "worker_client",
]
