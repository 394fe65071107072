"""spark-submit.sh: a job that does not exist or a bad --set fails fast, non-zero, with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _submit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GEORANK_SKIP_SETUP": "1"}
    return subprocess.run([str(ROOT / "spark-submit.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_missing_job() -> None:
    r = _submit("jobs/nope.py", "--conf", "conf/local.yaml")
    assert r.returncode == 2
    assert "spark-submit.sh: no such job: jobs/nope.py (expected a file under jobs/; jobs: " in r.stderr
    assert "geotag" in r.stderr


def test_no_job_given() -> None:
    r = _submit("--master", "local[1]")
    assert r.returncode == 2 and "no job given; usage: ./spark-submit.sh" in r.stderr


def test_bad_set_fails_before_spark_starts() -> None:
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--set", "rank.max_pixel=3", "--run-date", "2026-11-23")
    assert r.returncode == 2
    assert "georank: unknown config key 'rank.max_pixel' in conf/local.yaml with --set rank.max_pixel=3; valid keys under rank:" in r.stderr
    assert "SparkContext" not in r.stderr  # no JVM was started
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["job"] == "geotag" and summary["status"] == "failed" and "rank.max_pixel" in summary["error"]


def test_bad_set_value_and_form() -> None:
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--set", "rank.device=tpu", "--run-date", "2026-11-23")
    assert r.returncode == 2 and "config key 'rank.device' in conf/local.yaml with --set rank.device=tpu: expected one of 'cpu' or 'cuda', got 'tpu'" in r.stderr
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--set", "rank.device", "--run-date", "2026-11-23")
    assert r.returncode == 2 and "bad --set 'rank.device': expected KEY=VALUE" in r.stderr


def test_missing_config_file() -> None:
    r = _submit("jobs/geotag.py", "--conf", "conf/nope.yaml", "--run-date", "2026-11-23")
    assert r.returncode == 2 and "config file not found: conf/nope.yaml" in r.stderr
