"""Issue 22 item 8: every artifact a run loads is pinned once, on the driver, and executors load
exactly that version or fail naming the artifact; the host's cache never deletes a version a live
process holds.

S3 objects live on moto's server on loopback (``ThreadedMotoServer``, one per module).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import fake_credentials, fresh_bucket

from georank import storage
from georank.config import GeorankConfig, S3Config
from georank.errors import RunError, StorageError
from georank.storage import cache as storage_cache
from georank.storage import pins as storage_pins

BUCKET = "models"
URI = f"s3://{BUCKET}/clip"


@pytest.fixture
def s3(s3_server: S3Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[S3Config, object]]:
    fake_credentials(monkeypatch)
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    with fresh_bucket(s3_server, BUCKET) as client:
        yield s3_server, client


def _put_model(client: object, weights: bytes) -> None:
    client.put_object(Bucket=BUCKET, Key="clip/config.json", Body=b'{"dim": 8}')  # type: ignore[attr-defined]
    client.put_object(Bucket=BUCKET, Key="clip/model.safetensors", Body=weights)  # type: ignore[attr-defined]


def _changed(uri: str, pinned: str) -> str:
    return (rf"^artifact {re.escape(uri)} changed during the run: expected the version pinned when the run started, "
            rf"{pinned}, found (?!{pinned})[0-9a-f]{{16}}; the run stops rather than mix two versions")


def _local_models(root: Path) -> dict[str, Path]:
    dirs = {"clip": root / "models" / "clip", "base": root / "models" / "ranker" / "base",
            "adapter": root / "models" / "ranker" / "adapter"}
    for name, d in dirs.items():
        (d / "sub").mkdir(parents=True)
        (d / "config.json").write_text(f'{{"name": "{name}"}}')
        (d / "sub" / "model.safetensors").write_bytes(name.encode() * 100)
    return dirs


def test_a_local_model_changed_after_pinning_fails_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    dirs = _local_models(tmp_path)
    cfg = GeorankConfig(project_root=str(tmp_path), embed={"model_uri": "models/clip"},
                        rank={"base_model_uri": "models/ranker/base", "adapter_uri": "file://" + str(dirs["adapter"])})
    pins = storage.pin_artifacts(cfg)
    assert sorted(pins) == sorted(str(d) for d in dirs.values())  # resolved: what the loaders ask for
    assert all(re.fullmatch(r"[0-9a-f]{16}", v) for v in pins.values()) and len(set(pins.values())) == 3
    base = str(dirs["base"])
    with storage.pinned(pins):
        assert storage.local_path(base, S3Config()) == dirs["base"]
        assert storage.local_path("file://" + str(dirs["adapter"]), S3Config()) == dirs["adapter"]  # one artifact, two spellings
        weights = dirs["base"] / "sub" / "model.safetensors"
        os.utime(weights, ns=(0, 10**18))  # touched, same bytes: still the pinned version
        assert storage.local_path(base, S3Config()) == dirs["base"]
        weights.write_bytes(b"published mid-run")
        with pytest.raises(RunError, match=_changed(base, pins[base])):
            storage.local_path(base, S3Config())
        weights.write_bytes(b"base" * 100)  # put back: the pinned version again
        assert storage.local_path(base, S3Config()) == dirs["base"]
        (dirs["base"] / "extra.safetensors").write_bytes(b"x")  # a file added is another version too
        with pytest.raises(RunError, match=_changed(base, pins[base])):
            storage.local_path(base, S3Config())
    assert storage.local_path(base, S3Config()) == dirs["base"]  # outside the run's pins: whatever is there
    with pytest.raises(RunError, match=_changed(base, pins[base])):  # or pinned explicitly
        storage.local_path(base, S3Config(), version=pins[base])


def test_pin_artifacts_lists_what_the_run_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    dirs = _local_models(tmp_path)
    (tmp_path / "heads.safetensors").write_bytes(b"h")
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "config.json").write_text("{}")
    cfg = GeorankConfig(
        project_root=str(tmp_path),
        embed={"model_uri": "models/clip", "kind": "g3", "heads_uri": "heads.safetensors"},
        rank={"base_model_uri": "models/ranker/base", "adapter_uri": "models/ranker/adapter"},
        candidates={"generated": {"enabled": True, "model_uri": "gen"}},
        evaluate={"compare_adapters": {"untrained": "models/ranker/base"}},
    )
    assert storage.pins.artifact_uris(cfg) == [str(dirs["clip"]), str(tmp_path / "heads.safetensors"), str(dirs["base"]),
                                               str(dirs["adapter"]), str(tmp_path / "gen")]
    assert storage.pins.artifact_uris(cfg, embed=False, compare_adapters=True) == [str(dirs["base"]), str(dirs["adapter"]),
                                                                                    str(tmp_path / "gen")]
    cfg = cfg.model_copy(update={"rank": cfg.rank.model_copy(update={"adapter_uri": "models/ranker/missing"})})
    with pytest.raises(StorageError, match=r"^artifact not found: expected a file or directory at .*/models/ranker/missing$"):
        storage.pin_artifacts(cfg)


def test_two_runs_pinning_one_artifact_differently_in_one_process_are_refused(tmp_path: Path) -> None:
    with storage.pinned({"s3://b/m": "aaaa"}):
        with storage.pinned({"s3a://b/m/": "aaaa"}):  # the same pin, spelt otherwise: fine
            assert storage.pinned_version("s3://b/m") == "aaaa"
        with pytest.raises(RunError, match=r"^artifact s3://b/m: expected one pinned version per process, got aaaa and bbbb"):
            with storage.pinned({"s3://b/m": "bbbb"}):
                pass
        assert storage.pinned_version("s3://b/m") == "aaaa"
    assert storage.pinned_version("s3://b/m") is None


def test_overlapping_pinned_blocks_on_two_threads_release_only_their_own_pins() -> None:
    """Thread A pins the model; thread B pins the model and the adapter; A ends first. B's pins must
    hold until B ends (a block that restored a snapshot of the pins on exit dropped them), and
    nothing stays pinned after both."""
    import threading

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def run_a() -> None:
        with storage.pinned({"s3://b/model": "m1"}):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def run_b() -> None:
        a_in.wait(10)
        with storage.pinned({"s3://b/model": "m1", "s3://b/adapter": "a1"}):
            b_in.set()
            a_out.wait(10)
            seen["after_a"] = (storage.pinned_version("s3://b/model"), storage.pinned_version("s3://b/adapter"))

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert a_out.is_set() and seen["after_a"] == ("m1", "a1")
    assert storage.pinned_version("s3://b/model") is None and storage.pinned_version("s3://b/adapter") is None


def test_an_s3_model_replaced_mid_run(s3: tuple[S3Config, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, client = s3
    _put_model(client, b"weights v1")
    pins = {URI: storage.artifact_version(URI, cfg)}
    with storage.pinned(pins):
        first = storage.local_path(URI, cfg)
    assert first.name == pins[URI] and (first / "model.safetensors").read_bytes() == b"weights v1"
    _put_model(client, b"weights v2")  # published while the run goes on

    listings: list[str] = []
    real = storage_cache.s3_objects

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        listings.append(kwargs["uri"])
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_cache, "s3_objects", counting)
    with storage.pinned(pins):  # a host that has the pinned version: that copy, without listing the prefix
        assert storage.local_path(URI, cfg) == first and listings == []
    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "another-host"))
    with storage.pinned(pins), pytest.raises(RunError, match=_changed(URI, pins[URI])):
        storage.local_path(URI, cfg)  # a host that has not: it lists, finds v2 and stops
    assert listings == [URI]
    assert not (tmp_path / "another-host" / "s3").exists() or not any(
        p.name == pins[URI] for p in (tmp_path / "another-host" / "s3").rglob("*"))
    later = storage.local_path(URI, cfg)  # the next run (nothing pinned here): v2
    assert (later / "model.safetensors").read_bytes() == b"weights v2"


HOLD = """
import sys
from georank import storage
from georank.config import S3Config
path = storage.local_path(sys.argv[2], S3Config(endpoint_url=sys.argv[1], path_style=True))
print(path, flush=True)
sys.stdin.read()  # holds the version until the test closes stdin
"""


def test_a_version_a_live_process_holds_is_never_removed(s3: tuple[S3Config, object]) -> None:
    cfg, client = s3
    _put_model(client, b"weights v1")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cfg.endpoint_url), URI],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held = Path(holder.stdout.readline().strip())  # type: ignore[union-attr]
        assert (held / "model.safetensors").read_bytes() == b"weights v1"
        _put_model(client, b"weights v2")
        v2 = storage.local_path(URI, cfg)  # downloads v2, then cleans up: v1 is in use
        assert v2 != held and held.exists() and (held / "model.safetensors").read_bytes() == b"weights v1"
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait()
    assert holder.returncode == 0
    _put_model(client, b"weights v3")
    v3 = storage.local_path(URI, cfg)  # nobody holds v1 now; this process moved from v2 to v3
    base = v3.parent
    assert sorted(p.name for p in base.iterdir()) == [".holders", ".lock", v3.name]
    assert sorted(p.name for p in (base / ".holders").iterdir()) == [v3.name]


def test_a_lease_removed_while_a_process_waits_for_it_is_taken_again_on_the_new_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cleaner removes a version and its lease file under an exclusive lock; a process that was
    waiting for that lock must not end up holding the removed file (the next cleaner would not see
    its lease): it locks the file now at that path instead.

    The waiter's real ``flock`` calls are watched (``storage.host``'s ``fcntl``): its first lock
    must be on the cleaner's file and find it taken (it blocks there) before the cleaner removes it
    and lets go; then it must lock again, on the new file at that path."""
    import fcntl
    import threading
    import types

    lease = tmp_path / ".holders" / "v1"
    cleaner = storage.host.lock_file(lease, fcntl.LOCK_EX)
    assert cleaner is not None
    old_inode = os.fstat(cleaner).st_ino
    calls: list[tuple[int, bool]] = []  # the waiter's flock calls: (inode locked, whether it had to wait)
    blocked = threading.Event()

    def flock(fd: int, how: int) -> None:
        if threading.current_thread().name != "waiter" or how & fcntl.LOCK_NB:
            return fcntl.flock(fd, how)
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)  # taken now? then it would wait: say so, then wait
            calls.append((os.fstat(fd).st_ino, False))
            return None
        except BlockingIOError:
            calls.append((os.fstat(fd).st_ino, True))
            blocked.set()
            return fcntl.flock(fd, how)

    watched = types.SimpleNamespace(**{k: getattr(fcntl, k) for k in dir(fcntl) if k.isupper()}, flock=flock)
    monkeypatch.setattr(storage.host, "fcntl", watched)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(storage.host.lock_file(lease, fcntl.LOCK_SH) or -1),
                              name="waiter")
    waiter.start()
    assert blocked.wait(10), f"expected the waiter to block on the cleaner's lease, got its flock calls {calls}"
    lease.unlink()  # the cleaner removed the version: its lease goes with it
    os.close(cleaner)
    waiter.join(10)
    assert not waiter.is_alive() and got and got[0] >= 0
    assert calls[0] == (old_inode, True), f"expected the waiter blocked on the removed lease first, got {calls}"
    assert lease.exists(), "expected the waiter to hold a lease file at the path again, got no file there"
    held, now = os.fstat(got[0]), os.stat(lease)
    assert (held.st_ino, held.st_dev) == (now.st_ino, now.st_dev), (
        f"expected the waiter to hold the new lease file (inode {now.st_ino}), got inode {held.st_ino} "
        f"(the removed one: {old_inode})")
    assert calls[1:] == [(now.st_ino, False)], f"expected one more lock, on the new file, got {calls}"
    assert storage.host.lock_file(lease, fcntl.LOCK_EX | fcntl.LOCK_NB) is None  # a cleaner sees the lease
    os.close(got[0])
    assert storage_pins.pinned_version(URI) is None


