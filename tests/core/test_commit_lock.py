"""The table commit lock (georank.storage.lock): on moto's S3 server (127.0.0.1) and on a local folder.

Every ordering is driven, never timed: contenders start together from a barrier, leases run on a
:class:`ManualClock` that the test moves only once the thread it wants to wake is parked on it
(``wait_for_waiters``), renewals are awaited by count, and two breakers are held at a barrier
between reading the expired lock and replacing it. The only real-time limits are the safety nets
of those waits (60 s), which a passing run never reaches.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import ManualClock, fake_credentials, fresh_bucket

from georank.config import S3Config
from georank.errors import ConfigError, SetupError, WriteError
from georank.storage import lock as L
from georank.storage.lock import LOCK_NAME, CommitLock, ServerClock, acquire, commit_lock, lock_key, lock_wanted

BUCKET = "georank-locks"
T0_MS = int(dt.datetime(2026, 12, 6, 22, 0, tzinfo=dt.UTC).timestamp() * 1000)
SAFETY_S = 60.0  # how long a test waits for a thread before it fails; never reached when it passes


@pytest.fixture(scope="module")
def moto_url(s3_server: S3Config) -> Iterator[str]:
    """The module's moto server (tests/core/conftest.py), with the lock tests' bucket."""
    mp = pytest.MonkeyPatch()
    fake_credentials(mp)
    try:
        with fresh_bucket(s3_server, BUCKET):
            yield str(s3_server.endpoint_url)
    finally:
        mp.undo()


@dataclass(frozen=True)
class Table:
    uri: str
    s3: S3Config
    kind: str  # "s3a" or "local"

    def client(self) -> Any:
        from georank.storage import s3_client

        return s3_client(self.s3)

    def key(self) -> str:
        return lock_key(self.uri.split("/", 3)[3])

    def read(self) -> dict[str, Any] | None:
        """The lock's body as stored, or None."""
        if self.kind == "local":
            path = Path(lock_key(self.uri))
            return json.loads(path.read_bytes()) if path.exists() else None
        from botocore.exceptions import ClientError

        try:
            return json.loads(self.client().get_object(Bucket=BUCKET, Key=self.key())["Body"].read())
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchKey":
                return None
            raise

    def table_files(self) -> list[str]:
        """What the table's own folder holds (the lock must not be there)."""
        if self.kind == "local":
            root = Path(self.uri)
            return sorted(str(p) for p in root.rglob("*")) if root.exists() else []
        prefix = self.uri.split("/", 3)[3].rstrip("/") + "/"
        return [o["Key"] for o in self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]

    def plant(self, *, owner: str, expires_ms: int, acquired_ms: int = T0_MS - 120_000) -> None:
        """Leave a lock as a driver that crashed would (no heartbeat, never released)."""
        body = {"owner": owner, "acquired_ms": acquired_ms, "expires_ms": expires_ms, "ttl_ms": 60_000,
                "clock": "manual", "nonce": uuid.uuid4().hex}
        data = json.dumps(body).encode()
        if self.kind == "local":
            Path(lock_key(self.uri)).parent.mkdir(parents=True, exist_ok=True)
            Path(lock_key(self.uri)).write_bytes(data)
        else:
            self.client().put_object(Bucket=BUCKET, Key=self.key(), Body=data)


