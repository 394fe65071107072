"""The nightly job through the session's Spark: counts add up, reruns replace, edge cases."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_conf

from georank import schema as S
from georank.config import load_config
from georank.errors import InputError
from georank.results import read_arrow, read_errors, read_predictions
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
DAY = dt.date(2026, 11, 23)


def _run(spark, conf: Path, photos: str, run_id: str, **kw):  # type: ignore[no-untyped-def]
    cfg = load_config(conf, kw.pop("overrides", []))
    return cfg, run_geotag(spark, cfg, photos_uri=photos, run_date=kw.pop("run_date", DAY), run_id=run_id, **kw)


def test_run_then_rerun_leaves_one_row_per_photo(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml")
    queries = str(tiny_world / "queries")
    cfg, first = _run(spark, conf, queries, "run-1")
    assert first["read"] == 10 and first["predicted"] + first["errors"] == 10 and first["errors"] == 0
    _, second = _run(spark, conf, queries, "run-2")
    assert second["read"] == second["predicted"] == 10
    preds = read_predictions(cfg.tables.results)  # the second engine (delta-rs)
    assert preds.num_rows == 10 and len(set(preds.column("photo_id").to_pylist())) == 10
    assert set(preds.column("run_id").to_pylist()) == {"run-2"}
    row = preds.to_pylist()[0]
    for col in ("model_version", "adapter_version", "embed_version", "index_version"):
        assert row[col], col
    assert -90 <= row["lat_deg"] <= 90 and 0 <= row["confidence"] <= 1 and row["spread_km"] >= 0
    assert row["top_candidates"] and row["top_candidates"][0]["source"] == "retrieved"
    for r in preds.to_pylist():  # place names of the predicted point (georank.places.nearest_places)
        assert len(r["country_code"]) == 2 and r["place"] and r["place_dist_km"] >= 0, r
    assert not Path(cfg.tables.results).parent.joinpath("_staging", "results", "run-2").exists()
    assert second["table_version"] > first["table_version"]


def test_a_rerun_on_an_empty_or_broken_input_never_replaces_a_committed_night(spark, tiny_world: Path,  # type: ignore[no-untyped-def]
                                                                              tmp_path: Path) -> None:
    """Reproduced first (issue 22): a date committed with its predictions, then rerun on an empty
    folder (it committed 0 rows: the night gone, exit 0) and on a folder of files that are not
    images (it committed a night of error rows). Both now fail naming what was expected and seen,
    and the date keeps its rows. ``allow_empty`` commits an empty night on purpose."""
    from georank.errors import RunError

    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", input={"photos_per_partition": 3})
    cfg, first = _run(spark, conf, str(tiny_world / "queries"), "run-good")
    before = sorted((r["photo_id"], r["run_id"]) for r in read_predictions(cfg.tables.results).to_pylist())
    assert len(before) == first["predicted"] == 10
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunError, match=r"run run-empty: expected at least one photo, got 0 read from .*/empty \(an empty "
                                       r"folder, .*nothing was committed \(pass --allow-empty"):
        _run(spark, conf, str(empty), "run-empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(5):
        (bad / f"not-a-photo-{i}.jpg").write_text(f"a list of ids, not an image {i}")
    with pytest.raises(RunError, match=r"run run-bad: expected at most 50% of the photos to fail \(write.max_error_fraction"
                                       r"=0.5\), got 5 of 5 \(100.0%\); the most common failure: stage decode: not an image"):
        _run(spark, conf, str(bad), "run-bad")
    assert sorted((r["photo_id"], r["run_id"]) for r in read_predictions(cfg.tables.results).to_pylist()) == before
    assert read_errors(cfg.tables.results).num_rows == 0
    _, s = _run(spark, conf, str(empty), "run-empty-on-purpose", allow_empty=True)
    assert (s["read"], s["predicted"], s["errors"]) == (0, 0, 0)
    assert read_arrow(cfg.tables.results).num_rows == 0  # the table exists, typed, the date emptied on purpose
    assert read_arrow(cfg.tables.results).schema.names == S.RESULTS.names


def test_partition_whose_photos_all_fail(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every photo fails in its own way: each an error row with its reason (the error-fraction
    guard turned off for the test: write.max_error_fraction=1.0)."""
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", input={"photos_per_partition": 3}, write={"max_error_fraction": 1.0})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    good = (tiny_world / "queries" / "q000000.jpg").read_bytes()
    (bad / "half.jpg").write_bytes(good[: len(good) // 3])
    cfg, s = _run(spark, conf, str(bad), "run-bad")
    assert (s["read"], s["predicted"], s["errors"]) == (3, 0, 3)
    errors = {r["photo_id"]: r for r in read_errors(cfg.tables.results).to_pylist()}
    assert errors["zero"]["stage"] == "decode" and errors["zero"]["reason"] == "the file is empty (0 bytes)"
    assert errors["text"]["reason"].startswith("not an image")
    assert errors["half"]["reason"].startswith("truncated or corrupt image data")
    places = read_arrow(cfg.tables.results).select(["country_code", "admin1", "place", "place_dist_km"])
    assert all(c.null_count == 3 for c in places.columns)  # error rows carry no place names


def test_repeated_and_null_photo_ids(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A repeated id: the first row (by uri) is predicted, the other is an error row naming it;
    a null id is an error row. read = predicted + errors still holds."""
    q = sorted(str(p) for p in (tiny_world / "queries").glob("*.jpg"))
    table = pa.table({"photo_id": ["a", "a", "b", None], "uri": [q[1], q[0], q[2], q[3]]})
    pq.write_table(table, tmp_path / "photos.parquet")
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml")
    cfg, s = _run(spark, conf, str(tmp_path / "photos.parquet"), "run-dup")
    assert (s["read"], s["predicted"], s["errors"]) == (4, 2, 2)
    preds = read_predictions(cfg.tables.results).to_pylist()
    assert sorted(r["photo_id"] for r in preds) == ["a", "b"]
    assert [r["uri"] for r in preds if r["photo_id"] == "a"] == [q[0]]
    errs = read_errors(cfg.tables.results).to_pylist()
    dup = [e for e in errs if e["photo_id"] == "a"][0]
    assert dup["stage"] == "input" and dup["reason"] == f"duplicate photo id: the row with uri {q[0]} is processed instead"
    assert [e["reason"] for e in errs if e["photo_id"] is None] == ["the input row has no photo id"]
    with pytest.raises(InputError, match=r"photo ids repeat in the input \(input.duplicate_ids=fail\): expected unique ids, got repeats of \['a'\]"):
        _run(spark, conf, str(tmp_path / "photos.parquet"), "run-dup-2", overrides=["input.duplicate_ids=fail"])


def test_skip_rule_on_and_off(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml")
    queries = str(tiny_world / "queries")
    cfg, off = _run(spark, conf, queries, "run-off", overrides=["skip.enabled=false"])
    assert off["ranker_skipped"] == 0
    assert not any(read_predictions(cfg.tables.results).column("ranker_skipped").to_pylist())
    _, always = _run(spark, conf, queries, "run-always", overrides=["skip.spread_km=100000"])
    assert always["ranker_skipped"] == always["predicted"] == 10
    rows = read_predictions(cfg.tables.results).to_pylist()
    assert all(r["ranker_skipped"] for r in rows)
    assert all(c["score"] is None for r in rows for c in r["top_candidates"])


def test_missing_photos_folder_fails_at_start(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml")
    with pytest.raises(InputError, match="photos not found: expected a Delta/Parquet table, a folder of images or an s3:// prefix at"):
        _run(spark, conf, str(tmp_path / "nope"), "run-x")
    assert not shutil.os.path.exists(load_config(conf).tables.results)


def test_a_model_changed_under_a_running_job_fails_the_run_naming_it(spark, tiny_world: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch) -> None:
    """The driver pins every model once per run; a model folder republished after that (here: right
    after the run started, before any task ran) fails the run naming the artifact, never a night
    of mixed versions. Nothing is committed."""
    from georank.errors import RunError
    from georank.spark import commit

    clip = tmp_path / "clip"
    shutil.copytree(tiny_world / "models" / "clip", clip)
    conf = tiny_conf(tiny_world, tmp_path / "c.yaml", embed={"model_uri": str(clip)})
    real_begin = commit.begin

    def publish_then_begin(*a, **kw):  # type: ignore[no-untyped-def]
        (clip / "config.json").write_text((clip / "config.json").read_text() + "\n")  # a new version
        return real_begin(*a, **kw)

    monkeypatch.setattr(commit, "begin", publish_then_begin)
    with pytest.raises(RunError, match=rf"artifact {clip}\S* changed during the run: expected the version pinned"):
        _run(spark, conf, str(tiny_world / "queries"), "run-republished")
    assert not Path(load_config(conf).tables.results).exists()