# ----------------------------------------------------------------------------- a real loader, in-process and on executors


def test_the_embedder_loads_its_pinned_version_or_stops_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from georank import resources
    from georank.embed import build_tiny_clip, get_embedder

    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    model = build_tiny_clip(tmp_path / "clip", image_size=32)
    cfg = GeorankConfig(project_root=str(tmp_path), embed={"model_uri": "clip", "image_size": 32})
    uri = cfg.resolve("clip")
    pins = {uri: storage.artifact_version(uri, cfg.s3)}
    resources.clear()
    try:
        with storage.pinned(pins):
            first = get_embedder(cfg)
            assert get_embedder(cfg) is first  # once per worker and pinned version
        (model / "notes.txt").write_text("published after the driver pinned the model")
        resources.clear()  # a worker that had not loaded it yet
        with storage.pinned(pins), pytest.raises(RunError, match=_changed(uri, pins[uri])):
            get_embedder(cfg)
        new_pins = {uri: storage.artifact_version(uri, cfg.s3)}  # the next run pins the new version
        with storage.pinned(new_pins):
            assert get_embedder(cfg) is not first
    finally:
        resources.clear()


@pytest.mark.spark
def test_a_model_changed_after_the_driver_pinned_it_stops_the_spark_job_naming_it(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The pins travel with the job as plain values; each Python worker checks what it loads."""
    import pyarrow as pa

    from georank.embed import build_tiny_clip
    from georank.spark.executors import executor_errors, on_executors

    model = build_tiny_clip(tmp_path / "clip", image_size=32)
    cfg = GeorankConfig(project_root=str(tmp_path), embed={"model_uri": str(model), "image_size": 32})
    artifacts = {str(model): storage.artifact_version(str(model), cfg.s3)}  # on the driver, once

    def embed_versions(table: pa.Table, c: GeorankConfig) -> pa.Table:
        from georank.embed import get_embedder

        with storage.pinned(artifacts):
            version = get_embedder(c).version
        return pa.table({"photo_id": table.column("photo_id"), "embed_version": [version] * table.num_rows})

    photos = spark.createDataFrame([("a",), ("b",), ("c",)], "photo_id string").repartition(2)
    job = photos.mapInArrow(on_executors(cfg.model_dump(), embed_versions, accelerator=False),
                            "photo_id string, embed_version string")
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:-1] + b"\0")  # re-published
    with pytest.raises(RunError, match=rf"artifact {re.escape(str(model))} changed during the run: expected the version "
                       rf"pinned when the run started, {artifacts[str(model)]}, found [0-9a-f]{{16}}"):
        with executor_errors():
            job.collect()
