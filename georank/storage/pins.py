"""Storage, part five: artifact versions pinned once per run.

A run loads several artifacts (the embedder, its heads, the ranker's base model and adapter, a
generator model, adapters to compare); each is a local path or an ``s3://`` URI whose content may
be replaced while the run goes on. So the driver resolves every artifact's version ONCE, at the
start (:func:`pin_artifacts`), into a plain mapping ``{uri: version}`` that ships to executors with
the run (``RunInfo.artifacts``); there, inside :func:`pinned`, :func:`georank.storage.local_path`
gives exactly that version of each pinned URI, or raises a :class:`~georank.errors.RunError`
naming the artifact, the pinned and the found version. A run never mixes two versions.

Versions (16 hex):

- ``s3://`` prefix or object: the sha256 of its objects' sorted ``(key, ETag)`` pairs
  (:func:`s3_version`), which is also the name of its folder in the host's artifact cache, so an
  executor that has the pinned version cached uses it without listing the prefix again;
- local file or folder: the sha256 of every file's relative path and content digest
  (:func:`local_version`; the digests are read once per host, :mod:`georank.storage.digests`,
  and are the ones the model versions are built from, so pinning costs no second read).

Driver: :func:`pin_artifacts`. Executors: :func:`pinned`, :func:`pinned_version` (and
:func:`georank.storage.local_path`, which checks).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from georank.config import GeorankConfig, S3Config
from georank.errors import RunError, StorageError
from georank.storage.s3 import _list_s3, is_s3, s3_client, split_s3
from georank.uris import local_of

_active: dict[str, tuple[str, int]] = {}  # this process's pins by normalised URI: (version, open blocks) (see pinned())
_active_lock = threading.Lock()


# ----------------------------------------------------------------------------- versions


def s3_objects(bucket: str, prefix: str, client: Any, *, uri: str) -> list[tuple[str, str]]:
    """``(key, etag)`` of the object ``prefix`` itself and of every object under ``prefix/``,
    sorted (``s3://b/model`` holds ``model/...``, not ``model2/...``)."""
    return sorted(
        (k, etag) for k, _, etag in _list_s3(bucket, prefix, client, uri=uri) if k == prefix or k.startswith(prefix + "/")
    )


def s3_version(objects: list[tuple[str, str]]) -> str:
    """The version of an ``s3://`` artifact: 16 hex of the sha256 of its sorted ``(key, etag)`` pairs."""
    return hashlib.sha256(repr(sorted(objects)).encode()).hexdigest()[:16]


def local_version(path: Path) -> str:
    """The version of a local artifact: 16 hex of the sha256 of, per file under ``path`` (itself
    when a file; symlinks followed), its ``/``-separated relative path and sha256 (read once per
    host and file state, :func:`georank.storage.file_digest`). A rewritten, added, removed or
    renamed file changes it; a touched one does not."""
    from georank.storage.digests import file_digest

    h = hashlib.sha256()
    if path.is_file():
        h.update(b"file\0" + file_digest(path).encode())
        return h.hexdigest()[:16]
    if not path.is_dir():
        raise StorageError(f"artifact not found: expected a file or directory at {path}", kind="not_found")
    files: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(path, followlinks=True):
        dirs.sort()
        for name in names:
            f = Path(folder) / name
            files.append((f.relative_to(path).as_posix(), f))
    h.update(b"folder\0")
    for rel, f in sorted(files):
        h.update(rel.encode() + b"\0" + file_digest(f).encode() + b"\0")
    return h.hexdigest()[:16]


def artifact_version(uri: str, s3: S3Config) -> str:
    """The version of the artifact at ``uri`` now (see the module docstring); a missing one is a
    ``not_found`` :class:`~georank.errors.StorageError`. Driver or executor."""
    if not is_s3(uri):
        return local_version(local_of(uri))
    bucket, key = split_s3(uri)
    prefix = key.rstrip("/")
    objects = s3_objects(bucket, prefix, s3_client(s3), uri=uri)
    if not objects:
        raise StorageError(f"artifact not found: expected objects at {uri}, got none", kind="not_found")
    return s3_version(objects)


# ----------------------------------------------------------------------------- pinning (driver)


def artifact_uris(cfg: GeorankConfig, *, embed: bool = True, compare_adapters: bool = False) -> list[str]:
    """The resolved URIs of the artifacts a run of ``cfg`` loads: the embedder (and its heads for
    ``embed.kind: g3``) when ``embed``, the ranker's base model and adapter, the generator's own
    model (``candidates.generated``, when enabled and set) and, when ``compare_adapters`` (the
    evaluate job), every ``evaluate.compare_adapters`` entry. Index shards are not here: the run
    pins its index by its manifest."""
    uris: list[str] = []
    if embed:
        uris.append(cfg.embed.model_uri)
        if cfg.embed.kind == "g3" and cfg.embed.heads_uri:
            uris.append(cfg.embed.heads_uri)
    uris += [cfg.rank.base_model_uri, cfg.rank.adapter_uri]
    gen = cfg.candidates.generated
    if gen.enabled and gen.model_uri:
        uris.append(gen.model_uri)
    if compare_adapters:
        uris += list(cfg.evaluate.compare_adapters.values())
    return list(dict.fromkeys(cfg.resolve(u) for u in uris))


def pin_artifacts(cfg: GeorankConfig, *, embed: bool = True, compare_adapters: bool = False) -> dict[str, str]:
    """On the driver, once per run: ``{uri: version}`` of every artifact of :func:`artifact_uris`,
    to ship with the run (``RunInfo(artifacts=...)``) and activate on executors with
    :func:`pinned`. A missing artifact stops the run here (a ``not_found`` StorageError)."""
    return {uri: artifact_version(uri, cfg.s3) for uri in artifact_uris(cfg, embed=embed, compare_adapters=compare_adapters)}


# ----------------------------------------------------------------------------- pinned versions (executors)


def _norm(uri: str) -> str:
    """One spelling per artifact: ``s3a://`` as ``s3://``, no trailing ``/``, a local path normalised."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return f"s3://{bucket}/{key.rstrip('/')}"
    return os.path.normpath(os.path.abspath(local_of(uri)))


@contextlib.contextmanager
def pinned(artifacts: Mapping[str, str] | None) -> Iterator[None]:
    """Within this block, in this process, :func:`georank.storage.local_path` of a URI in
    ``artifacts`` gives exactly its pinned version or raises a :class:`~georank.errors.RunError`
    (nothing pinned: a no-op). Process-wide (threads included): blocks may nest or overlap on
    several threads, each releasing only its own pins; a URI already pinned to another version by
    an open block is a RunError. Runs on executors
    (and on the driver when the core runs there)."""
    if not artifacts:
        yield
        return
    keys = {_norm(uri): (uri, version) for uri, version in artifacts.items()}
    with _active_lock:
        for key, (uri, version) in keys.items():
            held = _active.get(key)
            if held is not None and held[0] != version:
                raise RunError(
                    f"artifact {uri}: expected one pinned version per process, got {held[0]} and {version} "
                    f"(two runs with different pins in one process)"
                )
        for key, (_, version) in keys.items():
            _active[key] = (version, _active.get(key, (version, 0))[1] + 1)
    try:
        yield
    finally:
        with _active_lock:  # each block releases only its own pins, in whatever order blocks end
            for key in keys:
                version, count = _active[key]
                if count > 1:
                    _active[key] = (version, count - 1)
                else:
                    del _active[key]


def pinned_version(uri: str | None) -> str | None:
    """The version pinned for ``uri`` in this process (:func:`pinned`); None when not pinned."""
    if not uri:
        return None
    with _active_lock:
        held = _active.get(_norm(uri)) if _active else None
    return None if held is None else held[0]


def check_version(uri: str, *, pinned_as: str, found: str) -> None:
    """Raise a :class:`~georank.errors.RunError` naming the artifact when what is at ``uri`` now
    (``found``) is not the version the run pinned."""
    if found != pinned_as:
        raise RunError(
            f"artifact {uri} changed during the run: expected the version pinned when the run started, "
            f"{pinned_as}, found {found}; the run stops rather than mix two versions (rerun to use the new one)"
        )


__all__ = [
    "artifact_uris", "artifact_version", "check_version", "local_version", "pin_artifacts", "pinned",
    "pinned_version", "s3_objects", "s3_version",
]
