"""A table's commit lock: one driver at a time commits to a Delta table. Driver only.

Why georank needs its own (checked in Delta's source and jars, delta-spark 4.4.0, December 2026):

- ``io.delta.storage.S3SingleDriverLogStore`` (``storage/src/main/java/io/delta/storage/
  S3SingleDriverLogStore.java``, in ``delta-storage-4.4.0.jar``) is what
  ``org.apache.spark.sql.delta.storage.DelegatingLogStore`` picks for the ``s3``, ``s3a`` and
  ``s3n`` schemes by default. Its ``write`` takes ``PathLock.acquire`` (a ``ConcurrentHashMap`` in
  ONE JVM), checks ``exists`` and then calls ``fs.create(path, overwrite=false)``: a plain PUT.
  Two drivers (two ``spark-submit``\\ s, even on one cluster) can both pass the check and both PUT
  ``_delta_log/N.json``; the later PUT replaces the earlier commit, which vanishes.
- No LogStore in delta-storage 4.4.0 sends ``If-None-Match``: the jars hold no such header, and
  Hadoop 3.5.0's S3A (the pyspark 4.2 one) sends ``If-None-Match: *`` on ``create(overwrite=false)``
  only in create-performance mode (``fs.s3a.create.performance``, default false) or when a caller
  asks for it through the ``createFile`` builder option ``fs.option.create.conditional.overwrite``.
  Delta's opt-in conditional-write store (``io.delta.storage.S3LogStore`` with
  ``internal/S3ConditionalWrite.java``) is newer than 4.4.0 and not in its jars.
- The multi-driver store of 4.4.0 is ``io.delta.storage.S3DynamoDBLogStore`` (a separate artifact,
  ``delta-storage-s3-dynamodb``): a DynamoDB conditional ``putItem`` per ``N.json``.
- Local paths are not safe between two JVMs either: ``HDFSLogStore`` (the default for ``file:``)
  does ``exists`` then ``FileContext.rename``, ``synchronized`` within one JVM only.

So "from one cluster, S3's conditional writes suffice" is wrong for the pinned Delta: georank takes
this lock around a commit and its history check (:mod:`georank.write`).

The lock lives BESIDE the table, never in it (:func:`lock_key`): ``s3a://b/georank/results`` ->
``s3://b/georank/_georank_locks/results_georank_commit.lock``. Not under the table's root: the lock
is taken before the first commit creates the table, and ``DeltaTable.createIfNotExists(spark)
.location(uri)`` refuses a folder that holds any other file, even one whose name starts with ``_``
or ``.`` (``[DELTA_MISSING_DELTA_TABLE] ... is not a Delta table``; tried with delta-spark 4.4.0 on a
local folder and on s3a:// against moto; ``df.write.format("delta").save`` does not mind). Its body
is JSON ``{owner, acquired_ms, expires_ms, ttl_ms, clock, nonce}``:

- **acquire**: create it only if absent (S3: ``PutObject`` with ``If-None-Match: *``; local: under a
  host ``flock`` of the ``.mutex`` file beside it). A lock whose ``expires_ms`` has passed (a
  crashed holder) is broken by replacing it on the version seen (S3: ``If-Match: <ETag>``), so two
  breakers of one lock cannot both win. A held lock is polled every ``poll_s`` for up to ``wait_s``,
  then :class:`~georank.errors.WriteError` names the table, the holder and when its lease expires.
- **heartbeat**: the holder rewrites the body every ``ttl_s / 3`` on its own version (``If-Match``),
  so a commit longer than the ttl keeps the lock; a renewal refused means another driver broke it.
- **release**: delete it only if it is still ours (``If-Match`` on our ETag / our nonce).
- **one clock**: expiry is judged on the S3 server's clock (the ``Date`` header of its responses,
  kept as lower and upper bounds, see :class:`ServerClock`), never on the drivers' wall clocks,
  which may differ; the holder counts its lease as ending early by the bound's width. A local
  lock uses the host's clock (one host). Tests pass a :class:`ManualClock`.
- **no false safety**: right after creating the lock, the S3 server must refuse a second
  ``If-None-Match: *`` put and an ``If-Match`` put on a wrong ETag of the same key (both rewrite the
  same bytes, so they are harmless if honoured wrongly); a server that accepts either raises
  :class:`~georank.errors.SetupError`. moto 5.2.5 (the tests' server) honours both, and
  ``If-Match`` on ``DeleteObject``; boto3 1.44.5 exposes ``IfNoneMatch``/``IfMatch``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from georank.config import S3Config
from georank.errors import ConfigError, SetupError, WriteError
from georank.storage.cache import host_lock
from georank.storage.s3 import _s3_error, is_s3, local_of, s3_client, split_s3

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


# ----------------------------------------------------------------------------- clocks


class LockClock(Protocol):
    """The one clock leases are judged on, and the local waits of one driver."""

    name: str

    def now_ms(self) -> int:
        """A lower bound of the shared clock's time now, in ms since the epoch."""

    def uncertainty_ms(self) -> int:
        """How far the shared clock may be ahead of :meth:`now_ms` (its upper bound minus it)."""

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        """Learn from a server response (``headers``, sent/received on ``time.monotonic``)."""

    def monotonic_s(self) -> float:
        """This driver's elapsed time, for deadlines."""

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        """Sleep ``seconds`` of :meth:`monotonic_s`; True when ``stop`` was set first."""


