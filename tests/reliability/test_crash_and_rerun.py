"""Crashes and reruns for real: the geotag job through ./spark-submit.sh as a subprocess,
SIGKILLed (its whole process group: the driver JVM, the Python driver and its workers) at
several points, rerun, a Python worker killed mid-task, a rerun beside a run of the next date.

One module-scoped sequence of runs on one date over the same photos (4 good, 2 bad), into the
one results table (a run's date lands in ONE Delta commit):

    run 1     complete, with a Python worker killed once mid-task (GEORANK_FAULT_INJECT)
                                                            -> the reference output
    run 2     killed between its Delta commit and the commit's history check
                                                            -> the date is run 2's, whole
    run 3     killed right after its commit was checked (before views and staging removal)
                                                            -> the date is run 3's, whole
    run 4     killed while computing (decoding and ranking share one task on CPU; killed at ranking)
                                                            -> no change
    run 6+8   undisturbed, started at once: a rerun of the date after the crashes, and the next
              date reading the same photos under an s3:// prefix (moto's S3 server on loopback,
              listed and read on the executors with boto3)
                                                            -> both whole, both equal to run 1
(Two runs of the SAME date at once are covered in-process by tests/job/test_commit.py: the first
to commit wins, the other's skipped commit fails it.)

After each step the date holds exactly one complete run (never a part of one) and, once a run
completes, exactly one row per photo; a run of another date beside it loses nothing. Every
run carries dummy AWS keys in its environment (run 8 signs its S3 requests with them); no
output may contain them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, tiny_conf

from georank.results import read_errors, read_predictions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # 5 spark-submit runs in one module
DAY, NEXT_DAY = dt.date(2026, 11, 26), dt.date(2026, 11, 27)
SECRET = "GEORANKTESTSECRETd0n0tl0g"
KEY_ID = "GEORANKTESTKEYID0000"
N_GOOD, N_BAD = 4, 2  # bad: an empty .jpg and a text file
NOT_AN_IMAGE = b"not an image: a list of photo ids\n"
BUCKET, PREFIX = "georank-catalogue", f"untagged/{NEXT_DAY.isoformat()}/"


@dataclass
class Run:
    run_id: str | None
    code: int | None  # None: killed by us
    output: str
    summary: dict[str, Any] | None


def _start(conf: Path, photos: Path | str, log: Path, day: dt.date = DAY, **env: str) -> tuple[subprocess.Popen[str], Any]:
    full_env = {
        **os.environ,
        "GEORANK_SKIP_SETUP": "1",
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
        **env,
    }
    out = log.open("w")
    cmd = [str(ROOT / "spark-submit.sh"), "--master", "local[2,3]",  # 3 attempts per task, as a cluster retries
           "jobs/geotag.py", "--conf", str(conf), "--run-date", day.isoformat(), "--photos", str(photos)]
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


def _state(results: str, day: dt.date = DAY) -> dict[str, list[dict[str, Any]]]:
    """The date's rows of the results table, as its two documented filters."""
    out: dict[str, list[dict[str, Any]]] = {"predictions": [], "errors": []}
    if Path(results, "_delta_log").is_dir():
        out["predictions"] = [r for r in read_predictions(results).to_pylist() if r["run_date"] == day]
        out["errors"] = [r for r in read_errors(results).to_pylist() if r["run_date"] == day]
    return out


def _whole_run(state: dict[str, list[dict[str, Any]]]) -> str:
    """The date's rows are exactly one complete run: returns its run id."""
    want = {"predictions": N_GOOD, "errors": N_BAD}
    rows = state["predictions"] + state["errors"]
    ids = {r["run_id"] for r in rows}
    assert len(ids) == 1, f"rows of several runs (or none) for one date: {ids}"
    for view, n in want.items():
        assert len(state[view]) == n, f"{view}: expected {n} rows, got {len(state[view])}"
    assert len({r["photo_id"] for r in rows}) == len(rows), "a photo twice"
    return ids.pop()


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["photo_id"], r["lat_deg"], r["lon_deg"], round(r["confidence"], 5),
            tuple((c["gallery_id"], round(c["score"], 4)) for c in r["top_candidates"]))


@pytest.fixture(scope="module")
def s3_photos(tiny_world: Path) -> Iterator[tuple[str, list[Path]]]:
    """The runs' photos (4 good, an empty .jpg, a text file) also under an s3:// prefix of moto's S3 server on
    loopback (request authorisation off: any keys sign). Yields (endpoint URL, local files)."""
    from moto.server import ThreadedMotoServer

    from georank.config import S3Config
    from georank.storage import s3_client

    files = sorted((tiny_world / "queries").glob("*.jpg"))[:N_GOOD]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
            mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
            client = s3_client(S3Config(endpoint_url=url, path_style=True))
            client.create_bucket(Bucket=BUCKET)
            for p in files:
                client.put_object(Bucket=BUCKET, Key=PREFIX + p.name, Body=p.read_bytes())
            client.put_object(Bucket=BUCKET, Key=PREFIX + "empty.jpg", Body=b"")
            client.put_object(Bucket=BUCKET, Key=PREFIX + "manifest.txt", Body=NOT_AN_IMAGE)
        yield url, files
    finally:
        server.stop()


