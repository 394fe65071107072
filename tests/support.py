"""Helpers shared by the end-to-end tests: a tiny demo world and configs that point at it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

# A world small enough for tests: 120 gallery photos, 10 queries, 2 shards.
TINY_DEMO = {"ensure": True, "gallery_photos": 120, "query_photos": 10, "seed": 3}


def tiny_conf(world: Path, out: Path, **sections: dict[str, Any]) -> Path:
    """Write a config YAML at ``out`` whose demo world, models and index live under ``world``
    (shared, built once) and whose tables live next to ``out`` (per test)."""
    tables = out.parent / (out.stem + "-tables")
    tree: dict[str, Any] = {
        "spark": {
            "master": "local[2]",
            "conf": {
                "spark.sql.shuffle.partitions": "2",
                "spark.ui.enabled": "false",
                "spark.driver.memory": "2g",
                "spark.databricks.delta.snapshotPartitions": "2",
            },
        },
        "tables": {
            "results": str(tables / "results"),
            "gallery": str(world / "gallery.parquet"),
            "gallery_embeddings": str(tables / "gallery_embeddings"),
            "gallery_errors": str(tables / "gallery_errors"),
            "runs": str(tables / "runs"),
        },
        "input": {"photos": str(world / "queries"), "photos_per_partition": 5},
        "embed": {"model_uri": str(world / "models" / "clip"), "batch_size": 16},
        "index": {"uri": str(world / "index"), "shards": 2},
        "rank": {
            "base_model_uri": str(world / "models" / "ranker" / "base"),
            "adapter_uri": str(world / "models" / "ranker" / "adapter"),
            "max_pixels": 50176,
            "photos_per_batch": 4,
        },
        "demo": {**TINY_DEMO, "root": str(world)},
    }
    for key, value in sections.items():
        node = tree.setdefault(key, {})
        node.update(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(tree, sort_keys=False))
    return out


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3-protocol server on 127.0.0.1 (a free port) for one block; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        yield f"http://{host}:{port}"
    finally:
        server.stop()


# Credentials boto3 finds in the environment for a local S3 server (and no instance-metadata probe).
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def fake_credentials(monkeypatch: Any) -> None:
    """Set :data:`TEST_CREDENTIALS` for one test (``monkeypatch``: pytest's, or a ``pytest.MonkeyPatch()``)."""
    for var, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(var, value)


@contextlib.contextmanager
def fresh_bucket(s3: Any, bucket: str) -> Iterator[Any]:
    """A new bucket on the S3 server of ``s3`` (an S3Config) for one block; yields the client and
    empties and removes the bucket afterwards."""
    from georank import storage

    client = storage.s3_client(s3)
    client.create_bucket(Bucket=bucket)
    try:
        yield client
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


class ManualClock:
    """A clock of the commit lock (``georank.storage.clocks.LockClock``) moved by hand:
    :meth:`advance` wakes the waits it reaches, and :meth:`wait_for_waiters` lets a test know a
    thread is parked (``why``: ``poll``, ``heartbeat``)."""

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