class ServerClock:
    """The S3 server's clock, from the ``Date`` header (whole seconds) of its responses.

    A response sent at monotonic ``s`` and received at ``r`` with ``Date: D`` was stamped at a
    server time in ``[D, D + 1 s)`` somewhere between ``s`` and ``r``; so at monotonic ``m`` the
    server's time is at least ``D + (m - r)`` and below ``D + 1 s + (m - s)``. The tightest bounds
    over all responses are kept. No driver wall clock is read.
    """

    name = "s3-server"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._low: float | None = None  # server ms = _low + monotonic ms, at least
        self._high: float | None = None  # ... and less than _high + monotonic ms

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        date = headers.get("date") or headers.get("Date")
        if not date:
            return
        stamp_ms = email.utils.parsedate_to_datetime(date).timestamp() * 1000.0
        low, high = stamp_ms - received_s * 1000.0, stamp_ms + 1000.0 - sent_s * 1000.0
        with self._lock:
            if self._low is None or self._high is None or max(self._low, low) > min(self._high, high):
                self._low, self._high = low, high  # first response, or the server's clock jumped
            else:
                self._low, self._high = max(self._low, low), min(self._high, high)

    def now_ms(self) -> int:
        with self._lock:
            if self._low is None:
                raise WriteError("commit lock: expected a response from the S3 server before reading its clock, got none")
            return int(self._low + time.monotonic() * 1000.0)

    def uncertainty_ms(self) -> int:
        with self._lock:
            return 1000 if self._low is None or self._high is None else int(self._high - self._low) + 1

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        return (stop or threading.Event()).wait(max(seconds, 0.0))


class HostClock:
    """The host's wall clock: every driver of a local table runs on this one host."""

    name = "host"

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def uncertainty_ms(self) -> int:
        return 0

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        return None

    def monotonic_s(self) -> float:
        return time.monotonic()

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        return (stop or threading.Event()).wait(max(seconds, 0.0))


class ManualClock:
    """A clock moved by hand (tests): :meth:`advance` wakes the waits it reaches, and
    :meth:`wait_for_waiters` lets a test know a thread is parked (``why``: ``poll``, ``heartbeat``)."""

    name = "manual"

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms
        self._cond = threading.Condition()
        self._targets: dict[int, tuple[str, int]] = {}  # one per parked wait: (why, wake-up time)

    def now_ms(self) -> int:
        with self._cond:
            return self._now_ms

    def uncertainty_ms(self) -> int:
        return 0

    def observe(self, headers: Mapping[str, str], sent_s: float, received_s: float) -> None:
        return None

    def monotonic_s(self) -> float:
        return self.now_ms() / 1000.0

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now_ms += int(round(seconds * 1000))
            self._cond.notify_all()

    def wait(self, seconds: float, *, stop: threading.Event | None = None, why: str = "") -> bool:
        token = object()
        with self._cond:
            target = self._now_ms + int(round(seconds * 1000))
            self._targets[id(token)] = (why, target)
            self._cond.notify_all()
            try:
                while self._now_ms < target:
                    if stop is not None and stop.is_set():
                        return True
                    self._cond.wait(0.01)  # also re-checks ``stop``, which does not notify us
            finally:
                del self._targets[id(token)]
                self._cond.notify_all()
        return stop is not None and stop.is_set()

    def wait_for_waiters(self, why: str, count: int = 1, *, timeout_s: float = 60.0) -> bool:
        """True once ``count`` threads are parked with ``why`` and not yet due (False after
        ``timeout_s`` real seconds); a wait that :meth:`advance` made due no longer counts."""

        def parked() -> bool:
            return sum(w == why and t > self._now_ms for w, t in self._targets.values()) >= count

        with self._cond:
            return self._cond.wait_for(parked, timeout=timeout_s)


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
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)
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


