"""The geotag job through ./spark-submit.sh on a real Spark standalone cluster on loopback.

The test starts a master and two workers with pyspark's own ``bin/spark-class`` (no
daemon scripts, no SSH), each worker announcing one fake GPU through the project's
``scripts/gpu_discovery.sh`` (``GEORANK_FAKE_GPUS=1`` in the worker's environment), so the
accelerator stage's stage-level ResourceProfile is scheduled for real. It then submits the
job as a subprocess, reads the Delta output with the second engine (``deltalake``), and
checks from the event log and the executors' logs that the tasks ran on the workers'
executors with a GPU address assigned. The cluster is always torn down, even on failure.

Everything binds to 127.0.0.1; the cluster is small (1 core, 1 GPU, ~1 GB per worker).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, tiny_conf

from georank.results import read_errors, read_predictions

pytestmark = pytest.mark.slow
DAY = dt.date(2026, 11, 23)
N_WORKERS = 2
LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Cluster:
    """A standalone master and its workers, each a process group started by the test."""

    url: str
    ui: str
    logs: Path
    work_dirs: list[Path]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as resp:
            data: dict[str, Any] = json.load(resp)
            return data

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        """Stop the processes this test started (workers first; each kills its executors),
        by process group, then wait for them."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        # its own process group, so that teardown reaches the JVM and whatever it forked
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and two workers on 127.0.0.1, each worker with 1 core, 1 GB and 1 fake GPU."""
    base = tmp_path_factory.mktemp("standalone")
    spark_home = _spark_home()
    spark_class = str(spark_home / "bin" / "spark-class")
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_DAEMON_MEMORY": "256m",
        # read by the workers' discovery script (the workers run it, not the executors)
        "GEORANK_FAKE_GPUS": "1",
    }
    master_port, master_ui = _free_port(), _free_port()
    c = Cluster(url=f"spark://{LOOPBACK}:{master_port}", ui=f"http://{LOOPBACK}:{master_ui}", logs=base, work_dirs=[])
    try:
        c.procs.append(
            _start(
                [spark_class, "org.apache.spark.deploy.master.Master",
                 "--host", LOOPBACK, "--port", str(master_port), "--webui-port", str(master_ui)],
                env, base / "master.log",
            )
        )
        worker_env = {
            **env,
            # GPUs the worker offers to executors, found by the project's discovery script
            "SPARK_WORKER_OPTS": " ".join([
                "-Dspark.worker.resource.gpu.amount=1",
                f"-Dspark.worker.resource.gpu.discoveryScript={ROOT / 'scripts' / 'gpu_discovery.sh'}",
                "-Dspark.worker.cleanup.enabled=false",
            ]),
        }
        for i in range(N_WORKERS):
            work = base / f"worker{i}"
            work.mkdir()
            c.work_dirs.append(work)
            c.procs.append(
                _start(
                    [spark_class, "org.apache.spark.deploy.worker.Worker",
                     "--host", LOOPBACK, "--port", str(_free_port()), "--webui-port", str(_free_port()),
                     "--cores", "1", "--memory", "1g", "--work-dir", str(work), c.url],
                    worker_env, base / f"worker{i}.log",
                )
            )
        deadline = time.monotonic() + 180
        alive: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            dead = [p.args for p in c.procs if p.poll() is not None]
            assert not dead, f"a cluster process exited at start: {dead}\n{c.diagnostics()}"
            try:
                alive = [w for w in c.state().get("workers", []) if w.get("state") == "ALIVE"]
            except OSError:
                alive = []
            if len(alive) == N_WORKERS:
                break
            time.sleep(1)
        assert len(alive) == N_WORKERS, f"expected {N_WORKERS} alive workers, got {len(alive)}\n{c.diagnostics()}"
        yield c
    finally:
        c.stop()


def _events(event_dir: Path) -> list[dict[str, Any]]:
    """The application's events (one uncompressed, non-rolling event log file)."""
    logs = [p for p in event_dir.iterdir() if p.is_file()]
    assert len(logs) == 1, f"expected one event log, got {logs}"
    return [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]


