"""The night's commit: one Delta commit per run date, never shadowed by a run of another date,
never undone by an older run, staging removed only when its run is dead (never by file times).

Reproduced first (issue 10): with ONE transaction app id for every date, Delta silently skipped
the commit of a run that started before, and committed after, a run of another date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from support import tiny_conf

from georank import results, write
from georank import schema as S
from georank.config import load_config
from georank.errors import RunError, WriteError
from georank.results import read_arrow, read_errors, read_predictions
from georank.spark import commit
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
D1, D2 = dt.date(2026, 11, 21), dt.date(2026, 11, 22)


def _rows(run_id: str, day: dt.date, ids: list[str], *, bad: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for pid in ids:
        row: dict[str, Any] = {name: None for name in S.RESULTS.names}
        row.update(photo_id=pid, uri=f"/p/{pid}.jpg", run_id=run_id, run_date=day)
        if pid in bad:
            row.update(error_stage="decode", error_reason="the file is empty (0 bytes)")
        else:
            row.update(lat_deg=1.0, lon_deg=2.0, confidence=0.5, spread_km=3.0, ranker_skipped=False, n_candidates=1,
                       top_candidates=[])
        out.append(row)
    return out


def _df(spark, rows):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=S.RESULTS).to_pandas(), S.spark_schema(S.RESULTS))


def _cfg(tmp_path: Path, **tables: Any):  # type: ignore[no-untyped-def]
    return load_config(Path(__file__).resolve().parents[2] / "conf" / "local.yaml",
                       [f"tables.results={tmp_path / 'results'}", *[f"tables.{k}={v}" for k, v in tables.items()]])


def _by_date(uri: str) -> dict[dt.date, set[str]]:
    out: dict[dt.date, set[str]] = {}
    for r in read_arrow(uri).to_pylist():
        out.setdefault(r["run_date"], set()).add(r["run_id"])
    return out


def test_one_app_id_for_every_date_loses_a_night_and_the_history_check_sees_it(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The defect as Delta shows it: D2 committed with version 200 under a shared app id, then
    D1 with version 100 is skipped by Delta. The writer's history check turns it into an error."""
    uri = str(tmp_path / "results")
    write.commit(_df(spark, _rows("r2", D2, ["a"])), uri, table="results", run_date=D2.isoformat(),
                 mode="replace", txn=write.Txn("shared-app-id", 200), label="r2")
    with pytest.raises(WriteError, match="Delta skipped it"):
        write.commit(_df(spark, _rows("r1", D1, ["a"])), uri, table="results", run_date=D1.isoformat(),
                     mode="replace", txn=write.Txn("shared-app-id", 100), label="r1")
    assert _by_date(uri) == {D2: {"r2"}}
    assert write.commit_version(spark, uri, "r1") is None and write.commit_version(spark, uri, "r2") == 1


def test_per_date_transaction_ids_keep_every_date(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path)
    t1, t2 = commit.begin(spark, cfg, D1), commit.begin(spark, cfg, D2)  # both started on the empty table
    v2 = commit.commit_results(_df(spark, _rows("r2", D2, ["a", "b"])), cfg, run_id="r2", run_date=D2, txn=t2,
                               mode="overwrite")
    v1 = commit.commit_results(_df(spark, _rows("r1", D1, ["a"], bad=("a",))), cfg, run_id="r1", run_date=D1,
                               txn=t1, mode="overwrite")
    assert v1 > v2
    assert _by_date(cfg.tables.results) == {D1: {"r1"}, D2: {"r2"}}
    assert read_errors(cfg.tables.results).to_pylist()[0]["stage"] == "decode"
    assert read_predictions(cfg.tables.results).column("photo_id").to_pylist() == ["a", "b"]


