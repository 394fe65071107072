"""Storage, part four: content digests of local files, computed once per host.

:func:`digest` is the sha256 of a sequence of parts, each a ``bytes`` label or a local file
(its bytes, read in 4 MiB chunks); :func:`file_digest` is the sha256 of one file. Every
artifact version (the base model's, the adapter's, the embedder's) is built from them, so a
15 GB model is read once per host, not once per Python worker or per call.

A result is remembered by the parts' identity: each file's absolute path, size, mtime_ns,
ctime_ns, inode and device (a rewritten, touched or replaced file is hashed again), in this
process and on disk under the host's cache root (``$GEORANK_CACHE`` or ``~/.cache/georank``)::

    digests/<sha256(key)[:32]>.json   {"key": [...], "sha256": "<64 hex>"}, written by atomic rename
    digests/.lock                     flock held while a missing digest is computed (one
                                      hashing at a time per host: the disk is the limit)

A process that finds its entry reads it without waiting. Otherwise it takes the lock, looks
again (another worker may just have hashed the same files), hashes, writes the entry and drops
the entries of files that are gone or changed (so the folder holds only live files). Workers
starting together thus hash a model once between them. A cache root that cannot be written is
logged once and the digest is computed without it. Driver or executor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from georank.storage.host import cache_root, host_lock
from georank.storage.s3 import _local_error

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 22  # 4 MiB reads
_MEMO_MAX = 4096  # in-process entries kept before the memo starts over
_memo: dict[str, str] = {}
_memo_lock = threading.Lock()
_warned: set[str] = set()


def sha256_file(path: Path) -> str:
    """The sha256 of a local file, hex, read now (no cache: for checking a download)."""
    h = hashlib.sha256()
    _feed(h, Path(path))
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """The sha256 (64 hex) of a local file, read once per host and file state (see the module
    docstring). A missing file is a ``not_found`` :class:`~georank.errors.StorageError`."""
    return digest([Path(path)])


def digest(parts: Sequence[bytes | Path]) -> str:
    """The sha256 (64 hex) of ``parts`` concatenated: ``bytes`` as given, a ``Path`` as the
    local file's bytes. Remembered in-process and on disk by the parts' identity (parts
    without a file are simply hashed).

    >>> digest([b"abc"]) == hashlib.sha256(b"abc").hexdigest()
    True
    """
    if all(isinstance(p, bytes) for p in parts):
        return _hash(parts)
    key = _key(parts)
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    with _memo_lock:
        hit = _memo.get(name)
    if hit is not None:
        return hit
    folder = cache_root() / "digests"
    got = _read_entry(folder / f"{name}.json", key) or _compute_once(folder, name, key, parts)
    if _key(parts) == key:  # unchanged while it was hashed: safe to remember
        with _memo_lock:
            if len(_memo) >= _MEMO_MAX:
                _memo.clear()
            _memo[name] = got
    return got


def _feed(h: Any, path: Path) -> None:
    """Stream a file's bytes into a hashlib object (the one place file bytes are hashed)."""
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
                h.update(chunk)
    except OSError as exc:
        raise _local_error(exc, path) from None


def _identity(path: Path) -> list[Any]:
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise _local_error(exc, Path(p)) from None
    return ["f", p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _key(parts: Sequence[bytes | Path]) -> str:
    return json.dumps([["b", p.hex()] if isinstance(p, bytes) else _identity(p) for p in parts])


def _hash(parts: Sequence[bytes | Path]) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, bytes):
            h.update(p)
        else:
            _feed(h, p)
    return h.hexdigest()


def _read_entry(path: Path, key: str) -> str | None:
    """The digest stored at ``path`` for ``key``; None when absent, unreadable or for another key."""
    try:
        entry = json.loads(path.read_text())
        got = entry["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if json.dumps(entry.get("key")) != key or not isinstance(got, str) or len(got) != 64:
        return None
    return got


def _compute_once(folder: Path, name: str, key: str, parts: Sequence[bytes | Path]) -> str:
    """Hash under the host's digest lock, unless another process stored it meanwhile."""
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(host_lock(folder / ".lock"))
        except OSError as exc:
            _warn_once(folder, exc)
            return _hash(parts)
        found = _read_entry(folder / f"{name}.json", key)
        if found is not None:
            return found
        got = _hash(parts)
        if _key(parts) == key:  # a file that changed while it was read is not stored
            _store(folder, name, key, got)
        return got


def _store(folder: Path, name: str, key: str, sha256: str) -> None:
    """Write one entry atomically and prune the others (called under the lock)."""
    tmp = folder / f".{name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps({"key": json.loads(key), "sha256": sha256}))
        os.replace(tmp, folder / f"{name}.json")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _warn_once(folder, exc)
        return
    _prune(folder, keep=f"{name}.json")


def _prune(folder: Path, *, keep: str) -> None:
    """Drop entries whose files are gone or changed, and temporary files of crashed writers
    (none is writing: writers hold the lock)."""
    for p in folder.iterdir():
        if p.name in (keep, ".lock"):
            continue
        if p.name.startswith(".") and ".tmp" in p.name:
            p.unlink(missing_ok=True)
            continue
        if p.suffix != ".json":
            continue
        try:
            files = [part for part in json.loads(p.read_text())["key"] if part[0] == "f"]
            live = all(_still(part) for part in files)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            live = False
        if not live:
            p.unlink(missing_ok=True)


def _still(part: list[Any]) -> bool:
    try:
        return _identity(Path(part[1])) == part
    except Exception:  # noqa: BLE001 - a vanished file is simply not live
        return False


def _warn_once(folder: Path, exc: OSError) -> None:
    if str(folder) not in _warned:
        _warned.add(str(folder))
        log.warning("file digests are not kept on disk: cannot write %s (%s); hashing in this process only", folder, exc)

__all__ = ["CHUNK_BYTES", "digest", "file_digest", "sha256_file"]
