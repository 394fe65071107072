"""Storage: the host's cache root and its file locks. Driver or executor.

Every per-host cache of georank (downloaded artifacts, file digests, shard metadata copies)
lives under :func:`cache_root` and serialises its writers with :func:`host_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """The host's cache folder: ``$GEORANK_CACHE``, else ``~/.cache/georank``."""
    return Path(os.environ.get("GEORANK_CACHE", Path.home() / ".cache" / "georank"))


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


def lock_file(path: Path, how: int) -> int | None:
    """An open descriptor of ``path`` (created if missing) holding ``flock(how)``; None when
    ``how`` has ``LOCK_NB`` and another open description holds a conflicting lock. A file that
    was unlinked (or replaced) while this call waited for it is opened and locked again, so the
    lock returned is always on the file now at ``path``. Closing the descriptor releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            held, now = os.fstat(fd), os.stat(path)
            same = (held.st_ino, held.st_dev) == (now.st_ino, now.st_dev)
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


__all__ = ["cache_root", "host_lock", "lock_file"]
