"""Reading photo bytes from a local path, ``file://`` URI or ``s3://`` object.

Failures become :class:`~georank.errors.PhotoError` with stage ``read`` and a
reason a person understands (missing file, access denied, ...), so the caller
can write an error row instead of crashing the task. Runs on executors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from georank.config import S3Config
from georank.errors import PhotoError


def read_bytes(uri: str, s3: S3Config, *, max_bytes: int | None = None, client: Any | None = None) -> bytes:
    """The bytes at ``uri``. ``client`` is a boto3 S3 client to reuse (one per partition)."""
    if uri.startswith(("s3://", "s3a://")):
        return _read_s3(uri, s3, max_bytes=max_bytes, client=client)
    if uri.startswith("tar://"):  # a member of a tar archive, by offset (georank.tarindex)
        from georank.tarindex import read_tar_member

        return read_tar_member(uri, s3, max_bytes=max_bytes)
    path = Path(urlparse(uri).path if uri.startswith("file://") else uri)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise PhotoError("read", f"file is {size} bytes, over the limit of {max_bytes} (decode.max_bytes)")
        return path.read_bytes()
    except FileNotFoundError:
        raise PhotoError("read", f"file not found: {path}") from None
    except IsADirectoryError:
        raise PhotoError("read", f"expected a file, got a directory: {path}") from None
    except PermissionError:
        raise PhotoError("read", f"permission denied reading {path}") from None
    except OSError as exc:
        raise PhotoError("read", f"could not read {path}: {exc.strerror or exc}") from None


def _read_s3(uri: str, s3: S3Config, *, max_bytes: int | None, client: Any | None) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    from georank.artifacts import s3_client, split_s3

    bucket, key = split_s3(uri)
    c = client if client is not None else s3_client(s3)
    try:
        obj = c.get_object(Bucket=bucket, Key=key)
        size = int(obj.get("ContentLength", 0))
        if max_bytes is not None and size > max_bytes:
            raise PhotoError("read", f"object is {size} bytes, over the limit of {max_bytes} (decode.max_bytes)")
        data: bytes = obj["Body"].read()
        return data
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        words = {
            "NoSuchKey": "object not found",
            "404": "object not found",
            "NoSuchBucket": "bucket not found",
            "AccessDenied": "access denied",
            "403": "access denied",
        }.get(code, f"S3 error {code}")
        raise PhotoError("read", f"{words}: {uri}") from None
    except BotoCoreError as exc:
        raise PhotoError("read", f"could not reach S3 for {uri}: {exc.__class__.__name__}") from None


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
        if uri.startswith(("s3://", "s3a://")) and self._client is None:
            from georank.artifacts import s3_client

            self._client = s3_client(self._s3)
        return read_bytes(uri, self._s3, max_bytes=self._max_bytes, client=self._client)


def list_images(folder: str, s3: S3Config) -> list[str]:
    """URIs of the image files in a local folder or under an ``s3://`` prefix, sorted.

    Every regular file counts (a non-image with an image name must become an error
    row, not vanish); hidden files are skipped.
    """
    if folder.startswith(("s3://", "s3a://")):
        from georank.artifacts import s3_client, split_s3

        bucket, prefix = split_s3(folder)
        client = s3_client(s3)
        uris: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if name and not name.startswith(".") and not obj["Key"].endswith("/"):
                    uris.append(f"s3://{bucket}/{obj['Key']}")
        return sorted(uris)
    root = Path(urlparse(folder).path if folder.startswith("file://") else folder)
    return sorted(
        str(p) for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")
    )


def photo_id_from_uri(uri: str) -> str:
    """The catalogue id of a photo named by its file: the file name without its extension."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    stem, _, _ = name.rpartition(".")
    return stem or name


__all__ = ["PhotoReader", "read_bytes", "list_images", "photo_id_from_uri"]
