"""Shared fixtures: ONE Spark session for the whole test run (starting one costs ~10 s)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """The run's host cache (downloaded s3:// artifacts, file digests) in a temporary folder, never
    the user's ~/.cache/georank; set before any Spark or spark-submit process inherits the env."""
    if "GEORANK_CACHE" not in os.environ:
        os.environ["GEORANK_CACHE"] = tempfile.mkdtemp(prefix="georank-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop("GEORANK_CACHE"), ignore_errors=True))


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def local_cfg():
    from georank.config import load_config

    return load_config(ROOT / "conf" / "local.yaml")


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """The test run's Spark session: local[2], real Delta jars, small shuffles, no UI."""
    from georank.config import load_config
    from georank.spark.session import get_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    cfg = load_config(
        ROOT / "conf" / "local.yaml",
        [
            "spark.master=local[2]",
            "spark.conf={'spark.sql.shuffle.partitions': '2', 'spark.ui.enabled': 'false', "
            f"'spark.sql.warehouse.dir': '{warehouse}', 'spark.driver.memory': '2g', "
            "'spark.ui.showConsoleProgress': 'false', 'spark.databricks.delta.snapshotPartitions': '2'}",
        ],
    )
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny demo world with tiny models and a 2-shard index, built once per test run."""
    from support import tiny_conf

    from georank.config import load_config
    from georank.demo.setup import ensure_demo

    world = tmp_path_factory.mktemp("tiny-world")
    conf = tiny_conf(world, world / "build.yaml")
    ensure_demo(load_config(conf))
    return world
