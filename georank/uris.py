"""Local spellings of a path: a plain path or a ``file:`` URI. Below both the config (which resolves
its URIs with it) and :mod:`georank.storage` (which reads and writes through it)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from georank.errors import InputError


def local_of(uri: str) -> Path:
    """The local path of a plain path or a ``file:`` URI (``file:///abs``, ``file://localhost/abs``,
    ``file:/abs``; percent-escapes decoded). A ``file:`` URI naming another host is an InputError.

    >>> local_of("file:///data/night%2001")
    PosixPath('/data/night 01')
    """
    if not uri.startswith("file:"):
        return Path(uri)
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise InputError(f"expected a local file: URI (file:///path), got one naming the host {parsed.netloc!r}: {uri}")
    return Path(unquote(parsed.path))


__all__ = ["local_of"]
