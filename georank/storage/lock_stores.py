"""Where and how the commit lock (:mod:`georank.storage.lock`) is kept: its name beside the table, its
JSON body, and its two stores (an S3 object written with conditional puts; a local file under a
host lock). Driver only."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from georank.config import S3Config
from georank.errors import SetupError
from georank.storage.cache import host_lock
from georank.storage.clocks import LockClock
from georank.storage.files import put_bytes
from georank.storage.s3 import _s3_error, s3_client, split_s3
from georank.uris import local_of

log = logging.getLogger(__name__)


LOCK_NAME = "_georank_commit.lock"  # suffix of a table's lock file, kept BESIDE the table (see lock_key)
LOCK_FOLDER = "_georank_locks"  # beside the table: <parent>/_georank_locks/<table name>_georank_commit.lock


def lock_key(table_path: str) -> str:
    """Where a table's lock lives, beside the table and never in it: Delta refuses to create a
    table in a folder that holds other files, and the lock is taken BEFORE the first commit creates
    the table. ``table_path``: a local path, or an S3 key prefix.

    >>> lock_key("warehouse/results/")
    'warehouse/_georank_locks/results_georank_commit.lock'
    >>> lock_key("/results"), lock_key("results")
    ('/_georank_locks/results_georank_commit.lock', '_georank_locks/results_georank_commit.lock')
    """
    parent, sep, name = table_path.rstrip("/").rpartition("/")
    return f"{parent}{sep}{LOCK_FOLDER}/{name or 'root'}{LOCK_NAME}"


_WRONG_ETAG = '"00000000000000000000000000000000"'  # an ETag no object has: the If-Match probe


# ----------------------------------------------------------------------------- the lock's body


@dataclass(frozen=True)
class LockBody:
    """What the lock holds; times in ms on the clock named ``clock``."""

    owner: str
    acquired_ms: int
    expires_ms: int
    ttl_ms: int
    clock: str
    nonce: str  # new on every write: two writes never have the same bytes (an S3 ETag is their MD5)

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> LockBody | None:
        try:
            raw = json.loads(data)
            return cls(owner=str(raw["owner"]), acquired_ms=int(raw["acquired_ms"]), expires_ms=int(raw["expires_ms"]),
                       ttl_ms=int(raw["ttl_ms"]), clock=str(raw["clock"]), nonce=str(raw["nonce"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Seen:
    """The lock as read: ``version`` (S3 ETag, local nonce), its body (None: unreadable) and bytes."""

    version: str
    body: LockBody | None
    data: bytes


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- stores


class _Store(Protocol):
    where: str  # the lock's URI, for messages

    def read(self) -> Seen | None: ...
    def create(self, data: bytes) -> str | None: ...  # the new version; None: it exists
    def replace(self, data: bytes, version: str) -> str | None: ...  # None: not at ``version`` any more
    def delete(self, version: str) -> bool: ...  # False: not at ``version`` any more
    def check_conditional_writes(self, data: bytes, version: str) -> str: ...  # SetupError, or the version


class _S3Store:
    """The lock as one S3 object; every write conditional (If-None-Match / If-Match)."""

    # A condition refused (412), a concurrent conditional write (409), the object gone: not errors.
    _REFUSED_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")
    _REFUSED_STATUS = (412, 409)

    def __init__(self, table_uri: str, s3: S3Config, clock: LockClock) -> None:
        self.bucket, prefix = split_s3(table_uri)
        self.key = lock_key(prefix)
        self.where = f"s3://{self.bucket}/{self.key}"
        self.endpoint = s3.endpoint_url or "AWS S3"
        self._client = s3_client(s3)
        self._clock = clock

    def _call(self, op: str, **kwargs: Any) -> dict[str, Any] | None:
        """``op``'s response; None when S3 refused a condition or the object is missing."""
        from botocore.exceptions import BotoCoreError, ClientError

        sent = time.monotonic()
        try:
            response: dict[str, Any] = getattr(self._client, op)(Bucket=self.bucket, Key=self.key, **kwargs)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            self._clock.observe(meta.get("HTTPHeaders", {}), sent, time.monotonic())
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in self._REFUSED_CODES or meta.get("HTTPStatusCode") in self._REFUSED_STATUS:
                return None
            if code in ("NotImplemented", "501"):
                raise SetupError(f"commit lock {self.where}: the S3 server at {self.endpoint} does not implement "
                                 f"conditional writes (expected If-None-Match/If-Match support, got {code}); "
                                 "set write.commit_lock: off only if one driver ever writes this table") from None
            raise _s3_error(exc, self.where) from None
        except BotoCoreError as exc:
            raise _s3_error(exc, self.where) from None
        self._clock.observe(response.get("ResponseMetadata", {}).get("HTTPHeaders", {}), sent, time.monotonic())
        return response

    def read(self) -> Seen | None:
        got = self._call("get_object")
        if got is None:
            return None
        data = got["Body"].read()
        return Seen(version=str(got["ETag"]), body=LockBody.parse(data), data=data)

    def create(self, data: bytes) -> str | None:
        put = self._call("put_object", Body=data, IfNoneMatch="*", ContentType="application/json")
        return None if put is None else str(put["ETag"])

    def replace(self, data: bytes, version: str) -> str | None:
        put = self._call("put_object", Body=data, IfMatch=version, ContentType="application/json")
        return None if put is None else str(put["ETag"])

    def delete(self, version: str) -> bool:
        return self._call("delete_object", IfMatch=version) is not None

    def check_conditional_writes(self, data: bytes, version: str) -> str:
        """Both probes rewrite our own lock with its own bytes, so they are harmless when wrongly
        accepted; a server that accepts either gives no mutual exclusion."""
        for header, value in (("IfNoneMatch", "*"), ("IfMatch", _WRONG_ETAG)):
            put = self._call("put_object", Body=data, ContentType="application/json", **{header: value})
            if put is not None:
                self._call("delete_object", IfMatch=str(put["ETag"]))
                raise SetupError(
                    f"commit lock {self.where}: the S3 server at {self.endpoint} ignores {header} on PutObject "
                    f"(expected 412 PreconditionFailed for {header}={value} on an existing key, got success), so "
                    "it cannot keep two drivers apart; use a server with S3 conditional writes, or Delta's "
                    "S3DynamoDBLogStore and write.commit_lock: off"
                )
        return version


