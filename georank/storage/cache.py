"""Storage, part three: the host's artifact cache.

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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from georank.config import S3Config
from georank.errors import StorageError
from georank.storage.s3 import _list_s3, _s3_errors, local_of, s3_client, split_s3

log = logging.getLogger(__name__)

COMPLETE = ".complete"  # written last into a downloaded version folder


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
    with host_lock(base / ".lock"):
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
def host_lock(lock_path: Path) -> Iterator[None]:
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


__all__ = ["COMPLETE", "cache_root", "local_path"]