# ----------------------------------------------------------------------------- the lock


class CommitLock:
    """A held commit lock (from :func:`acquire` or :func:`commit_lock`). A heartbeat thread renews
    it every ``ttl / 3``. :meth:`ensure_held` before the commit fails loudly if it was lost."""

    def __init__(self, *, table_uri: str, store: _Store, clock: LockClock, body: LockBody, version: str,
                 written_at_s: float) -> None:
        self.table_uri = table_uri
        self.owner = body.owner
        self.where = store.where
        self._store, self._clock = store, clock
        self._body, self._version = body, version
        self._state = threading.Condition()
        self._deadline_s = self._lease_end(written_at_s)
        self._lost: str | None = None  # why the lease is no longer ours
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name=f"georank-commit-lock {self.where}", daemon=True)
        self._thread.start()

    def _lease_end(self, written_at_s: float) -> float:
        """Until when (our monotonic) no other driver can judge our lease expired: its ttl minus
        the width of the clock's bounds (the shared clock may be ahead of what we wrote by that)."""
        return written_at_s + (self._body.ttl_ms - self._clock.uncertainty_ms()) / 1000.0

    def _heartbeat(self) -> None:
        interval_s = self._body.ttl_ms / 3000.0
        while not self._clock.wait(interval_s, stop=self._stop, why="heartbeat"):
            try:
                self._renew()
            except Exception as exc:  # noqa: BLE001 - an S3 hiccup: try again next beat, the deadline guards us
                log.warning("commit lock %s: renewal failed (%s); retrying in %.0f s", self.where, exc, interval_s)
            with self._state:
                if self._lost is None and self._clock.monotonic_s() >= self._deadline_s:
                    self._lost = "its lease ran out before a renewal succeeded"
                if self._lost is not None:
                    log.error("commit lock %s of %s lost: %s", self.where, self.table_uri, self._lost)
                    self._state.notify_all()
                    return

    def _renew(self) -> None:
        with self._state:
            if self._lost is not None or self._stop.is_set():
                return
            started_s = self._clock.monotonic_s()
            now = self._clock.now_ms()
            body = LockBody(owner=self._body.owner, acquired_ms=self._body.acquired_ms, expires_ms=now + self._body.ttl_ms,
                            ttl_ms=self._body.ttl_ms, clock=self._clock.name, nonce=uuid.uuid4().hex)
            version = _write_or_find_ours(self._store, body, self._store.replace(body.to_bytes(), self._version))
            if version is None:
                seen = self._store.read()
                holder = seen.body.owner if seen is not None and seen.body is not None else None
                self._lost = f"another driver ({holder!r}) took it over" if seen else "it was deleted"
            else:
                self._body, self._version = body, version
                self._deadline_s = self._lease_end(started_s)
                self.renewals += 1
            self._state.notify_all()

    def wait_renewals(self, count: int, *, timeout_s: float = 60.0) -> bool:
        """True once the heartbeat renewed ``count`` times (tests), or stopped for a lost lease."""
        with self._state:
            return self._state.wait_for(lambda: self.renewals >= count or self._lost is not None, timeout=timeout_s)

    def ensure_held(self) -> None:
        """Raise :class:`WriteError` unless the lease is ours and within its deadline (reads the lock)."""
        with self._state:
            if self._lost is None and self._clock.monotonic_s() >= self._deadline_s:
                self._lost = "its lease ran out before a renewal succeeded"
            if self._lost is None:
                seen = self._store.read()
                if seen is None or seen.version != self._version:
                    holder = seen.body.owner if seen is not None and seen.body is not None else None
                    self._lost = f"another driver ({holder!r}) took it over" if seen else "it was deleted"
            if self._lost is not None:
                raise WriteError(f"commit lock {self.where} of table {self.table_uri}: expected it held by "
                                 f"{self.owner!r}, got lost ({self._lost}); nothing may be committed under it")

    def release(self) -> bool:
        """Stop the heartbeat and delete the lock if it is still ours. True: deleted; False: it was
        lost (another driver holds it now, or it is gone), and it is left alone."""
        self._stop.set()
        self._thread.join()
        with self._state:
            if self._store.delete(self._version):
                log.info("commit lock %s released by %s", self.where, self.owner)
                return True
            seen = self._store.read()
            if seen is not None and seen.body is not None and seen.body.nonce == self._body.nonce:
                return self._store.delete(seen.version)  # a retried request had already changed its ETag
            if self._lost is None:
                self._lost = "another driver took it over" if seen else "it was deleted"
            log.error("commit lock %s: not released by %s, it is not ours any more (%s)", self.where, self.owner, self._lost)
            return False

    @property
    def lost(self) -> str | None:
        """Why the lease is not ours any more (None while it is, as far as the heartbeat knows)."""
        with self._state:
            return self._lost