class _LocalStore:
    """The lock as one file; every change made under a host ``flock`` of a mutex file beside it
    (threads included: each opens its own file description), and written by rename (never half a
    file). The version is the body's nonce."""

    def __init__(self, table_uri: str) -> None:
        root = local_of(table_uri)
        self.path = Path(lock_key(str(root)))
        self.where = str(self.path)
        self._mutex = self.path.with_name(f"{self.path.name}.mutex")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with host_lock(self._mutex):
            yield

    def _read(self) -> Seen | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        body = LockBody.parse(data)
        return Seen(version=body.nonce if body else f"unreadable:{len(data)}", body=body, data=data)

    def _write(self, data: bytes) -> str:
        put_bytes(data, str(self.path), S3Config())  # by rename: never half a file
        body = LockBody.parse(data)
        assert body is not None, "the lock writes only its own bodies"
        return body.nonce

    def read(self) -> Seen | None:
        with self._locked():
            return self._read()

    def create(self, data: bytes) -> str | None:
        with self._locked():
            return None if self._read() is not None else self._write(data)

    def replace(self, data: bytes, version: str) -> str | None:
        with self._locked():
            seen = self._read()
            return self._write(data) if seen is not None and seen.version == version else None

    def delete(self, version: str) -> bool:
        with self._locked():
            seen = self._read()
            if seen is None or seen.version != version:
                return False
            self.path.unlink()
            return True

    def check_conditional_writes(self, data: bytes, version: str) -> str:
        return version


__all__ = ["LOCK_FOLDER", "LOCK_NAME", "LockBody", "Seen", "lock_key"]
