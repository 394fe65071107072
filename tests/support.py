"""Helpers shared by the end-to-end tests: a tiny demo world and configs that point at it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
