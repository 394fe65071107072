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
    assert "georank: unknown config key 'rank.max_pixel' in conf/local.yaml with --set rank.max_pixel; valid keys under rank:" in r.stderr
    assert "SparkContext" not in r.stderr  # no JVM was started
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["job"] == "geotag" and summary["status"] == "failed" and "rank.max_pixel" in summary["error"]


def test_bad_set_value_and_form() -> None:
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--set", "rank.device=tpu", "--run-date", "2026-11-23")
    assert r.returncode == 2 and "config key 'rank.device' in conf/local.yaml with --set rank.device: expected one of 'cpu' or 'cuda', got a string" in r.stderr
    assert "tpu" not in r.stderr + r.stdout  # a value given with --set is never printed back
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--set", "rank.device", "--run-date", "2026-11-23")
    assert r.returncode == 2 and "bad --set 'rank.device': expected KEY=VALUE" in r.stderr


def test_missing_config_file() -> None:
    r = _submit("jobs/geotag.py", "--conf", "conf/nope.yaml", "--run-date", "2026-11-23")
    assert r.returncode == 2 and "config file not found: conf/nope.yaml" in r.stderr


# --- issue 22 item 9: --run-date accepts exactly YYYY-MM-DD ----------------------------------------


def _job(name: str):  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_job_{name}", ROOT / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_date_arg_accepts_exactly_yyyy_mm_dd() -> None:
    import argparse
    import datetime as dt

    import pytest

    from georank.cli import run_date_arg

    assert run_date_arg("2026-11-23") == dt.date(2026, 11, 23)
    for bad in ("20261123", "2026-W47-1", "2026-11-23T00:00", "2026-1-3", " 2026-11-23", "2026-11-23\n"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a date as YYYY-MM-DD \(e\.g\. 2026-11-23\), got "):
            run_date_arg(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^expected a calendar date as YYYY-MM-DD, got '2026-02-30' \(day is out of range"):
        run_date_arg("2026-02-30")


def test_every_job_with_a_run_date_parses_it_with_run_date_arg() -> None:
    """One parser for every job: no job keeps date.fromisoformat (which takes 20261123 and 2026-W47-1)."""
    from georank.cli import run_date_arg

    with_dates = []
    for path in sorted((ROOT / "jobs").glob("*.py")):
        src = path.read_text()
        assert "fromisoformat" not in src, f"{path.name} parses a date with fromisoformat"
        if "--run-date" in src:
            with_dates.append(path.stem)
    assert {"geotag", "build_index"} <= set(with_dates)
    import argparse

    for name in with_dates:
        parser = argparse.ArgumentParser()
        _job(name).add_args(parser)
        action = next(a for a in parser._actions if "--run-date" in a.option_strings)
        assert action.type is run_date_arg, name


def test_a_run_date_in_another_form_exits_2_naming_the_form(capsys) -> None:  # type: ignore[no-untyped-def]
    from georank.cli import run_job

    ran = []
    geotag = _job("geotag")
    for bad in ("20261123", "2026-W47-1"):
        code = run_job("geotag", lambda *a: ran.append(a), add_args=geotag.add_args,
                       argv=["--conf", "conf/local.yaml", "--run-date", bad])
        out = capsys.readouterr()
        assert code == 2 and not ran
        assert f"argument --run-date: expected a date as YYYY-MM-DD (e.g. 2026-11-23), got '{bad}'" in out.err
        summary = json.loads(out.out.strip().splitlines()[-1])
        assert summary["status"] == "failed"


def test_a_bad_run_date_fails_before_spark_starts() -> None:
    r = _submit("jobs/geotag.py", "--conf", "conf/local.yaml", "--run-date", "20261123")
    assert r.returncode == 2
    assert "argument --run-date: expected a date as YYYY-MM-DD (e.g. 2026-11-23), got '20261123'" in r.stderr
    assert "SparkContext" not in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["job"] == "geotag" and summary["status"] == "failed" and "--run-date" in summary["error"]
