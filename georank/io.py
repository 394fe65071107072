"""Reading photo bytes from a local path, ``file://`` URI or ``s3://`` object.

Failures become :class:`~georank.errors.PhotoError` with stage ``read`` and a
reason a person understands (missing file, access denied, ...), so the caller
can write an error row instead of crashing the task. Runs on executors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from georank import storage
from georank.config import S3Config
from georank.errors import PhotoError, StorageError
from georank.uris import local_of


def read_bytes(uri: str, s3: S3Config, *, max_bytes: int | None = None, client: Any | None = None) -> bytes:
    """The bytes at ``uri`` (local path, ``file://``, ``s3://`` or ``tar://``), through
    :mod:`georank.storage`. ``client`` is an S3 client to reuse (one per partition)."""
    if uri.startswith("tar://"):  # a member of a tar archive, by offset (georank.storage.tar)
        from georank.storage.tar import read_tar_member

        return read_tar_member(uri, s3, max_bytes=max_bytes)
    try:
        return storage.read_bytes(uri, s3, max_bytes=max_bytes, client=client)
    except StorageError as err:
        limit = " (decode.max_bytes)" if err.kind == "too_large" else ""
        raise PhotoError("read", err.reason + limit, kind=err.kind) from None


class PhotoReader:
    """Reads photo bytes for one batch (inline bytes, a local path or ``s3://``), creating at most
    one S3 client, lazily: the one place the decode stage, the ranker's candidate images and the
    gallery build read images. Runs on executors."""

    def __init__(self, s3: S3Config, *, max_bytes: int | None = None) -> None:
        self._s3, self._max_bytes = s3, max_bytes
        self._client: Any | None = None

    def read(self, uri: str | None, data: bytes | None = None) -> bytes:
        """``data`` when given, else the bytes at ``uri``; PhotoError("read", ...) when neither works."""
        if data is not None:
            return data
        if not uri:
            raise PhotoError("read", "the input row has neither image bytes nor a URI")
        if storage.is_s3(uri) and self._client is None:
            self._client = storage.s3_client(self._s3)
        return read_bytes(uri, self._s3, max_bytes=self._max_bytes, client=self._client)


def list_images(folder: str, s3: S3Config) -> list[str]:
    """URIs of the files in a local folder (recursively) or under an ``s3://`` prefix, sorted.

    Every regular file counts, whatever its extension or none (decode reads the format from the
    content; a non-image becomes an error row, it does not vanish). Hidden files and anything
    under a hidden folder (``.DS_Store``, ``._IMG_0001.JPG``, ``.thumbnails/``) are skipped. An
    ``s3://`` prefix is a folder: ``s3://b/night`` lists ``s3://b/night/...``, not ``s3://b/night2/...``.
    """
    if storage.is_s3(folder):
        bucket, prefix = storage.split_s3(folder)
        under = f"s3://{bucket}/{_as_folder_prefix(prefix)}"
        return [f.uri for f in storage.list_files(folder, s3) if not _hidden(f.uri[len(under) :])]
    root = _local_root(folder)
    return [f.uri for f in storage.list_files(folder, s3) if not _hidden(Path(f.uri).relative_to(root).as_posix())]


def photo_ids(uris: Sequence[str], folder: str) -> list[str]:
    """Catalogue ids of the photos ``uris`` listed under ``folder`` (:func:`list_images`), in order.

    The id is the path relative to ``folder``, ``/``-separated, without the file's extension:
    ``trip1/IMG_0001.JPG`` -> ``trip1/IMG_0001``, so the same camera file name in two sub-folders
    gives two photos. Where two files of one folder share that id (``IMG_0001.JPG`` and
    ``IMG_0001.heic``), each of them keeps its extension (``IMG_0001.JPG``, ``IMG_0001.heic``);
    the ids are unique within the listing. Local folders and ``s3://`` prefixes alike.
    """
    rel = [_relative(u, folder) for u in uris]
    if len(set(rel)) != len(rel):
        dup = sorted({r for r in rel if rel.count(r) > 1})
        raise ValueError(f"photo_ids: expected distinct files, got repeats of {dup[:5]}")
    ids = [_strip_extension(r) for r in rel]
    while True:  # a clash keeps the full relative path (always unique), until no id clashes
        counts: dict[str, int] = {}
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
        clashing = [n for n, i in enumerate(ids) if counts[i] > 1 and ids[n] != rel[n]]
        if not clashing:
            return ids
        for n in clashing:
            ids[n] = rel[n]


def photo_id_from_uri(uri: str, folder: str | None = None) -> str:
    """The id of one photo file: its path relative to ``folder`` without the extension (just the
    file name's stem without ``folder``). Use :func:`photo_ids` for a whole listing: it also
    keeps ids unique when two files differ only by their extension."""
    name = _relative(uri, folder) if folder is not None else uri.rstrip("/").rsplit("/", 1)[-1]
    return _strip_extension(name)


def _strip_extension(rel_path: str) -> str:
    head, _, name = rel_path.rpartition("/")
    stem, dot, _ = name.rpartition(".")
    if not dot or not stem:  # no extension, or a name like ".x" (hidden files are not listed anyway)
        return rel_path
    return f"{head}/{stem}" if head else stem


def _hidden(rel_path: str) -> bool:
    return any(part.startswith(".") for part in rel_path.split("/") if part)


def _as_folder_prefix(prefix: str) -> str:
    return prefix if (not prefix or prefix.endswith("/")) else prefix + "/"


def _local_root(folder: str) -> Path:
    return local_of(folder)


def _relative(uri: str, folder: str) -> str:
    """``uri``'s path under ``folder`` (``/``-separated); ValueError when it is not under it."""
    if storage.is_s3(folder):
        f_bucket, f_prefix = storage.split_s3(folder)
        u_bucket, u_key = storage.split_s3(uri)
        prefix = _as_folder_prefix(f_prefix)
        if u_bucket != f_bucket or not u_key.startswith(prefix):
            raise ValueError(f"photo_ids: expected {uri} under {folder}")
        return u_key[len(prefix) :]
    return _local_root(uri).relative_to(_local_root(folder)).as_posix()


__all__ = ["PhotoReader", "read_bytes", "list_images", "photo_ids", "photo_id_from_uri"]
