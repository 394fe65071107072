"""Latest answer per photo (read_latest, the predictions_latest view) and publish (ONE MERGE into the catalogue).

Fast: RESULTS rows made by hand (no model runs) and a tiny Delta catalogue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from georank import results, write
from georank import schema as S
from georank.config import load_config
from georank.errors import SchemaError
from georank.spark import publish
from georank.spark.publish import run_publish

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parents[2]
D1, D2, D3 = dt.date(2026, 11, 21), dt.date(2026, 11, 22), dt.date(2026, 11, 23)

CATALOGUE_DDL = (
    "photo_id STRING, uri STRING, lat_deg DOUBLE, lon_deg DOUBLE, location_source STRING, "
    "location_confidence DOUBLE, location_spread_km DOUBLE, location_run_id STRING, location_run_date DATE, "
    "location_versions STRUCT<model_version: STRING, adapter_version: STRING, embed_version: STRING, "
    "index_version: STRING>"
)


def _pred(pid: str, day: dt.date, run_id: str, *, lat: float = 10.0, lon: float = 20.0, conf: float = 0.9,
          spread: float = 5.0, error: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in S.RESULTS.names}
    row.update(photo_id=pid, uri=f"/p/{pid}.jpg", run_id=run_id, run_date=day)
    if error:
        row.update(error_stage="read", error_reason="object unreachable")
    else:
        row.update(lat_deg=lat, lon_deg=lon, confidence=conf, spread_km=spread, ranker_skipped=False, n_candidates=1,
                   top_candidates=[], model_version="m1", adapter_version=f"a-{run_id}", embed_version="e1",
                   index_version="i1")
    return row


def _night(spark, uri: str, rows: list[dict[str, Any]], *, mode: str = "replace") -> None:  # type: ignore[no-untyped-def]
    table = pa.Table.from_pylist(rows, schema=S.RESULTS)
    df = spark.createDataFrame(table.to_pandas(), S.spark_schema(S.RESULTS))
    write.commit(df, uri, table="results", mode=mode, run_date=rows[0]["run_date"].isoformat(),  # type: ignore[arg-type]
                 label=f"{rows[0]['run_id']}-{mode}-{len(rows)}")


def _catalogue(spark, uri: str, rows: list[tuple[Any, ...]]) -> None:  # type: ignore[no-untyped-def]
    """rows: (photo_id, lat_deg, lon_deg, location_source); the other columns null."""
    full = [(pid, f"/p/{pid}.jpg", lat, lon, src, None, None, None, None, None) for pid, lat, lon, src in rows]
    spark.createDataFrame(full, CATALOGUE_DDL).write.format("delta").save(uri)


def _cfg(tmp_path: Path, *more: str):  # type: ignore[no-untyped-def]
    return load_config(ROOT / "conf" / "local.yaml", [f"tables.results={tmp_path / 'results'}", *more])


def _read(uri: str) -> dict[str, dict[str, Any]]:
    """The catalogue through the second engine (delta-rs), by photo id."""
    return {r["photo_id"]: r for r in results.read_arrow(uri).to_pylist()}


def _versions(uri: str) -> list[int]:
    from deltalake import DeltaTable

    return [h["version"] for h in DeltaTable(uri).history()]


# ------------------------------------------------------------------------------ latest per photo


def test_read_latest_and_the_view_give_one_row_per_photo_the_newest(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "results")
    _night(spark, uri, [_pred("a", D1, "geotag-20261121T010000Z-aa", lat=1.0), _pred("b", D1, "geotag-20261121T010000Z-aa", lat=2.0)])
    _night(spark, uri, [_pred("a", D2, "geotag-20261122T010000Z-bb", lat=11.0),
                        _pred("b", D2, "geotag-20261122T010000Z-bb", error=True),
                        _pred("c", D2, "geotag-20261122T010000Z-bb", error=True)])
    latest = results.read_latest(uri)
    assert latest.schema.names == S.PREDICTIONS.names
    got = {r["photo_id"]: (r["run_date"], r["lat_deg"]) for r in latest.to_pylist()}
    # a: the newer night; b: its newest PREDICTION (its newest row is an error); c: never predicted
    assert got == {"a": (D2, 11.0), "b": (D1, 2.0)}

    names = results.create_views(spark, uri, schema_name="georank_t23")
    assert "georank_t23.predictions_latest" in names
    view = {r["photo_id"]: (r["run_date"], r["lat_deg"]) for r in spark.table("georank_t23.predictions_latest").collect()}
    assert view == got
    assert spark.table("georank_t23.predictions_latest").columns == S.PREDICTIONS.names


def test_a_tie_on_the_date_is_broken_by_the_later_run_id_in_python_and_sql(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two rows of one photo and one date (never written by georank, whose runs replace their date
    whole; possible in a hand-made table): the later-started run id wins, in both engines."""
    uri = str(tmp_path / "results")
    _night(spark, uri, [_pred("a", D1, "geotag-20261121T090000Z-zz", lat=9.0)], mode="append")
    _night(spark, uri, [_pred("a", D1, "geotag-20261121T010000Z-aa", lat=1.0)], mode="append")
    assert results.read_latest(uri).column("lat_deg").to_pylist() == [9.0]
    rows = spark.sql(results.latest_sql(f"delta.`{uri}`")).collect()
    assert [r["lat_deg"] for r in rows] == [9.0]


