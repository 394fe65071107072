"""Storage, part three: the host's artifact cache.

:func:`local_path` gives a local file or folder for an artifact (model, adapter, index shard): a
local path as is; an ``s3://`` object or prefix is downloaded once per host into the cache
(``$GEORANK_CACHE`` or ``~/.cache/georank``)::

    s3/<sha256(uri)[:16]>/.lock                 flock: one download or clean-up of this URI at a time per host
    s3/<sha256(uri)[:16]>/<version>/            one version: <version> hashes the objects' keys and ETags
    s3/<sha256(uri)[:16]>/.holders/<version>    shared flock held by every process using that version
    s3/<sha256(uri)[:16]>/.tmp-<pid>-<rand>/    a download in progress, renamed to <version> when complete

A process takes a shared lease on a version (``.holders/<version>``) before it looks at it and
keeps it while it lives, or until it asks for another version of that URI (then what it loaded
from the old one is open already). A process that finds ``<version>/.complete`` uses it without
waiting. Otherwise it takes the lock, checks again (another worker may just have finished),
downloads into a temporary folder and renames it into place, so a reader never sees half a model;
then, still holding the lock, it removes leftovers of crashed downloads and every other version
whose lease it can take exclusively, i.e. that no live process holds: a version in use is never
deleted under a process about to open it.

Object keys are checked before anything is downloaded: a key that, relative to the artifact's
prefix, is absolute, climbs out (``..``) or has a ``.`` or empty segment is a StorageError naming
it, and every destination is resolved and checked to lie inside the download folder.

Pinned versions (:mod:`georank.storage.pins`): inside ``pinned(run.artifacts)``, or with
``version=``, a pinned URI gives exactly that version: from the cache without listing S3 when it is
there, else downloaded after a listing that must find that version; a local artifact's content
must still be that version. Anything else is a RunError naming the artifact, pinned and found.
Runs on the driver and on executors.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from georank.config import S3Config
from georank.errors import StorageError
from georank.storage.host import cache_root, host_lock, lock_file
from georank.storage.pins import check_version, local_version, pinned_version, s3_objects, s3_version
from georank.storage.s3 import _s3_errors, bad_relative, is_s3, s3_client, split_s3
from georank.uris import local_of

log = logging.getLogger(__name__)

COMPLETE = ".complete"  # written last into a downloaded version folder: {"uri": ..., "file": name or null}
HOLDERS = ".holders"  # s3/<uri>/.holders/<version>: the leases of the processes using that version

_held: dict[Path, tuple[str, int]] = {}  # this process's lease per cached URI: base -> (version, open fd)
_held_lock = threading.Lock()


def local_path(uri: str, s3: S3Config, *, version: str | None = None) -> Path:
    """A local path for a local, ``file:`` or ``s3://`` artifact (file or folder); an ``s3://``
    one is downloaded once per host and version (see the module docstring for the cache's layout,
    leases and lock).

    ``version``: the version this run pinned for ``uri`` (:func:`georank.storage.pin_artifacts`);
    default: the one pinned in this process (:func:`georank.storage.pinned`), if any. A pinned
    artifact whose content is another version now is a :class:`~georank.errors.RunError` naming
    it; a missing one a ``not_found`` StorageError; a refused object key a StorageError naming it.
    """
    pinned_as = version if version is not None else pinned_version(uri)
    if not is_s3(uri):
        p = local_of(uri)
        if not p.exists():
            raise StorageError(f"artifact not found: expected a file or directory at {p}", kind="not_found")
        if pinned_as is not None:
            check_version(uri, pinned_as=pinned_as, found=local_version(p))
        return p
    bucket, key = split_s3(uri)
    prefix = key.rstrip("/")
    base = cache_root() / "s3" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if pinned_as is not None:
        cached = _cached_target(base, pinned_as)  # the pinned version on this host: no listing
        if cached is not None:
            return cached
    client = s3_client(s3)
    objects = s3_objects(bucket, prefix, client, uri=uri)
    if not objects:
        raise StorageError(f"artifact not found: expected objects at {uri}, got none", kind="not_found")
    found = s3_version(objects)
    if pinned_as is not None:
        check_version(uri, pinned_as=pinned_as, found=found)
    is_file = len(objects) == 1 and objects[0][0] == prefix
    files = _destinations(uri, prefix, [k for k, _ in objects], is_file=is_file)  # refused keys: before any download
    dest = base / found
    target = dest / files[0][1] if is_file else dest
    _hold(base, found)
    if (dest / COMPLETE).exists():
        return target
    with host_lock(base / ".lock"):
        if not (dest / COMPLETE).exists():  # nobody finished it while this process waited
            tmp = base / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                _download(client, bucket, files, tmp)
                (tmp / COMPLETE).write_text(json.dumps({"uri": uri, "file": files[0][1] if is_file else None}))
                tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("fetched %s (%d objects) into %s", uri, len(objects), dest)
        _remove_other_versions(base, keep=dest.name)
    return target


def _cached_target(base: Path, version: str) -> Path | None:
    """The path of ``version`` in the cache when it is complete there (leased first); else None."""
    dest = base / version
    if not (dest / COMPLETE).exists():
        return None
    _hold(base, version)
    try:
        meta = json.loads((dest / COMPLETE).read_text())
        name = meta["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # removed meanwhile, or written by an older georank: list and check
    if name is not None and bad_relative(str(name)) is not None:
        return None
    return dest / name if name is not None else dest


def _destinations(uri: str, prefix: str, keys: list[str], *, is_file: bool) -> list[tuple[str, str]]:
    """``(key, relative destination)`` of each object to download, checked: a single object keeps
    its file name; under a prefix, the key's path below it. Folder markers (keys ending in ``/``)
    are no files. Any key that would land outside the version folder is a StorageError naming it."""
    if is_file:
        name = prefix.rsplit("/", 1)[-1]
        if name in ("", ".", ".."):
            raise StorageError(f"artifact {uri}: refused object key {prefix}: expected a file name, got {name!r}")
        return [(prefix, name)]
    out = []
    for k in keys:
        rel = k[len(prefix) + 1 :] if k != prefix else ""
        marker = k.endswith("/")
        body = rel[:-1] if marker and rel else rel
        if marker and body == "":
            continue  # the prefix's own folder marker
        why = bad_relative(body)
        if why is not None:
            raise StorageError(f"artifact {uri}: refused object key {k}: expected a path inside the prefix, got {why}")
        if not marker:
            out.append((k, body))
    return out


def _download(client: Any, bucket: str, files: list[tuple[str, str]], into: Path) -> None:
    root = into.resolve()
    for k, rel in files:
        out = (into / rel).resolve()
        if not out.is_relative_to(root) or out == root:
            raise StorageError(f"refused object key {k}: expected a destination inside {root}, got {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        with _s3_errors(f"s3://{bucket}/{k}"):
            client.download_file(bucket, k, str(out))


def _hold(base: Path, version: str) -> None:
    """This process's shared lease on ``version`` of the URI cached at ``base`` (taken once and
    kept), releasing its lease on any other version of that URI."""
    with _held_lock:
        current = _held.get(base)
        if current is not None and current[0] == version:
            return
        fd = lock_file(base / HOLDERS / version, fcntl.LOCK_SH)
        assert fd is not None  # a blocking lock returns a descriptor
        _held[base] = (version, fd)
        if current is not None:
            os.close(current[1])


def _remove_other_versions(base: Path, *, keep: str) -> None:
    """Called under the URI's lock: the temporary folders of downloads that crashed (none is
    running: they all hold this lock), and every other version no live process holds; the leases
    of versions that are gone."""
    for p in base.iterdir():
        if not p.is_dir() or p.name in (keep, HOLDERS):
            continue
        if p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
            continue
        fd = lock_file(base / HOLDERS / p.name, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            log.info("kept cached version %s: a live process holds it", p)
            continue
        try:
            shutil.rmtree(p, ignore_errors=True)
            (base / HOLDERS / p.name).unlink(missing_ok=True)
            log.info("removed cached version %s", p)
        finally:
            os.close(fd)
    for lease in (base / HOLDERS).iterdir() if (base / HOLDERS).is_dir() else []:
        if lease.name == keep or (base / lease.name).is_dir():
            continue
        fd = lock_file(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is not None:
            lease.unlink(missing_ok=True)
            os.close(fd)


__all__ = ["COMPLETE", "HOLDERS", "cache_root", "host_lock", "local_path"]