def test_geotag_on_standalone_cluster_with_gpu_profile(cluster: Cluster, tiny_world: Path, tmp_path: Path) -> None:
    conf = tiny_conf(tiny_world, tmp_path / "cluster.yaml", input={"photos_per_partition": 5})
    event_dir = tmp_path / "events"
    event_dir.mkdir()
    cmd = [
        str(ROOT / "spark-submit.sh"),
        "--master", cluster.url,
        "--conf", "spark.executor.cores=1",
        "--conf", "spark.executor.memory=640m",
        "--conf", "spark.driver.host=" + LOOPBACK,
        "--conf", "spark.eventLog.enabled=true",
        "--conf", f"spark.eventLog.dir=file://{event_dir}",
        "--conf", "spark.eventLog.compress=false",
        "--conf", "spark.eventLog.rolling.enabled=false",
        "--conf", "spark.ui.enabled=false",
        # Delta rebuilds a table's snapshot in 50 tasks by default: too many for 2 tiny executors
        "--conf", "spark.databricks.delta.snapshotPartitions=2",
        "jobs/geotag.py", "--conf", str(conf), "--run-date", DAY.isoformat(),
        # the GPU path: executors offer spark.gpu.executor_amount GPUs, found by the discovery
        # script (session.spark_conf); the accelerator stage's task-only profile asks for one
        "--set", "spark.gpu.enabled=true",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "GEORANK_FAKE_GPUS")}
    env["SPARK_LOCAL_IP"] = LOOPBACK
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    diag = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}\n{cluster.diagnostics()}"
    assert proc.returncode == 0, diag
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "ok", diag
    assert summary["read"] == 10 and summary["predicted"] + summary["errors"] == summary["read"], summary

    # The output, read back by the second engine (delta-rs).
    cfg_tables = tmp_path / "cluster-tables"
    preds = read_predictions(str(cfg_tables / "results")).to_pylist()
    errors = read_errors(str(cfg_tables / "results")).to_pylist()
    assert len(preds) == summary["predicted"] and len(errors) == summary["errors"]
    assert len({r["photo_id"] for r in preds}) == len(preds)
    assert len(preds) + len(errors) == summary["read"]
    for row in preds:
        for col in ("model_version", "adapter_version", "embed_version", "index_version", "run_id"):
            assert row[col], (col, row["photo_id"])
        assert row["run_id"] == summary["run_id"] and row["run_date"] == DAY

    # Where the tasks ran: executors of the workers (never the driver), each with a GPU address,
    # and the accelerator stage under a profile that asks each task for a GPU.
    events = _events(event_dir)
    executors = {
        e["Executor ID"]: e["Executor Info"]
        for e in events
        if e["Event"] == "SparkListenerExecutorAdded"
    }
    assert len(executors) == N_WORKERS, executors
    for info in executors.values():
        assert info["Host"] == LOOPBACK
        assert info["Resources"]["gpu"]["addresses"] == ["0"], info
    task_executors = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert task_executors and task_executors <= set(executors), task_executors
    default_profile = [
        e for e in events if e["Event"] == "SparkListenerResourceProfileAdded" and e["Resource Profile Id"] == 0
    ]
    assert default_profile and default_profile[0]["Executor Resource Requests"]["gpu"]["Amount"] == 1, default_profile
    gpu_profiles = {
        e["Resource Profile Id"]
        for e in events
        if e["Event"] == "SparkListenerResourceProfileAdded" and "gpu" in e.get("Task Resource Requests", {})
    }
    assert gpu_profiles, "no ResourceProfile asking tasks for a GPU was registered"
    gpu_stages = [
        e["Stage Info"] for e in events
        if e["Event"] == "SparkListenerStageCompleted" and e["Stage Info"].get("Resource Profile Id") in gpu_profiles
    ]
    assert gpu_stages and all("Failure Reason" not in s for s in gpu_stages), gpu_stages
    gpu_tasks = [
        e["Task Info"] for e in events
        if e["Event"] == "SparkListenerTaskEnd" and e["Stage ID"] in {s["Stage ID"] for s in gpu_stages}
    ]
    assert gpu_tasks and all(t["Executor ID"] in executors for t in gpu_tasks), gpu_tasks

    # The job's own word, from the executors' logs in the workers' work dirs.
    executor_logs = [p for w in cluster.work_dirs for p in w.glob("*/*/stderr")]
    on_gpu = [line for p in executor_logs for line in p.read_text(errors="replace").splitlines() if "runs on GPU" in line]
    assert on_gpu, f"no 'runs on GPU' line in {executor_logs}"
    assert all(line.rstrip().endswith("runs on GPU 0") for line in on_gpu), on_gpu