def test_read_latest_of_a_table_without_predictions_is_empty(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = str(tmp_path / "results")
    _night(spark, uri, [_pred("a", D1, "r1", error=True)])
    latest = results.read_latest(uri)
    assert latest.num_rows == 0 and latest.schema.names == S.PREDICTIONS.names


# ------------------------------------------------------------------------------ publish


def _setup(spark, tmp_path: Path) -> tuple[Any, str]:  # type: ignore[no-untyped-def]
    """p1..p4 unlocated, p5 located by its camera; predictions for all five and one not in the catalogue."""
    cfg = _cfg(tmp_path)
    cat = str(tmp_path / "catalogue")
    _catalogue(spark, cat, [("p1", None, None, None), ("p2", None, None, None), ("p3", None, None, None),
                            ("p4", None, None, None), ("p5", 48.0, 2.0, "camera")])
    _night(spark, cfg.tables.results, [
        _pred("p1", D1, "geotag-1", conf=0.9, lat=1.0), _pred("p2", D1, "geotag-1", conf=0.6, lat=2.0),
        _pred("p3", D1, "geotag-1", conf=0.3), _pred("p4", D1, "geotag-1", conf=0.8, spread=500.0),
        _pred("p5", D1, "geotag-1", conf=0.99), _pred("zz", D1, "geotag-1", conf=0.99)])
    return cfg, cat


def test_publish_merges_exactly_the_rows_that_pass_and_a_second_publish_changes_nothing(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, cat = _setup(spark, tmp_path)
    before = _versions(cat)
    got = run_publish(spark, cfg, catalogue=cat, run_id="publish-1", min_confidence=0.5, max_spread_km=100.0)
    assert {k: got[k] for k in publish.CLASSES} == {"published": 2, "below_threshold": 2, "already_located": 1,
                                                     "already_published": 0, "not_in_catalogue": 1}
    assert got["latest_predictions"] == 6 and got["catalogue_version"] == max(before) + 1
    rows = _read(cat)  # deltalake reads the catalogue MERGEd by Spark
    assert {p for p, r in rows.items() if r["location_source"] == "georank"} == {"p1", "p2"}
    assert (rows["p1"]["lat_deg"], rows["p1"]["lon_deg"], rows["p1"]["location_confidence"]) == (1.0, 20.0, 0.9)
    assert rows["p2"]["location_run_id"] == "geotag-1" and rows["p2"]["location_run_date"] == D1
    assert rows["p2"]["location_spread_km"] == 5.0
    assert rows["p2"]["location_versions"] == {"model_version": "m1", "adapter_version": "a-geotag-1",
                                               "embed_version": "e1", "index_version": "i1"}
    assert rows["p3"]["lat_deg"] is None and rows["p4"]["lat_deg"] is None
    assert (rows["p5"]["lat_deg"], rows["p5"]["lon_deg"], rows["p5"]["location_source"]) == (48.0, 2.0, "camera")
    from deltalake import DeltaTable

    last = DeltaTable(cat).history(1)[0]
    assert last["operation"] == "MERGE" and last["userMetadata"] == "publish-1"

    after_first = _versions(cat)
    again = run_publish(spark, cfg, catalogue=cat, run_id="publish-2", min_confidence=0.5, max_spread_km=100.0)
    assert again["published"] == 0 and again["already_published"] == 2 and again["catalogue_version"] is None
    assert _versions(cat) == after_first and max(after_first) == got["catalogue_version"]  # no new version
    assert _read(cat) == rows


def test_thresholds_default_to_the_config_and_dry_run_writes_nothing(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, cat = _setup(spark, tmp_path)
    cfg.publish.min_confidence = 0.85  # p1 (0.9) passes; p2 (0.6) and p3 do not; no spread limit: p4 (0.8) does not
    before = _versions(cat)
    dry = run_publish(spark, cfg, catalogue=cat, run_id="publish-dry", dry_run=True)
    assert dry["would_publish"] == 1 and dry["published"] == 0 and dry["below_threshold"] == 3
    assert _versions(cat) == before
    cfg.publish.min_confidence = 0.7  # now p4 (0.8, spread 500 km: no spread limit) passes too; p2 (0.6) still not
    got = run_publish(spark, cfg, catalogue=cat, run_id="publish-1")
    assert got["published"] == 2 and sorted(p for p, r in _read(cat).items() if r["location_source"] == "georank") == [
        "p1", "p4"]


def test_a_location_set_after_the_run_is_kept_even_one_set_while_publishing(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A camera's location that lands after the plan's counts AND after merge's own "anything to
    change?" probe, right before the MERGE statement runs: only the MERGE's own condition, evaluated
    at MERGE time, keeps it (the update is made in the real Delta MERGE builder's ``execute``)."""
    from delta.tables import DeltaMergeBuilder

    cfg, cat = _setup(spark, tmp_path)
    # p1: a person places it after the geotag run, before the publish
    spark.sql(f"UPDATE delta.`{cat}` SET lat_deg = 45.0, lon_deg = 7.0, location_source = 'person' WHERE photo_id = 'p1'")
    # p2: a camera upload lands after the publish counted and probed, right before its MERGE runs
    real_execute = DeltaMergeBuilder.execute
    seen: list[str | None] = []  # p2's source as the MERGE is about to start, once per MERGE

    def camera_first(self):  # type: ignore[no-untyped-def]
        before = _read(cat)["p2"]
        assert (before["lat_deg"], before["location_source"]) == (None, None)  # the probe found p2 to publish
        spark.sql(f"UPDATE delta.`{cat}` SET lat_deg = -33.0, lon_deg = 151.0 WHERE photo_id = 'p2'")
        seen.append(before["location_source"])
        return real_execute(self)

    monkeypatch.setattr(DeltaMergeBuilder, "execute", camera_first)
    got = run_publish(spark, cfg, catalogue=cat, run_id="publish-1", min_confidence=0.5, max_spread_km=100.0)
    assert seen == [None], f"expected ONE MERGE to start after the probe found p2 unlocated, got {len(seen)}"
    rows = _read(cat)
    assert (rows["p2"]["lat_deg"], rows["p2"]["lon_deg"], rows["p2"]["location_source"]) == (-33.0, 151.0, None)
    assert (rows["p1"]["lat_deg"], rows["p1"]["location_source"]) == (45.0, "person")
    assert (rows["p5"]["lat_deg"], rows["p5"]["location_source"]) == (48.0, "camera")
    assert got["published"] == 0 and got["already_located"] == 3  # p5 (camera), p1 (person), p2 (during the MERGE)
    assert sum(got[k] for k in publish.CLASSES) == got["latest_predictions"]


def test_a_night_committed_while_publishing_is_not_half_published(spark, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The plan's counts and the MERGE read one version of the results table: a night that commits
    between them (p3 now confident) is left for the next publish, and the counts still add up."""
    cfg, cat = _setup(spark, tmp_path)
    real_merge = write.merge

    def night_first(*args: Any, **kwargs: Any) -> write.Merged:
        _night(spark, cfg.tables.results, [_pred("p3", D2, "geotag-2", conf=0.95, lat=3.0)])
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(write, "merge", night_first)
    got = run_publish(spark, cfg, catalogue=cat, run_id="publish-1", min_confidence=0.5, max_spread_km=100.0)
    pinned = got["results_version"]
    assert got["published"] == 2 and got["below_threshold"] == 2 and pinned == write.table_version(spark, cfg.tables.results) - 1
    assert {p for p, r in _read(cat).items() if r["location_source"] == "georank"} == {"p1", "p2"}
    assert sum(got[k] for k in publish.CLASSES) == got["latest_predictions"]
    monkeypatch.setattr(write, "merge", real_merge)
    later = run_publish(spark, cfg, catalogue=cat, run_id="publish-2", min_confidence=0.5, max_spread_km=100.0)
    assert later["published"] == 1 and later["results_version"] == pinned + 1 and _read(cat)["p3"]["lat_deg"] == 3.0


def test_a_newer_georank_prediction_replaces_an_older_one_never_a_camera(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, cat = _setup(spark, tmp_path)
    run_publish(spark, cfg, catalogue=cat, run_id="publish-1", min_confidence=0.5, max_spread_km=100.0)
    _night(spark, cfg.tables.results, [_pred("p1", D2, "geotag-2", lat=31.0, conf=0.95),
                                       _pred("p2", D2, "geotag-2", lat=32.0, conf=0.1),  # newer but below threshold
                                       _pred("p5", D2, "geotag-2", lat=35.0, conf=0.99)])
    got = run_publish(spark, cfg, catalogue=cat, run_id="publish-2", min_confidence=0.5, max_spread_km=100.0)
    rows = _read(cat)
    assert (rows["p1"]["lat_deg"], rows["p1"]["location_run_id"], rows["p1"]["location_run_date"]) == (31.0, "geotag-2", D2)
    assert (rows["p2"]["lat_deg"], rows["p2"]["location_run_id"]) == (2.0, "geotag-1")  # kept: the newer one did not pass
    assert (rows["p5"]["lat_deg"], rows["p5"]["location_source"]) == (48.0, "camera")
    assert got["published"] == 1 and got["below_threshold"] == 3 and got["already_located"] == 1
    # an OLDER answer never replaces a newer one: D2 rerun without p1's prediction makes D1's the latest again
    _night(spark, cfg.tables.results, [_pred("p1", D2, "geotag-3", error=True)])
    assert run_publish(spark, cfg, catalogue=cat, run_id="publish-3", min_confidence=0.5,
                       max_spread_km=100.0)["catalogue_version"] is None
    assert _read(cat)["p1"]["lat_deg"] == 31.0


def test_numeric_catalogue_ids_and_configured_column_names(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path, "input.catalogue.id_column=item", "input.catalogue.lat_column=lat",
               "input.catalogue.lon_column=lon", "input.catalogue.source_column=src")
    cat = str(tmp_path / "catalogue")
    ddl = CATALOGUE_DDL.replace("photo_id STRING", "item BIGINT").replace("lat_deg", "lat").replace(
        "lon_deg", "lon").replace("location_source", "src")
    spark.createDataFrame([(7, "/p/7.jpg", None, None, None, None, None, None, None, None),
                           (8, "/p/8.jpg", None, None, None, None, None, None, None, None)], ddl
                          ).write.format("delta").save(cat)
    _night(spark, cfg.tables.results, [_pred("7", D1, "geotag-1"), _pred("not-a-number", D1, "geotag-1")])
    got = run_publish(spark, cfg, catalogue=cat, run_id="publish-1")
    assert got["published"] == 1 and got["not_in_catalogue"] == 1
    rows = {r["item"]: r for r in results.read_arrow(cat).to_pylist()}
    assert (rows[7]["lat"], rows[7]["src"], rows[8]["lat"]) == (10.0, "georank", None)


def test_a_catalogue_without_the_provenance_columns_is_refused_naming_the_ddl(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(tmp_path)
    cat = str(tmp_path / "catalogue")
    spark.createDataFrame([("p1", None, None)], "photo_id STRING, lat_deg DOUBLE, lon_deg DOUBLE").write.format(
        "delta").save(cat)
    _night(spark, cfg.tables.results, [_pred("p1", D1, "geotag-1")])
    with pytest.raises(SchemaError, match=r"missing \['location_source', .*ALTER TABLE delta.`.*` ADD COLUMNS "
                                          r"\(`location_source` STRING, `location_confidence` DOUBLE"):
        run_publish(spark, cfg, catalogue=cat, run_id="publish-1")
    assert results.read_arrow(cat).column("lat_deg").to_pylist() == [None]


def test_merge_into_a_folder_without_a_delta_table_is_refused(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from georank.errors import WriteError

    df = spark.createDataFrame([("p1",)], "photo_id STRING")
    with pytest.raises(WriteError, match=r"cannot merge into .*/nothing: expected a Delta table there, got none"):
        write.merge(df, str(tmp_path / "nothing"), on="t.photo_id = s.photo_id", when="true", set_columns={},
                    label="publish-1")


# ------------------------------------------------------------------------------ the job


def _job():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("publish_job", ROOT / "jobs" / "publish.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.parametrize("argv, message", [
    (["--min-confidence", "1.5"], "expected a number in [0, 1]"),
    (["--max-spread-km", "-3"], "expected a distance in km >= 0"),
    (["--min-confidence", "high"], "expected a number in [0, 1]"),
])
def test_the_parser_refuses_bad_thresholds(argv: list[str], message: str, capsys) -> None:  # type: ignore[no-untyped-def]
    from georank.cli import run_job

    job = _job()
    code = run_job("publish", job.main, add_args=job.add_args, argv=["--conf", str(ROOT / "conf" / "local.yaml"), *argv])
    out = capsys.readouterr()
    assert code == 2 and message in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["status"] == "failed"


def test_the_job_in_process_fills_the_summary(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The job's main with its own parser, in this process: through ./spark-submit.sh the same run
    cost ~100 s on this loaded 2-core machine (a JVM of its own), so it is not in the suite."""
    from georank.cli import Summary

    cfg, cat = _setup(spark, tmp_path)
    job = _job()
    p = argparse.ArgumentParser()
    job.add_args(p)
    args = p.parse_args(["--catalogue", cat, "--min-confidence", "0.5", "--max-spread-km", "100", "--dry-run"])
    summary = Summary(job="publish", run_id="publish-x")
    job.main(args, cfg, summary)
    assert summary["would_publish"] == 2 and summary["dry_run"] is True
