"""Crashes and reruns for real: the geotag job through ./spark-submit.sh as a subprocess,
SIGKILLed (its whole process group: the driver JVM, the Python driver and its workers) at
several points, rerun, a Python worker killed mid-task, two runs of one date at once.

One module-scoped sequence of runs on one date over the same photos (4 good, 1 bad):

    run 1   undisturbed                                   -> the reference output
    run 2   killed at "committing predictions"            -> errors one run ahead, predictions old or new
    run 3   killed while decoding (after its start rolled run 2 forward)
    run 4   killed while ranking
    run 5   killed at "committing errors"
    run 6   complete, with a Python worker killed once mid-task (GEORANK_FAULT_INJECT)
    run 7+8 started at once

After each step every table holds exactly one complete run for the date (never a part of
one) and, once a run completes, exactly one row per photo. Every run carries dummy AWS keys
in its environment; no output may contain them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, tiny_conf

from georank.write import read_arrow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # ~8 spark-submit runs in one fixture
DAY = dt.date(2026, 11, 26)
SECRET = "GEORANKTESTSECRETd0n0tl0g"
KEY_ID = "GEORANKTESTKEYID0000"
N_GOOD, N_BAD = 4, 1


@dataclass
class Run:
    run_id: str | None
    code: int | None  # None: killed by us
    output: str
    summary: dict[str, Any] | None


def _start(conf: Path, photos: Path, log: Path, **env: str) -> tuple[subprocess.Popen[str], Any]:
    full_env = {
        **os.environ,
        "GEORANK_SKIP_SETUP": "1",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        **env,
    }
    out = log.open("w")
    cmd = [str(ROOT / "spark-submit.sh"), "--master", "local[2,3]",  # 3 attempts per task, as a cluster retries
           "jobs/geotag.py", "--conf", str(conf), "--run-date", DAY.isoformat(), "--photos", str(photos)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the kill reaches every process
    return proc, out


def _finish(proc: subprocess.Popen[str], out: Any, kill_on: str | None = None) -> Run:
    lines: list[str] = []
    killed = False
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        out.write(line)
        if kill_on and not killed and re.search(kill_on, line):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
    code = proc.wait(timeout=600)
    out.close()
    text = "".join(lines)
    ids = re.findall(r"run (geotag-\S+): \d+ photos read", text)
    summary = None
    for line in reversed(lines):
        if line.startswith('{"'):
            summary = json.loads(line)
            break
    if kill_on:
        assert killed, f"never saw {kill_on!r} before the job ended:\n{text[-3000:]}"
    return Run(ids[0] if ids else None, None if killed else code, text, summary)


def _run(conf: Path, photos: Path, log: Path, kill_on: str | None = None, **env: str) -> Run:
    return _finish(*_start(conf, photos, log, **env), kill_on=kill_on)


def _state(cfg_tables: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, uri in cfg_tables.items():
        rows = read_arrow(uri).to_pylist() if Path(uri, "_delta_log").is_dir() else []
        out[name] = [r for r in rows if r["run_date"] == DAY]
    return out


def _whole_runs(state: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Each table's rows for the date are exactly one complete run: returns table -> run id."""
    want = {"predictions": N_GOOD, "errors": N_BAD}
    got = {}
    for table, rows in state.items():
        ids = {r["run_id"] for r in rows}
        assert len(ids) == 1, f"{table}: rows of several runs for one date: {ids}"
        assert len(rows) == want[table], f"{table}: expected {want[table]} rows, got {len(rows)}"
        assert len({r["photo_id"] for r in rows}) == len(rows), f"{table}: a photo twice"
        got[table] = ids.pop()
    return got


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["photo_id"], r["lat_deg"], r["lon_deg"], round(r["confidence"], 5),
            tuple((c["gallery_id"], round(c["score"], 4)) for c in r["top_candidates"]))


@pytest.fixture(scope="module")
def world(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("crash")
    photos = tmp / "photos"
    photos.mkdir()
    for p in sorted((tiny_world / "queries").glob("*.jpg"))[:N_GOOD]:
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "empty.jpg").write_bytes(b"")
    conf = tiny_conf(tiny_world, tmp / "c.yaml", input={"photos_per_partition": 2, "photos_per_batch": 1},
                     skip={"enabled": False}, spark={"master": "local[2,3]"},
                     tables={"staging_ttl_hours": 0})  # runs here are sequential: drop a killed run's staging at once
    tables_dir = tmp / "c-tables"
    tables = {"predictions": str(tables_dir / "predictions"), "errors": str(tables_dir / "errors")}
    return {"tmp": tmp, "photos": photos, "conf": conf, "tables": tables, "tables_dir": tables_dir, "runs": {}}


@pytest.fixture(scope="module")
def sequence(world: dict[str, Any]) -> dict[str, Any]:
    """Runs 1-6 in order; each later test checks one step's record."""
    w, tmp = world, world["tmp"]
    rec: dict[str, Any] = {}

    r1 = _run(w["conf"], w["photos"], tmp / "run1.log")
    rec["run1"] = (r1, _state(w["tables"]))
    r2 = _run(w["conf"], w["photos"], tmp / "run2.log", kill_on=r"run \S+: committing predictions")
    rec["run2"] = (r2, _state(w["tables"]))
    r3 = _run(w["conf"], w["photos"], tmp / "run3.log", kill_on=r"georank\.pipeline: decoding \d+ photos")
    rec["run3"] = (r3, _state(w["tables"]))
    r4 = _run(w["conf"], w["photos"], tmp / "run4.log", kill_on=r"georank\.pipeline: ranking \d+ of \d+ photos")
    rec["run4"] = (r4, _state(w["tables"]))
    r5 = _run(w["conf"], w["photos"], tmp / "run5.log", kill_on=r"run \S+: committing errors")
    rec["run5"] = (r5, _state(w["tables"]))
    r6 = _run(w["conf"], w["photos"], tmp / "run6.log", GEORANK_FAULT_INJECT="kill-worker-once")
    rec["run6"] = (r6, _state(w["tables"]))
    w["runs"].update(rec)
    return rec


