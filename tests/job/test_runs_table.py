"""The runs table (tables.runs): one row per run of every job, failed runs included, written by
georank.cli.run_job when the run ends; read back with the second engine (delta-rs)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from support import tiny_conf

from georank import schema as S
from georank.cli import run_job
from georank.runs import record_run, run_row, runs_table

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 11, 23, 2, 5, tzinfo=dt.UTC)


def _geotag_job():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("geotag_job", ROOT / "jobs" / "geotag.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    job = _geotag_job()
    code = run_job("geotag", job.main, add_args=job.add_args, argv=argv)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the summary is the last line


def _runs(uri: str) -> dict[str, dict[str, Any]]:
    from deltalake import DeltaTable

    table = DeltaTable(uri)
    assert table.schema().to_arrow().names == S.RUNS.names
    return {r["run_id"]: r for r in table.to_pyarrow_table().to_pylist()}


# --- the row, from a summary (no Spark) ---------------------------------------------------------


def test_run_row_of_an_ok_and_a_failed_summary() -> None:
    ok = {"job": "geotag", "run_id": "geotag-1", "status": "ok", "read": 10, "predicted": 9, "errors": 1,
          "seconds": {"input": 1.5, "compute": 20.0, "write": 2}, "seconds_total": 25.1, "run_date": "2026-11-23",
          "backlog": {"untagged": 180, "taken": 120, "left": 60, "nights_to_drain": 0.5, "note": "text"},
          "versions": {"adapter": "a1", "model": "m1"}, "index_version": "idx7", "table_version": 3}
    row = run_row(ok, exit_code=0, started_at=T0, ended_at=T1)
    assert (row["status"], row["error"], row["run_date"]) == ("ok", None, dt.date(2026, 11, 23))
    assert (row["read"], row["predicted"], row["errors"]) == (10, 9, 1)
    assert dict(row["seconds"]) == {"input": 1.5, "compute": 20.0, "write": 2.0}
    assert dict(row["backlog"]) == {"untagged": 180.0, "taken": 120.0, "left": 60.0, "nights_to_drain": 0.5}
    versions = dict(row["versions"])
    assert versions["adapter"] == "a1" and versions["model"] == "m1" and versions["index"] == "idx7"
    assert "georank" in versions and "table" not in versions  # a Delta version number is no model version
    assert json.loads(row["summary"]) == ok

    failed = {"job": "geotag", "run_id": "geotag-2", "status": "failed", "error": "RunError: expected at most 50%"}
    row = run_row(failed, exit_code=1, started_at=T0, ended_at=T1, run_date=dt.date(2026, 11, 24))
    assert (row["status"], row["error"], row["exit_code"], row["run_date"]) == (
        "failed", "RunError: expected at most 50%", 1, dt.date(2026, 11, 24))
    assert row["read"] is None and row["seconds"] is None and row["backlog"] is None
    table = runs_table([row])  # the declared types hold
    assert table.schema.equals(S.RUNS, check_metadata=True)
    night = {"job": "geotag", "run_id": "geotag-3", "status": "ok", "catalogue": {
        "uri": "/cat", "untagged": 180, "taken": 120, "left": 60, "backlog": "180 untagged: 120 taken, 60 left",
        "versions": {"model": "m1", "adapter": "a2"}}}
    row = run_row(night, exit_code=0, started_at=T0, ended_at=T1)  # a catalogue night: its backlog and versions
    assert dict(row["backlog"]) == {"untagged": 180.0, "taken": 120.0, "left": 60.0}
    assert dict(row["versions"])["adapter"] == "a2"
    odd = run_row({"job": "x", "run_id": "x-1", "read": "ten", "predicted": True}, exit_code=2, started_at=T0, ended_at=T1)
    assert (odd["status"], odd["error"], odd["read"], odd["predicted"]) == ("failed", "exit code 2", None, None)


def test_no_config_no_row(caplog: pytest.LogCaptureFixture) -> None:
    """A config error (exit 2 before any config exists) writes no row: there is no tables.runs."""
    with caplog.at_level(logging.INFO, logger="georank.runs"):
        assert record_run(None, {"job": "geotag", "run_id": "r"}, exit_code=2, started_at=T0, ended_at=T1) is False
    assert "no config was loaded, so no row in the runs table" in caplog.text


def test_a_config_error_writes_no_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import georank.runs

    calls: list[Any] = []
    monkeypatch.setattr(georank.runs, "append_run", lambda *a, **k: calls.append(a))
    code, summary = _run(["--conf", str(tmp_path / "missing.yaml"), "--run-date", "2026-11-23"], capsys)
    assert code == 2 and summary["status"] == "failed" and calls == []


# --- through the job entry point (Spark) --------------------------------------------------------


@pytest.mark.spark
def test_ok_and_failed_geotag_runs_each_leave_one_row(spark, tiny_world: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", input={"photos_per_partition": 5})
    from georank.config import load_config

    cfg = load_config(conf)
    runs_uri = cfg.resolve(cfg.tables.runs or "")
    code, ok = _run(["--conf", str(conf), "--run-date", "2026-11-23"], capsys)
    assert code == 0, ok
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(4):
        (bad / f"not-a-photo-{i}.jpg").write_text(f"a list of ids, not an image {i}")
    code, failed = _run(["--conf", str(conf), "--run-date", "2026-11-24", "--photos", str(bad)], capsys)
    assert code == 1 and failed["status"] == "failed"
    code, missing = _run(["--conf", str(conf), "--run-date", "2026-11-25", "--photos", str(tmp_path / "no-such-folder")],
                         capsys)
    assert code == 1 and missing["status"] == "failed"

    runs = _runs(runs_uri)
    assert set(runs) == {ok["run_id"], failed["run_id"], missing["run_id"]}  # one row per run
    row = runs[ok["run_id"]]
    assert (row["job"], row["status"], row["error"], row["exit_code"]) == ("geotag", "ok", None, 0)
    assert row["run_date"] == dt.date(2026, 11, 23)
    assert (row["read"], row["predicted"], row["errors"]) == (ok["read"], ok["predicted"], ok["errors"]) == (10, 10, 0)
    assert dict(row["seconds"]) == ok["seconds"] and set(ok["seconds"]) >= {"input", "compute", "write"}
    assert row["seconds_total"] == ok["seconds_total"] and row["started_at"] <= row["ended_at"]
    assert "georank" in dict(row["versions"])
    assert json.loads(row["summary"]) == ok  # the summary line, unchanged by writing the row

    row = runs[failed["run_id"]]
    assert (row["status"], row["exit_code"], row["run_date"]) == ("failed", 1, dt.date(2026, 11, 24))
    assert row["error"] == failed["error"]
    assert row["error"].startswith("RunError: run ") and "expected at most 50% of the photos to fail" in row["error"]
    assert "stage decode: not an image" in row["error"]
    row = runs[missing["run_id"]]
    assert row["status"] == "failed" and row["error"] == missing["error"] and "no-such-folder" in row["error"]
    assert row["read"] is None and row["run_date"] == dt.date(2026, 11, 25)

    # the data engineers' notebook shows the last nights from it (newest first)
    nb = json.loads((ROOT / "notebooks" / "georank_tables.ipynb").read_text())
    ns: dict[str, Any] = {}
    import os

    env = {"GEORANK_RESULTS": cfg.resolve(cfg.tables.results), "GEORANK_RUNS": runs_uri, "GEORANK_HEADLESS": "1",
           "GEORANK_TRUTH": str(tiny_world / "queries_truth.parquet"), "GEORANK_MAP_PNG": str(tmp_path / "map.png")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), "notebook", "exec"), ns)  # noqa: S102 - our own notebook
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    last = ns["last_nights"]
    assert list(last["run_id"]) == [missing["run_id"], failed["run_id"], ok["run_id"]]  # type: ignore[index]
    assert list(last["status"]) == ["failed", "failed", "ok"]  # type: ignore[index]
    by_country = ns["by_country"]
    assert by_country["photos"].sum() == 10  # type: ignore[index]


@pytest.mark.spark
def test_a_runs_row_that_cannot_be_written_changes_nothing(spark, tiny_world: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           capsys: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The runs table's path is a plain file: the row cannot be written; the run's exit code and
    summary line are those of the run, and the failure is a warning."""
    blocker = tmp_path / "runs-is-a-file"
    blocker.write_text("not a table")
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", tables={"runs": str(blocker)})
    with caplog.at_level(logging.WARNING, logger="georank.runs"):
        code, summary = _run(["--conf", str(conf), "--run-date", "2026-11-25", "--photos", str(tmp_path / "nothing")],
                             capsys)
    assert code == 1 and summary["status"] == "failed" and "nothing" in summary["error"]
    assert set(summary) - {"demo"} == {"job", "run_id", "status", "error", "seconds_total"}  # nothing of the runs row
    assert "could not append its row to the runs table (tables.runs)" in caplog.text
    assert blocker.read_text() == "not a table"