@pytest.fixture(scope="module")
def world(tiny_world: Path, s3_photos: tuple[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("crash")
    photos = tmp / "photos"
    photos.mkdir()
    endpoint_url, files = s3_photos
    for p in files:
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "manifest.txt").write_bytes(NOT_AN_IMAGE)
    conf = tiny_conf(tiny_world, tmp / "c.yaml", input={"photos_per_partition": 2, "photos_per_batch": 1},
                     skip={"enabled": False}, spark={"master": "local[2,3]"},
                     s3={"endpoint_url": endpoint_url, "path_style": True},
                     write={"staging_ttl_hours": 0, "lease_refresh_s": 2, "lease_timeout_s": 30})
    tables_dir = tmp / "c-tables"
    return {"tmp": tmp, "photos": photos, "conf": conf, "tables": str(tables_dir / "results"), "tables_dir": tables_dir,
            "runs": {}}


@pytest.fixture(scope="module")
def sequence(world: dict[str, Any]) -> dict[str, Any]:
    """Runs 1, 2 and 4 in order; each later test checks one step's record."""
    w, tmp = world, world["tmp"]
    rec: dict[str, Any] = {}

    r1 = _run(w["conf"], w["photos"], tmp / "run1.log", GEORANK_FAULT_INJECT="kill-worker-once")
    rec["run1"] = (r1, _state(w["tables"]))
    r2 = _run(w["conf"], w["photos"], tmp / "run2.log", kill_on=r"geotag-\S+: results written to \S+, checking its history")
    rec["run2"] = (r2, _state(w["tables"]))
    r3 = _run(w["conf"], w["photos"], tmp / "run3.log", kill_on=r"run \S+: committed as version \d+")
    rec["run3"] = (r3, _state(w["tables"]))
    r4 = _run(w["conf"], w["photos"], tmp / "run4.log", kill_on=r"georank\.\w+: ranking \d+ of \d+ photos")
    rec["run4"] = (r4, _state(w["tables"]))
    w["runs"].update(rec)
    return rec


def test_a_run_with_a_python_worker_killed_completes(sequence) -> None:  # type: ignore[no-untyped-def]
    r1, state = sequence["run1"]
    assert r1.code == 0 and r1.summary and r1.summary["status"] == "ok", r1.output[-3000:]
    assert "fault injection (GEORANK_FAULT_INJECT=kill-worker-once): ending this Python worker mid-task" in r1.output
    assert re.search(r"Lost task 0\.0 in stage|Python worker exited unexpectedly", r1.output), "Spark saw no task failure"
    assert (r1.summary["read"], r1.summary["predicted"], r1.summary["errors"]) == (N_GOOD + N_BAD, N_GOOD, N_BAD)
    assert _whole_run(state) == r1.run_id
    errors = {e["photo_id"]: (e["stage"], e["reason"]) for e in state["errors"]}
    assert errors["empty"] == ("decode", "the file is empty (0 bytes)")
    assert errors["manifest"][0] == "decode" and errors["manifest"][1].startswith("not an image"), errors


def test_killed_between_the_commit_and_its_history_check(sequence) -> None:  # type: ignore[no-untyped-def]
    """Killed after its one Delta commit, before it could check the history: the date is that run's,
    whole (the commit is atomic; nothing after it can half-undo it)."""
    assert _whole_run(sequence["run2"][1]) == sequence["run2"][0].run_id


def test_killed_right_after_the_commit(sequence) -> None:  # type: ignore[no-untyped-def]
    assert _whole_run(sequence["run3"][1]) == sequence["run3"][0].run_id


def test_killed_while_computing_changes_nothing(sequence) -> None:  # type: ignore[no-untyped-def]
    assert _whole_run(sequence["run4"][1]) == _whole_run(sequence["run3"][1])


def test_a_rerun_after_the_crashes_beside_a_run_of_the_next_date(sequence, world) -> None:  # type: ignore[no-untyped-def]
    """After the crashes, an undisturbed rerun of the date and a run of the next date at once (a
    rerun of last night beside tonight's run): both complete, each date whole, neither loses a row,
    both equal run 1's output (which had a Python worker killed), and only the killed runs may have
    left staging behind. The next date reads the same photos from an s3:// prefix: every object
    under it is listed and read on the executors (the empty one a decode error row), each row
    keeps its s3:// URI."""
    w, tmp = world, world["tmp"]
    a = _start(w["conf"], w["photos"], tmp / "run6.log")
    c = _start(w["conf"], f"s3://{BUCKET}/{PREFIX}", tmp / "run8.log", day=NEXT_DAY)
    ra, rc = _finish(*a), _finish(*c)
    w["runs"]["run6"], w["runs"]["run8"] = (ra, None), (rc, None)
    for r in (ra, rc):
        assert r.code == 0 and r.summary and r.summary["status"] == "ok", r.output[-3000:]
    ref = sequence["run1"][1]
    for day, r in ((DAY, ra), (NEXT_DAY, rc)):
        state = _state(w["tables"], day)
        assert _whole_run(state) == r.run_id
        assert sorted(map(_key, state["predictions"])) == sorted(map(_key, ref["predictions"]))
        assert sorted((e["photo_id"], e["stage"], e["reason"]) for e in state["errors"]) == sorted(
            (e["photo_id"], e["stage"], e["reason"]) for e in ref["errors"])
        if day == NEXT_DAY:
            names = sorted(p.name for p in w["photos"].iterdir())
            assert sorted(r["uri"] for r in state["predictions"] + state["errors"]) == [
                f"s3://{BUCKET}/{PREFIX}{n}" for n in names]
            assert all(r["index_version"] and r["model_version"] for r in state["predictions"])
    assert ra.run_id != sequence["run1"][0].run_id
    staging = w["tables_dir"] / "_staging" / "results"
    left = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
    killed = {r.run_id for r in (sequence["run2"][0], sequence["run3"][0], sequence["run4"][0])}
    assert set(left) <= killed, left  # a finished run removes its own staging; only killed runs may leave one


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