def test_of_two_runs_of_one_date_the_first_to_commit_wins_and_the_other_fails(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Both started before either committed (whatever their drivers' clocks say): the second
    commit is skipped by Delta and its run fails naming why; a rerun started afterwards lands."""
    cfg = _cfg(tmp_path)
    first, second = commit.begin(spark, cfg, D1), commit.begin(spark, cfg, D1)
    commit.commit_results(_df(spark, _rows("second", D1, ["a"])), cfg, run_id="second", run_date=D1, txn=second,
                          mode="overwrite")
    with pytest.raises(RunError, match=r"run first: expected its commit in the history of .*, got none: Delta skipped it "
                                       r"\(txnAppId georank-geotag:2026-11-21, txnVersion 0\): another run of 2026-11-21 "
                                       r"committed after this run started"):
        commit.commit_results(_df(spark, _rows("first", D1, ["a"])), cfg, run_id="first", run_date=D1, txn=first,
                              mode="overwrite")
    assert _by_date(cfg.tables.results) == {D1: {"second"}}
    rerun = commit.begin(spark, cfg, D1)
    commit.commit_results(_df(spark, _rows("rerun", D1, ["a"])), cfg, run_id="rerun", run_date=D1, txn=rerun,
                          mode="overwrite")
    assert _by_date(cfg.tables.results) == {D1: {"rerun"}}


def test_two_error_mode_runs_of_one_date_cannot_both_write(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Both found the date empty (their early checks passed); only the first commit lands. An
    error-mode run of a date that another date's commit preceded still works (no version 0 forever)."""
    cfg = _cfg(tmp_path)
    ta, tb = commit.begin(spark, cfg, D1), commit.begin(spark, cfg, D1)
    commit.commit_results(_df(spark, _rows("a", D1, ["x", "y"])), cfg, run_id="a", run_date=D1, txn=ta, mode="error")
    with pytest.raises(WriteError, match="already has rows for run_date 2026-11-21"):
        commit.commit_results(_df(spark, _rows("b", D1, ["x"])), cfg, run_id="b", run_date=D1, txn=tb, mode="error")
    assert _by_date(cfg.tables.results) == {D1: {"a"}} and read_arrow(cfg.tables.results).num_rows == 2
    with pytest.raises(WriteError, match="already has rows for run_date 2026-11-21; expected none with --mode error"):
        commit.refuse_existing(spark, cfg, D1)
    commit.commit_results(_df(spark, _rows("c", D2, [])), cfg, run_id="c", run_date=D2, txn=commit.begin(spark, cfg, D2),
                          mode="error")  # an empty error-mode commit (allowed on purpose) ...
    commit.commit_results(_df(spark, _rows("d", D2, ["z"])), cfg, run_id="d", run_date=D2,
                          txn=commit.begin(spark, cfg, D2), mode="error")  # ... does not block the date forever
    assert _by_date(cfg.tables.results)[D2] == {"d"}


def test_views_filter_the_results_table(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path, views_schema="georank_views_test")
    commit.commit_results(_df(spark, _rows("r", D1, ["a", "b", "c"], bad=("b",))), cfg, run_id="r", run_date=D1,
                          txn=commit.begin(spark, cfg, D1), mode="overwrite")
    preds = spark.sql("SELECT photo_id FROM georank_views_test.predictions ORDER BY photo_id").collect()
    errs = spark.sql("SELECT photo_id, stage, reason FROM georank_views_test.errors").collect()
    assert [r.photo_id for r in preds] == ["a", "c"]
    assert [(r.photo_id, r.stage) for r in errs] == [("b", "decode")]
    assert spark.table("georank_views_test.predictions").columns == S.PREDICTIONS.names
    assert spark.table("georank_views_test.errors").columns == S.ERRORS.names


def _lease(run_dir: Path, run_id: str, started_ms: int, heartbeat_ms: int | None) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "results").mkdir()
    body: dict[str, Any] = {"run_id": run_id, "started_ms": started_ms}
    if heartbeat_ms is not None:
        body["heartbeat_ms"] = heartbeat_ms
    (run_dir / "_lease").write_text(json.dumps(body))
    for p in (run_dir, run_dir / "results", run_dir / "_lease"):
        os.utime(p, (0, 0))  # as S3A reports directory times: 0 (the epoch)


def test_staging_is_removed_by_run_time_and_lease_never_by_file_times(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path, **{})
    cfg = cfg.model_copy(update={"write": cfg.write.model_copy(update={"staging_ttl_hours": 1.0, "lease_timeout_s": 60.0})})
    root = Path(commit.staging_root(cfg))
    now = int(time.time() * 1000)
    hour = 3_600_000
    _lease(root / "geotag-20000101T000000Z-live", "live", now - 30 * hour, now - 5_000)  # old but its lease is live
    _lease(root / "geotag-20000101T000000Z-dead", "dead", now - 30 * hour, now - 20 * hour)  # old and stale: crashed
    _lease(root / "run-young-dead", "young", now - 10 * 60_000, now - 9 * 60_000)  # stale but younger than the ttl
    _lease(root / "run-unknown", "x", 0, None)  # the id has no time; started_ms 0 in the lease: old, no heartbeat
    (root / "run-nolease").mkdir(parents=True)  # no lease, no time in the id: left alone
    removed = commit.remove_stale_staging(spark, cfg, now_ms=now)
    assert sorted(removed) == ["geotag-20000101T000000Z-dead", "run-unknown"]
    assert sorted(p.name for p in root.iterdir()) == ["geotag-20000101T000000Z-live", "run-nolease", "run-young-dead"]


def test_a_run_keeps_its_lease_fresh_and_removes_its_own_staging(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path)
    cfg = cfg.model_copy(update={"write": cfg.write.model_copy(update={"lease_refresh_s": 0.2})})
    with commit.Staging(spark, cfg, "run-lease") as staging:
        lease = Path(staging.uri) / "_lease"
        first = json.loads(lease.read_text())["heartbeat_ms"]
        time.sleep(1.0)
        assert json.loads(lease.read_text())["heartbeat_ms"] > first
        # another run's start sees a live lease and leaves the folder, however old the run is said to be
        cfg0 = cfg.model_copy(update={"write": cfg.write.model_copy(update={"staging_ttl_hours": 0.0})})
        assert commit.remove_stale_staging(spark, cfg0) == []
        assert Path(staging.uri).is_dir()
    assert not Path(staging.uri).exists()


# ----------------------------------------------------------------------------- whole runs, interleaved


def _photos(tiny_world: Path, tmp_path: Path, n: int) -> str:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    for p in sorted((tiny_world / "queries").glob("*.jpg"))[:n]:
        (photos / p.name).write_bytes(p.read_bytes())
    return str(photos)


def test_a_run_that_started_first_and_commits_last_keeps_its_date(spark, tiny_world: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                    monkeypatch) -> None:
    """Run D1 starts; while it is about to commit, a whole run of D2 starts and commits. Both dates
    complete, each once, and both summaries are true (the order is driven deterministically)."""
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", skip={"spread_km": 100000})  # skip the ranker: fast
    cfg = load_config(conf)
    photos = _photos(tiny_world, tmp_path, 3)
    real = commit.commit_results
    summaries: dict[str, dict[str, Any]] = {}

    def d2_commits_first(staged, cfg_, **kw):  # type: ignore[no-untyped-def]
        if kw["run_id"] == "run-d1":
            time.sleep(0.01)
            summaries["d2"] = run_geotag(spark, cfg, photos_uri=photos, run_date=D2, run_id="run-d2")
        return real(staged, cfg_, **kw)

    monkeypatch.setattr(commit, "commit_results", d2_commits_first)
    summaries["d1"] = run_geotag(spark, cfg, photos_uri=photos, run_date=D1, run_id="run-d1")
    assert _by_date(cfg.tables.results) == {D1: {"run-d1"}, D2: {"run-d2"}}
    assert summaries["d1"]["table_version"] > summaries["d2"]["table_version"]
    for s in summaries.values():
        assert (s["read"], s["predicted"], s["errors"]) == (3, 3, 0)
    assert read_arrow(cfg.tables.results).num_rows == 6


def test_a_crashed_run_is_rerun_after_a_newer_run_of_another_date_committed(spark, tiny_world: Path,  # type: ignore[no-untyped-def]
                                                                            tmp_path: Path, monkeypatch) -> None:
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", skip={"spread_km": 100000})
    cfg = load_config(conf)
    photos = _photos(tiny_world, tmp_path, 2)
    real = write.commit

    def crash(*a, **kw):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("simulated crash at the commit")

    monkeypatch.setattr(write, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        run_geotag(spark, cfg, photos_uri=photos, run_date=D1, run_id="run-d1-crashed")
    monkeypatch.setattr(write, "commit", real)
    assert not Path(cfg.tables.results).exists()  # nothing half-written
    assert not (Path(commit.staging_root(cfg)) / "run-d1-crashed").exists()  # its own staging removed
    run_geotag(spark, cfg, photos_uri=photos, run_date=D2, run_id="run-d2")
    run_geotag(spark, cfg, photos_uri=photos, run_date=D1, run_id="run-d1-rerun")
    assert _by_date(cfg.tables.results) == {D1: {"run-d1-rerun"}, D2: {"run-d2"}}
    assert read_arrow(cfg.tables.results).num_rows == 4


def test_steps_after_the_commit_never_fail_a_committed_night(spark, tmp_path: Path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Declaring the views and removing the staging folder come after the commit: their failure is
    a warning, never a failed run (which --mode error would then refuse to retry)."""
    cfg = _cfg(tmp_path, views_schema="georank_views_after")

    def broken_views(*a, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("metastore unreachable")

    monkeypatch.setattr(results, "create_views", broken_views)
    version = commit.commit_results(_df(spark, _rows("r", D1, ["a"])), cfg, run_id="r", run_date=D1,
                                    txn=commit.begin(spark, cfg, D1), mode="error")
    assert version >= 1 and _by_date(cfg.tables.results) == {D1: {"r"}}
    assert "committed, but declaring the views in georank_views_after failed: metastore unreachable" in caplog.text
    with commit.Staging(spark, cfg, "run-undeletable") as staging:
        monkeypatch.setattr(commit, "_fs", lambda *a: (_ for _ in ()).throw(RuntimeError("S3 outage")))
    monkeypatch.undo()
    assert f"could not remove its staging folder {staging.uri} (S3 outage)" in caplog.text


def test_staging_clean_up_skips_a_folder_that_vanishes_while_checked(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path)
    cfg = cfg.model_copy(update={"write": cfg.write.model_copy(update={"staging_ttl_hours": 1.0, "lease_timeout_s": 60.0})})
    root = Path(commit.staging_root(cfg))
    now = int(time.time() * 1000)
    hour = 3_600_000
    _lease(root / "geotag-20000101T000000Z-gone", "gone", now - 30 * hour, now - 20 * hour)
    _lease(root / "geotag-20000101T000000Z-dead", "dead", now - 30 * hour, now - 20 * hour)
    real = commit._read_text

    def vanishing(spark_, uri):  # type: ignore[no-untyped-def]
        if "-gone/" in uri:  # its own run removed it between the listing and this read
            import shutil

            shutil.rmtree(root / "geotag-20000101T000000Z-gone")
            raise RuntimeError("java.io.FileNotFoundException: " + uri)
        return real(spark_, uri)

    monkeypatch.setattr(commit, "_read_text", vanishing)
    assert commit.remove_stale_staging(spark, cfg, now_ms=now) == ["geotag-20000101T000000Z-dead"]


def test_a_run_that_started_after_another_commit_is_the_newer_one(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Runs of one date are ordered by the table version they started at: A starts, another date
    commits, B (same date as A) starts; A commits first, then B, the newer, replaces it as a rerun
    does. The other order (B first) skips A: an older run never undoes a newer one."""
    cfg = _cfg(tmp_path)
    commit.commit_results(_df(spark, _rows("seed", D2, ["s"])), cfg, run_id="seed", run_date=D2,
                          txn=commit.begin(spark, cfg, D2), mode="overwrite")
    a = commit.begin(spark, cfg, D1)
    commit.commit_results(_df(spark, _rows("other", D2, ["o"])), cfg, run_id="other", run_date=D2,
                          txn=commit.begin(spark, cfg, D2), mode="overwrite")
    b = commit.begin(spark, cfg, D1)
    assert b.version > a.version
    commit.commit_results(_df(spark, _rows("a", D1, ["x"])), cfg, run_id="a", run_date=D1, txn=a, mode="overwrite")
    commit.commit_results(_df(spark, _rows("b", D1, ["x"])), cfg, run_id="b", run_date=D1, txn=b, mode="overwrite")
    assert _by_date(cfg.tables.results)[D1] == {"b"}
    c = commit.begin(spark, cfg, D1)  # c and d start at one table version: d commits first, c is skipped
    d = commit.begin(spark, cfg, D1)
    commit.commit_results(_df(spark, _rows("d", D1, ["x"])), cfg, run_id="d", run_date=D1, txn=d, mode="overwrite")
    with pytest.raises(RunError, match="Delta skipped it"):
        commit.commit_results(_df(spark, _rows("c", D1, ["x"])), cfg, run_id="c", run_date=D1, txn=c, mode="overwrite")
    assert _by_date(cfg.tables.results)[D1] == {"d"}