def test_undisturbed_run(sequence) -> None:  # type: ignore[no-untyped-def]
    r1, state = sequence["run1"]
    assert r1.code == 0 and r1.summary and r1.summary["status"] == "ok", r1.output[-3000:]
    assert (r1.summary["read"], r1.summary["predicted"], r1.summary["errors"]) == (N_GOOD + N_BAD, N_GOOD, N_BAD)
    assert _whole_runs(state) == {"predictions": r1.run_id, "errors": r1.run_id}


def test_killed_between_the_two_commits(sequence) -> None:  # type: ignore[no-untyped-def]
    """Killed after the errors commit: errors are one run ahead, predictions old or new; never a part."""
    r1, r2 = sequence["run1"][0], sequence["run2"][0]
    runs = _whole_runs(sequence["run2"][1])
    assert runs["errors"] == r2.run_id
    assert runs["predictions"] in (r1.run_id, r2.run_id)


def test_next_start_rolls_the_crashed_commit_forward(sequence) -> None:  # type: ignore[no-untyped-def]
    r2, r3 = sequence["run2"][0], sequence["run3"][0]
    assert f"run {r2.run_id} crashed while committing: rolling its commits forward" in r3.output
    assert _whole_runs(sequence["run3"][1]) == {"predictions": r2.run_id, "errors": r2.run_id}  # killed while decoding: no change


def test_killed_while_ranking_changes_nothing(sequence) -> None:  # type: ignore[no-untyped-def]
    r2 = sequence["run2"][0]
    assert _whole_runs(sequence["run4"][1]) == {"predictions": r2.run_id, "errors": r2.run_id}


def test_killed_at_the_errors_commit(sequence) -> None:  # type: ignore[no-untyped-def]
    r2, r5 = sequence["run2"][0], sequence["run5"][0]
    runs = _whole_runs(sequence["run5"][1])
    assert runs["predictions"] == r2.run_id and runs["errors"] in (r2.run_id, r5.run_id)


def test_rerun_after_crashes_with_a_worker_killed_equals_the_undisturbed_run(sequence, world) -> None:  # type: ignore[no-untyped-def]
    r1, r5, r6 = sequence["run1"][0], sequence["run5"][0], sequence["run6"][0]
    assert r6.code == 0 and r6.summary and r6.summary["status"] == "ok", r6.output[-3000:]
    assert r6.summary["recovered_runs"] == [r5.run_id]  # run 5 had its marker: rolled forward first
    assert "fault injection (GEORANK_FAULT_INJECT=kill-worker-once): ending this Python worker mid-task" in r6.output
    assert re.search(r"Lost task 0\.0 in stage|Python worker exited unexpectedly", r6.output), "Spark saw no task failure"
    state = sequence["run6"][1]
    assert _whole_runs(state) == {"predictions": r6.run_id, "errors": r6.run_id}
    ref = sequence["run1"][1]
    assert sorted(map(_key, state["predictions"])) == sorted(map(_key, ref["predictions"]))
    assert sorted((e["photo_id"], e["stage"], e["reason"]) for e in state["errors"]) == sorted(
        (e["photo_id"], e["stage"], e["reason"]) for e in ref["errors"])
    staging = world["tables_dir"] / "_staging" / "predictions"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    assert r1.run_id != r6.run_id


def test_two_runs_of_one_date_at_once(sequence, world) -> None:  # type: ignore[no-untyped-def]
    """One wins, the other fails cleanly or writes the same result; no duplicates."""
    w, tmp = world, world["tmp"]
    a = _start(w["conf"], w["photos"], tmp / "run7.log")
    time.sleep(1)
    b = _start(w["conf"], w["photos"], tmp / "run8.log")
    ra, rb = _finish(*a), _finish(*b)
    w["runs"]["run7"], w["runs"]["run8"] = (ra, None), (rb, None)
    for r in (ra, rb):
        assert r.code in (0, 1) and r.summary is not None, r.output[-3000:]
        if r.code == 1:
            assert r.summary["status"] == "failed" and r.summary["error"], r.summary
    assert 0 in (ra.code, rb.code), (ra.summary, rb.summary)
    state = _state(w["tables"])
    runs = _whole_runs(state)
    assert runs["predictions"] == runs["errors"] and runs["predictions"] in (ra.run_id, rb.run_id)
    ref = sequence["run1"][1]
    assert sorted(map(_key, state["predictions"])) == sorted(map(_key, ref["predictions"]))


def test_no_credentials_in_any_output(sequence, world) -> None:  # type: ignore[no-untyped-def]
    """Dummy AWS keys were in every run's environment: they appear in no log, summary, table or
    staging file (everything under the runs' folder, Delta logs and Parquet included)."""
    leaks = []
    for path in world["tmp"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if SECRET.encode() in data or KEY_ID.encode() in data:
                leaks.append(str(path))
    assert len(list(world["tmp"].rglob("*.log"))) >= 6
    assert leaks == []
