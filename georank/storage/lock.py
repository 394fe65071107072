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
  lock uses the host's clock (one host). Tests pass a clock they move by hand (``tests/support.py``).
- **no false safety**: right after creating the lock, the S3 server must refuse a second
  ``If-None-Match: *`` put and an ``If-Match`` put on a wrong ETag of the same key (both rewrite the
  same bytes, so they are harmless if honoured wrongly); a server that accepts either raises
  :class:`~georank.errors.SetupError`. moto 5.2.5 (the tests' server) honours both, and
  ``If-Match`` on ``DeleteObject``; boto3 1.44.5 exposes ``IfNoneMatch``/``IfMatch``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping

from georank.config import S3Config
from georank.errors import ConfigError, WriteError
from georank.storage.clocks import HostClock, LockClock, ServerClock
from georank.storage.lock_stores import LOCK_FOLDER, LOCK_NAME, LockBody, _LocalStore, _S3Store, _Store, _utc, lock_key
from georank.storage.s3 import is_s3

log = logging.getLogger(__name__)


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

    >>> import os, tempfile
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


__all__ = ["LOCK_FOLDER", "LOCK_NAME", "CommitLock", "HostClock", "LockBody", "LockClock", "ServerClock",
           "acquire", "commit_lock", "lock_key", "lock_wanted"]