def _write_or_find_ours(store: _Store, body: LockBody, version: str | None) -> str | None:
    """A refused conditional write may be the retry of one that landed: the nonce tells."""
    if version is not None:
        return version
    seen = store.read()
    return seen.version if seen is not None and seen.body is not None and seen.body.nonce == body.nonce else None


def _store_for(table_uri: str, s3: S3Config, clock: LockClock) -> _Store:
    return _S3Store(table_uri, s3, clock) if is_s3(table_uri) else _LocalStore(table_uri)


def acquire(table_uri: str, s3: S3Config, *, owner: str, ttl_s: float, wait_s: float,
            clock: LockClock | None = None, poll_s: float = 1.0) -> CommitLock:
    """Take ``table_uri``'s commit lock for ``owner`` (a run id), waiting up to ``wait_s`` for a
    holder; release it with :meth:`CommitLock.release` (or use :func:`commit_lock`).

    ``clock``: None = the S3 server's (:class:`ServerClock`) for ``s3://``/``s3a://`` tables, the
    host's (:class:`HostClock`) for local ones. Raises :class:`WriteError` when the wait ends,
    :class:`SetupError` when the S3 server does not honour conditional writes.
    """
    if ttl_s <= 0 or wait_s < 0 or poll_s <= 0:
        raise ConfigError(f"commit lock: expected ttl_s > 0, wait_s >= 0, poll_s > 0; got {ttl_s}, {wait_s}, {poll_s}")
    clock = clock if clock is not None else (ServerClock() if is_s3(table_uri) else HostClock())
    store = _store_for(table_uri, s3, clock)
    ttl_ms = int(ttl_s * 1000)
    started_s = clock.monotonic_s()
    waited = False
    races = 0  # conditional writes lost in a row to another driver's
    while True:
        seen = store.read()
        written_at_s = clock.monotonic_s()
        now = clock.now_ms()
        if ttl_ms <= 2 * clock.uncertainty_ms():
            raise ConfigError(f"commit lock {store.where}: expected write.commit_lock_ttl_s above twice the "
                              f"{clock.name} clock's uncertainty ({clock.uncertainty_ms() / 1000:.1f} s), got {ttl_s}")
        body = LockBody(owner=owner, acquired_ms=now, expires_ms=now + ttl_ms, ttl_ms=ttl_ms, clock=clock.name,
                        nonce=uuid.uuid4().hex)
        version: str | None
        if seen is None:
            version = _write_or_find_ours(store, body, store.create(body.to_bytes()))
        elif seen.body is None:
            raise WriteError(f"commit lock {store.where} of table {table_uri}: expected a JSON body "
                             f"{{owner, acquired_ms, expires_ms, ttl_ms, clock, nonce}}, got {seen.data[:80]!r}; "
                             "remove it by hand once no driver is committing to the table")
        elif seen.body.expires_ms < now:
            log.warning("commit lock %s: breaking the lock of %r, whose lease expired at %s (%s clock, now %s)",
                        store.where, seen.body.owner, _utc(seen.body.expires_ms), clock.name, _utc(now))
            version = _write_or_find_ours(store, body, store.replace(body.to_bytes(), seen.version))
        else:
            if clock.monotonic_s() - started_s >= wait_s:
                holder = seen.body
                raise WriteError(
                    f"table {table_uri} is being committed to by {holder.owner!r} (commit lock {store.where}, held "
                    f"since {_utc(holder.acquired_ms)}, lease expires at {_utc(holder.expires_ms)} on the "
                    f"{holder.clock} clock unless its driver renews it); expected the lock free within "
                    f"{wait_s:g} s (write.commit_lock_wait_s), got it still held: rerun once that run has finished"
                )
            if not waited:
                log.info("commit lock %s: held by %r until %s; waiting up to %g s", store.where, seen.body.owner,
                         _utc(seen.body.expires_ms), wait_s)
                waited = True
            remaining_s = wait_s - (clock.monotonic_s() - started_s)
            clock.wait(min(poll_s, max(remaining_s, 0.0)), why="poll")
            continue
        if version is None:
            races += 1  # another driver created or broke it first: read again
            if races > 20:
                raise WriteError(f"commit lock {store.where} of table {table_uri}: expected to win a conditional write "
                                 f"or to see who holds the lock, got {races} refused writes in a row with no holder")
            continue
        races = 0
        version = store.check_conditional_writes(body.to_bytes(), version)
        log.info("commit lock %s taken by %r (ttl %g s)", store.where, owner, ttl_s)
        return CommitLock(table_uri=table_uri, store=store, clock=clock, body=body, version=version,
                          written_at_s=written_at_s)