@pytest.fixture(params=["s3a", "local"])
def table(request: pytest.FixtureRequest, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Table:
    fake_credentials(monkeypatch)
    if request.param == "local":
        return Table(uri=str(tmp_path / "results"), s3=S3Config(), kind="local")
    return Table(uri=f"s3a://{BUCKET}/{uuid.uuid4().hex[:8]}/results",
                 s3=S3Config(endpoint_url=moto_url, path_style=True), kind="s3a")


@pytest.fixture
def s3_table(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Table:
    fake_credentials(monkeypatch)
    return Table(uri=f"s3a://{BUCKET}/{uuid.uuid4().hex[:8]}/results",
                 s3=S3Config(endpoint_url=moto_url, path_style=True), kind="s3a")


class Runner:
    """Runs a function in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self) -> Any:
        self.thread.join(SAFETY_S)
        assert not self.thread.is_alive(), f"{self.thread.name} did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def _drive_polls(clock: ManualClock, done: Callable[[], bool], *, step_s: float = 1.0) -> None:
    """Move the clock one poll at a time, each time only once a waiter is parked on a poll; fails
    after SAFETY_S real seconds (a thread that died never becomes done)."""
    deadline = time.monotonic() + SAFETY_S
    while not done():
        assert time.monotonic() < deadline, f"not done after {SAFETY_S:g} s of driving the clock"
        if clock.wait_for_waiters("poll", timeout_s=0.05):
            clock.advance(step_s)


# ----------------------------------------------------------------------------- two contenders


def test_two_contenders_one_holds_the_other_waits_and_gets_it_after_release(table: Table) -> None:
    clock = ManualClock(T0_MS)
    start = threading.Barrier(2)
    state = threading.Lock()
    order: list[str] = []
    inside = {"now": 0, "max": 0}
    released = {name: threading.Event() for name in ("run-a", "run-b")}
    go = {name: threading.Event() for name in ("run-a", "run-b")}
    entered = threading.Semaphore(0)

    def contender(name: str) -> None:
        start.wait(SAFETY_S)
        held = acquire(table.uri, table.s3, owner=name, ttl_s=60, wait_s=600, clock=clock)
        with state:
            order.append(name)
            inside["now"] += 1
            inside["max"] = max(inside["max"], inside["now"])
        entered.release()
        assert go[name].wait(SAFETY_S)
        with state:
            inside["now"] -= 1
        assert held.release()
        released[name].set()

    runners = [Runner(lambda n=name: contender(n), name) for name in ("run-a", "run-b")]  # type: ignore[misc]
    assert entered.acquire(timeout=SAFETY_S), "one contender should hold the lock"
    assert clock.wait_for_waiters("poll", timeout_s=SAFETY_S), "the other should be waiting for it"
    with state:
        assert len(order) == 1, order
        first = order[0]
    second = "run-b" if first == "run-a" else "run-a"
    assert (table.read() or {})["owner"] == first
    go[first].set()
    assert released[first].wait(SAFETY_S)
    _drive_polls(clock, lambda: len(order) == 2)
    assert order == [first, second]
    assert (table.read() or {})["owner"] == second
    go[second].set()
    for r in runners:
        r.join()
    assert inside["max"] == 1
    assert table.read() is None


def test_a_waiter_times_out_naming_the_table_the_holder_and_its_expiry(table: Table) -> None:
    clock = ManualClock(T0_MS)
    holder = acquire(table.uri, table.s3, owner="run-a", ttl_s=60, wait_s=0, clock=clock)
    waiter = Runner(lambda: acquire(table.uri, table.s3, owner="run-b", ttl_s=60, wait_s=3, clock=clock), "run-b")
    _drive_polls(clock, lambda: not waiter.thread.is_alive())
    with pytest.raises(WriteError, match=r"table \S+results is being committed to by 'run-a' .*held since "
                       r"2026-12-06T22:00:00Z, lease expires at 2026-12-06T22:01:00Z on the manual clock.*"
                       r"expected the lock free within 3 s \(write.commit_lock_wait_s\)"):
        waiter.join()
    holder.ensure_held()
    assert holder.release()


# ----------------------------------------------------------------------------- expiry and heartbeat


def test_a_lock_left_by_a_crashed_holder_is_broken_once_expired(table: Table) -> None:
    clock = ManualClock(T0_MS)
    table.plant(owner="crashed-run", expires_ms=T0_MS - 1)
    with commit_lock(table.uri, table.s3, owner="run-b", ttl_s=60, wait_s=0, clock=clock) as held:
        body = table.read() or {}
        assert (body["owner"], body["acquired_ms"], body["expires_ms"]) == ("run-b", T0_MS, T0_MS + 60_000)
        assert held.where.endswith("/_georank_locks/results" + LOCK_NAME) and "_delta_log" not in held.where
        assert table.table_files() == []  # beside the table: Delta can still create it in its own folder
    assert table.read() is None

    table.plant(owner="live-run", expires_ms=T0_MS + 1)  # not expired yet: not broken
    with pytest.raises(WriteError, match="being committed to by 'live-run'"):
        acquire(table.uri, table.s3, owner="run-c", ttl_s=60, wait_s=0, clock=clock)
    assert (table.read() or {})["owner"] == "live-run"


def test_a_holder_that_outlives_the_ttl_keeps_the_lock_through_its_heartbeat(table: Table) -> None:
    clock = ManualClock(T0_MS)
    held = acquire(table.uri, table.s3, owner="run-a", ttl_s=9, wait_s=0, clock=clock)
    for beat in range(1, 5):  # 4 beats of ttl/3 = 3 s: 12 s, past the 9 s ttl
        assert clock.wait_for_waiters("heartbeat", timeout_s=SAFETY_S)
        clock.advance(3)
        assert held.wait_renewals(beat, timeout_s=SAFETY_S)
        assert held.lost is None
    body = table.read() or {}
    assert (body["owner"], body["acquired_ms"], body["expires_ms"]) == ("run-a", T0_MS, T0_MS + 12_000 + 9_000)
    with pytest.raises(WriteError, match=r"being committed to by 'run-a'.*lease expires at 2026-12-06T22:00:21Z"):
        acquire(table.uri, table.s3, owner="run-b", ttl_s=9, wait_s=0, clock=clock)
    held.ensure_held()
    assert held.release()
    assert table.read() is None


def test_two_breakers_of_one_expired_lock_only_one_wins(table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(T0_MS)
    table.plant(owner="crashed-run", expires_ms=T0_MS - 1)
    both_read = threading.Barrier(2)
    calls = {"n": 0}
    counting = threading.Lock()
    store_cls = L._LocalStore if table.kind == "local" else L._S3Store
    real_replace = store_cls.replace

    def replace_after_both_read(self: Any, data: bytes, version: str) -> str | None:
        with counting:
            calls["n"] += 1
            first_two = calls["n"] <= 2
        if first_two:
            both_read.wait(SAFETY_S)  # both breakers saw the same expired version before either writes
        return real_replace(self, data, version)

    monkeypatch.setattr(store_cls, "replace", replace_after_both_read)
    start = threading.Barrier(2)

    def breaker(name: str) -> CommitLock:
        start.wait(SAFETY_S)
        return acquire(table.uri, table.s3, owner=name, ttl_s=60, wait_s=0, clock=clock)

    runners = {name: Runner(lambda n=name: breaker(n), name) for name in ("run-a", "run-b")}  # type: ignore[misc]
    for r in runners.values():
        r.thread.join(SAFETY_S)
    winners = [name for name, r in runners.items() if r.error is None]
    assert len(winners) == 1, {name: r.error for name, r in runners.items()}
    (loser,) = [name for name in runners if name not in winners]
    with pytest.raises(WriteError, match=f"being committed to by '{winners[0]}'"):
        runners[loser].join()
    assert (table.read() or {})["owner"] == winners[0]
    assert runners[winners[0]].result.release()


def test_a_release_by_a_driver_that_lost_the_lock_does_not_delete_it(table: Table) -> None:
    frozen = ManualClock(T0_MS)  # run-b's process stalls: its heartbeat never runs
    later = ManualClock(T0_MS + 11_000)  # the clock everyone else sees, past run-b's 10 s lease
    with pytest.raises(WriteError, match=r"expected it held by 'run-b' until released, got lost \(another driver"):
        with commit_lock(table.uri, table.s3, owner="run-b", ttl_s=10, wait_s=0, clock=frozen) as stalled:
            taker = acquire(table.uri, table.s3, owner="run-a", ttl_s=60, wait_s=0, clock=later)
            with pytest.raises(WriteError, match=r"expected it held by 'run-b', got lost \(another driver \('run-a'\)"):
                stalled.ensure_held()
    assert (table.read() or {})["owner"] == "run-a"  # run-b's release left run-a's lock alone
    taker.ensure_held()
    assert taker.release()
    assert table.read() is None


def test_an_unreadable_lock_is_refused_naming_it(table: Table) -> None:
    table.plant(owner="x", expires_ms=0)
    if table.kind == "local":
        Path(lock_key(table.uri)).parent.mkdir(parents=True, exist_ok=True)
        Path(lock_key(table.uri)).write_bytes(b"not json")
    else:
        table.client().put_object(Bucket=BUCKET, Key=table.key(), Body=b"not json")
    with pytest.raises(WriteError, match=r"_georank_commit.lock of table .*expected a JSON body .*got b'not json'"):
        acquire(table.uri, table.s3, owner="run-a", ttl_s=60, wait_s=0, clock=ManualClock(T0_MS))


# ----------------------------------------------------------------------------- S3 only


class _IgnoringClient:
    """An S3 client whose server ignores the named conditional headers of PutObject."""

    def __init__(self, client: Any, ignored: tuple[str, ...]) -> None:
        self._client, self._ignored = client, ignored

    def put_object(self, **kwargs: Any) -> Any:
        return self._client.put_object(**{k: v for k, v in kwargs.items() if k not in self._ignored})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("ignored", ["IfNoneMatch", "IfMatch"])
def test_a_server_without_conditional_writes_is_a_setup_error(s3_table: Table, monkeypatch: pytest.MonkeyPatch,
                                                              ignored: str) -> None:
    from georank.storage import lock_stores

    real = lock_stores.s3_client
    monkeypatch.setattr(lock_stores, "s3_client", lambda cfg: _IgnoringClient(real(cfg), (ignored,)))
    with pytest.raises(SetupError, match=f"ignores {ignored} on PutObject \\(expected 412 PreconditionFailed"):
        acquire(s3_table.uri, s3_table.s3, owner="run-a", ttl_s=60, wait_s=0, clock=ManualClock(T0_MS))
    assert s3_table.read() is None  # no lock left behind that would look like safety


def test_the_lease_runs_on_the_s3_servers_clock(s3_table: Table) -> None:
    """The default clock is the server's ``Date`` header: the lock's times lie within the Dates of
    responses before and after it, and a server clock an hour off is followed, not the host's."""
    from email.utils import parsedate_to_datetime

    def server_ms() -> int:
        headers = s3_table.client().list_objects_v2(Bucket=BUCKET, MaxKeys=1)["ResponseMetadata"]["HTTPHeaders"]
        return int(parsedate_to_datetime(headers["date"]).timestamp() * 1000)

    before = server_ms()
    with commit_lock(s3_table.uri, s3_table.s3, owner="run-a", ttl_s=30, wait_s=0):
        body = s3_table.read() or {}
        after = server_ms()
    assert body["clock"] == "s3-server"
    assert before <= body["acquired_ms"] < after + 1000
    assert body["expires_ms"] - body["acquired_ms"] == 30_000

    clock = ServerClock()
    hour_ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    sent = time.monotonic()
    clock.observe({"date": hour_ahead.strftime("%a, %d %b %Y %H:%M:%S GMT")}, sent, time.monotonic())
    stamp_ms = int(hour_ahead.replace(microsecond=0).timestamp() * 1000)
    assert stamp_ms <= clock.now_ms() <= stamp_ms + clock.uncertainty_ms() + int((time.monotonic() - sent) * 1000) + 1
    assert 1000 <= clock.uncertainty_ms()


def test_commit_lock_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"write.commit_lock: expected one of \['auto', 'on', 'off'\], got 'yes'"):
        lock_wanted("yes", "s3a://b/t")
    assert lock_wanted("auto", "s3a://b/t") and lock_wanted("auto", "file:///tmp/t") and not lock_wanted("off", "s3a://b/t")
    with pytest.raises(ConfigError, match="expected ttl_s > 0"):
        acquire("/tmp/unused", S3Config(), owner="x", ttl_s=0, wait_s=0)