@contextlib.contextmanager
def commit_lock(table_uri: str, s3: S3Config, *, owner: str, ttl_s: float, wait_s: float,
                clock: LockClock | None = None, poll_s: float = 1.0) -> Iterator[CommitLock]:
    """Hold ``table_uri``'s commit lock around a block (a Delta commit and its history check).

    Leaving the block releases it; a lease lost meanwhile raises :class:`WriteError` on leaving (if
    the block raised nothing itself), so a commit that may have raced is never reported as clean.

    >>> import tempfile
    >>> from georank.config import S3Config
    >>> with tempfile.TemporaryDirectory() as table:
    ...     with commit_lock(table, S3Config(), owner="run-1", ttl_s=60, wait_s=0) as held:
    ...         held.ensure_held()
    ...         os.path.exists(lock_key(table))
    True
    """
    held = acquire(table_uri, s3, owner=owner, ttl_s=ttl_s, wait_s=wait_s, clock=clock, poll_s=poll_s)
    failed = True
    try:
        yield held
        failed = False
    finally:
        released = held.release()
        if not released and not failed:
            raise WriteError(f"commit lock {held.where} of table {table_uri}: expected it held by {owner!r} "
                             f"until released, got lost ({held.lost}); check the table's history for this run's commit")


def lock_wanted(mode: str, table_uri: str, spark_conf: Mapping[str, str] | None = None) -> bool:
    """Whether ``write.commit_lock`` (``auto``/``on``/``off``) takes the lock for ``table_uri``.

    ``auto`` is on for every table, local ones included (neither default Delta 4.4.0 log store keeps
    two JVMs apart, and the lock costs a few small requests per commit), except when ``spark_conf``
    names a multi-driver log store for the table's scheme (``spark.delta.logStore.<scheme>.impl`` =
    ``io.delta.storage.S3DynamoDBLogStore``, or the later ``io.delta.storage.S3LogStore``).

    >>> lock_wanted("auto", "s3a://b/t", {"spark.delta.logStore.s3a.impl": "io.delta.storage.S3DynamoDBLogStore"})
    False
    >>> lock_wanted("auto", "warehouse/results")
    True
    """
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"write.commit_lock: expected one of ['auto', 'on', 'off'], got {mode!r}")
    if mode != "auto":
        return mode == "on"
    scheme = table_uri.split("://", 1)[0] if "://" in table_uri else "file"
    impl = (spark_conf or {}).get(f"spark.delta.logStore.{scheme}.impl", "")
    return impl.rsplit(".", 1)[-1] not in ("S3DynamoDBLogStore", "S3LogStore")


__all__ = ["LOCK_FOLDER", "LOCK_NAME", "CommitLock", "HostClock", "LockBody", "LockClock", "ManualClock", "ServerClock",
           "acquire", "commit_lock", "lock_key", "lock_wanted"]
