"""Nightly on a catalogue (issue 23): the night's photos are the catalogue's untagged ones that the
results table has no prediction (nor lasting error) for from the current versions, within a budget.

A tiny catalogue: the tiny world's 10 query photos (not the demo's 200: one in-process run costs
~10 s here), two of them already located, plus one file that is not an image."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from support import tiny_conf

from georank import write
from georank.catalogue import TRANSIENT_REASON, Backlog, current_versions, format_run_date, is_transient
from georank.config import load_config
from georank.errors import ConfigError, InputError, RunError
from georank.index import read_manifest
from georank.results import read_arrow
from georank.spark.catalogue import select_night
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
D0, D1, D2, D3, D4 = (dt.date(2026, 12, d) for d in (1, 2, 3, 4, 5))
LOCATED = {"q1", "q4"}
VERSION_COLUMNS = ("model_version", "adapter_version", "embed_version", "index_version")


def _catalogue(spark, world: Path, tmp: Path) -> str:  # type: ignore[no-untyped-def]
    """q0..q9 uploaded a day apart (q0 oldest), 'bad' (not an image) between q2 and q3; q1, q4 located."""
    bad = tmp / "not-an-image.jpg"
    bad.write_text("a list of ids, not an image")
    queries = sorted((world / "queries").glob("*.jpg"))
    t0 = dt.datetime(2026, 1, 1)
    rows = [(f"q{i}", str(p), 10.0 if f"q{i}" in LOCATED else None, 20.0 if f"q{i}" in LOCATED else None,
             t0 + dt.timedelta(days=i)) for i, p in enumerate(queries)]
    rows.append(("bad", str(bad), None, None, t0 + dt.timedelta(days=2, hours=12)))
    uri = str(tmp / "catalogue")
    spark.createDataFrame(rows, "photo_id string, uri string, lat_deg double, lon_deg double, uploaded_at timestamp") \
        .write.format("delta").save(uri)
    return uri


def _conf(world: Path, tmp: Path, name: str = "c.yaml", **catalogue):  # type: ignore[no-untyped-def]
    return tiny_conf(world, tmp / name, input={"photos_per_partition": 5,
                                               "catalogue": {"order_column": "uploaded_at", **catalogue}})


def _night(spark, conf: Path, catalogue: str, day: dt.date, run_id: str, **overrides):  # type: ignore[no-untyped-def]
    cfg = load_config(conf, [f"input.catalogue.{k}={v}" for k, v in overrides.items()])
    return cfg, run_geotag(spark, cfg, catalogue_uri=catalogue, run_date=day, run_id=run_id)


def _rows(cfg) -> list[dict]:  # type: ignore[no-untyped-def]
    return read_arrow(cfg.resolve(cfg.tables.results)).to_pylist()


def test_nights_on_a_catalogue_take_the_oldest_untagged_once_then_have_nothing_to_do(  # type: ignore[no-untyped-def]
        spark, tiny_world: Path, tmp_path: Path, monkeypatch) -> None:
    catalogue = _catalogue(spark, tiny_world, tmp_path)
    conf = _conf(tiny_world, tmp_path)
    oldest5 = {"q0", "q2", "bad", "q3", "q5"}

    # a night killed before its commit leaves nothing: the next night takes the same photos, whole
    def crash(*a, **kw):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("simulated crash at the commit")

    monkeypatch.setattr(write, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        _night(spark, conf, catalogue, D0, "night-0-crashed", max_photos_per_night=5)
    monkeypatch.undo()
    cfg = load_config(conf)
    assert not Path(cfg.resolve(cfg.tables.results)).exists()

    # night 1: the 5 oldest untagged (located q1, q4 never), the backlog reported
    cfg, s1 = _night(spark, conf, catalogue, D1, "night-1", max_photos_per_night=5)
    assert (s1["read"], s1["predicted"], s1["errors"]) == (5, 4, 1)
    assert {k: s1["catalogue"][k] for k in ("untagged", "older", "taken", "left", "nights_to_drain")} == \
        {"untagged": 9, "older": 0, "taken": 5, "left": 4, "nights_to_drain": 1}
    assert s1["catalogue"]["backlog"] == "backlog 9 (older 0), 5 tonight, 4 left (1 night at this rate)"
    rows = _rows(cfg)
    assert {r["photo_id"] for r in rows} == oldest5
    # the driver's versions, computed before the run, are the ones the run wrote; error rows carry them too
    versions = current_versions(cfg, read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)).as_dict()
    assert s1["catalogue"]["versions"] == versions
    for r in rows:
        assert {c: r[c] for c in VERSION_COLUMNS} == versions, r["photo_id"]
    assert [(r["photo_id"], r["error_stage"]) for r in rows if r["error_stage"]] == [("bad", "decode")]

    # night 2: the rest, nothing twice; the photo that failed to decode is not taken again
    _, s2 = _night(spark, conf, catalogue, D2, "night-2", max_photos_per_night=5)
    assert (s2["read"], s2["catalogue"]["untagged"], s2["catalogue"]["left"]) == (4, 4, 0)
    by_photo: dict[str, list[dt.date]] = {}
    for r in _rows(cfg):
        by_photo.setdefault(r["photo_id"], []).append(r["run_date"])
    assert set(by_photo) == {f"q{i}" for i in range(10)} - LOCATED | {"bad"}
    assert all(len(days) == 1 for days in by_photo.values())

    # night 3: nothing to do: exit 0, nothing committed, the summary says so
    before = write.table_version(spark, cfg.resolve(cfg.tables.results))
    _, s3 = _night(spark, conf, catalogue, D3, "night-3")
    assert s3["read"] == 0 and s3["table_version"] is None and "nothing was committed" in s3["nothing_to_do"]
    assert s3["catalogue"]["taken"] == 0
    assert write.table_version(spark, cfg.resolve(cfg.tables.results)) == before

    # a new adapter version: without --regeotag only the never-predicted photo is due ...
    adapter = tmp_path / "adapter-v2"
    shutil.copytree(tiny_world / "models" / "ranker" / "adapter", adapter)
    from safetensors.torch import load_file, save_file

    weights = adapter / "adapter_model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", "note": "v2"})
    conf2 = tiny_conf(tiny_world, tmp_path / "c.yaml", input={"photos_per_partition": 5,
                                                             "catalogue": {"order_column": "uploaded_at"}},
                      rank={"adapter_uri": str(adapter)})
    cfg2 = load_config(conf2)
    v2 = current_versions(cfg2, read_manifest(cfg2.resolve(cfg2.index.uri), cfg2.s3))
    assert v2.adapter_version != versions["adapter_version"]
    night = select_night(spark, cfg2, catalogue_uri=catalogue, versions=v2, run_date=D4)
    assert (night.backlog.untagged, night.backlog.older) == (1, 0)
    # ... with --regeotag older, after it, the photos predicted by older versions, oldest first
    cfg2, s4 = _night(spark, conf2, catalogue, D4, "night-4", max_photos_per_night=4, regeotag="older")
    assert {k: s4["catalogue"][k] for k in ("untagged", "older", "taken", "left")} == \
        {"untagged": 1, "older": 8, "taken": 4, "left": 5}
    rows = _rows(cfg2)
    tonight = {r["photo_id"]: r for r in rows if r["run_date"] == D4}
    assert set(tonight) == {"bad", "q0", "q2", "q3"}
    assert all(r["adapter_version"] == v2.adapter_version for r in tonight.values())
    # the older rows stay (history): q0 has its night-1 row and tonight's
    assert sorted(r["run_date"] for r in rows if r["photo_id"] == "q0") == [D1, D4]
    assert len(rows) == 9 + 4  # 8 untagged + the bad one over nights 1-2, then 4 tonight


def test_transient_failures_are_retried_up_to_the_limit_permanent_ones_never(spark, tiny_world: Path,  # type: ignore[no-untyped-def]
                                                                            tmp_path: Path) -> None:
    """The results table is the state: prior nights' rows written directly (no run needed)."""
    from georank import schema as S

    catalogue = _catalogue(spark, tiny_world, tmp_path)
    cfg = load_config(_conf(tiny_world, tmp_path, max_attempts=2))
    v = current_versions(cfg, read_manifest(cfg.resolve(cfg.index.uri), cfg.s3))
    old = {**v.as_dict(), "adapter_version": "0000000000000000"}

    def row(pid: str, day: dt.date, stage: str | None, reason: str | None, versions: dict) -> dict:  # type: ignore[type-arg]
        base = dict.fromkeys(S.RESULTS.names)
        return {**base, **versions, "photo_id": pid, "run_id": f"r-{day}", "run_date": day,
                "error_stage": stage, "error_reason": reason, "lat_deg": None if stage else 1.0}

    unreachable = "could not reach S3 for s3://b/q.jpg: EndpointConnectionError"
    rows = [
        row("q0", D0, "read", unreachable, v.as_dict()),  # one transient night: due again
        row("q2", D0, "read", unreachable, v.as_dict()),  # two transient nights: the limit
        row("q2", D1, "read", "access denied: s3://b/q2.jpg", v.as_dict()),
        row("q3", D0, "decode", "not an image: cannot identify image file", v.as_dict()),  # permanent
        row("q5", D0, "decode", "not an image: cannot identify image file", old),  # permanent, older versions: due
        row("q6", D0, None, None, v.as_dict()),  # predicted by the current versions
        row("q7", D0, None, None, old),  # predicted by older versions: due with regeotag older only
        row("q8", D2, None, None, v.as_dict()),  # predicted TONIGHT's date: a rerun of D2 redoes it
    ]
    from pyspark.sql import Row

    spark.createDataFrame([Row(**r) for r in rows], S.spark_schema(S.RESULTS)).write.format("delta") \
        .partitionBy("run_date").save(cfg.resolve(cfg.tables.results))
    night = select_night(spark, cfg, catalogue_uri=catalogue, versions=v, run_date=D2)
    due = {r["photo_id"] for r in night.photos.collect()}
    assert due == {"q0", "q5", "q8", "q9", "bad"}
    assert night.backlog == Backlog(untagged=5, older=0, taken=5, budget=None)
    cfg.input.catalogue.regeotag = "older"
    cfg.input.catalogue.max_photos_per_night = 6
    night = select_night(spark, cfg, catalogue_uri=catalogue, versions=v, run_date=D2)
    assert {r["photo_id"] for r in night.photos.collect()} == due | {"q7"}
    assert (night.backlog.untagged, night.backlog.older, night.backlog.taken) == (5, 1, 6)


def test_which_failures_are_transient_follows_the_storage_layers_words() -> None:
    from botocore.exceptions import ClientError

    from georank.isolation import RUN_LEVEL_KINDS
    from georank.storage.s3 import _local_error, _s3_error

    def s3(code: str):  # type: ignore[no-untyped-def]
        return _s3_error(ClientError({"Error": {"Code": code}}, "GetObject"), "s3://b/k.jpg")

    run_level = [_s3_error(RuntimeError("boom"), "s3://b/k.jpg"), s3("AccessDenied"), s3("ExpiredToken"),
                 s3("InvalidAccessKeyId"), _local_error(PermissionError(13, "denied"), Path("/p/k.jpg"))]
    assert {e.kind for e in run_level} == set(RUN_LEVEL_KINDS)
    for e in run_level + [s3("SlowDown")]:
        assert is_transient("read", e.reason), e.reason
    for e in [s3("NoSuchKey"), _local_error(FileNotFoundError(2, "x"), Path("/p/k.jpg"))]:
        assert not is_transient("read", e.reason), e.reason
    assert not is_transient("decode", "not an image: cannot identify image file")
    assert is_transient("rank", "the ranker failed: OutOfMemoryError: CUDA out of memory. Tried to allocate")
    assert TRANSIENT_REASON.startswith("^(")  # anchored: a path holding 'access denied' is no cause


def test_photos_uri_may_hold_the_run_date(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert format_run_date("s3://bucket/untagged/{run_date}/", D1) == "s3://bucket/untagged/2026-12-02/"
    with pytest.raises(ConfigError, match=r"expected only the placeholder \{run_date\}, got \{date\}"):
        format_run_date("s3://bucket/{date}/", D1)
    (tmp_path / "untagged" / "2026-12-02").mkdir(parents=True)
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "c.yaml"))
    with pytest.raises(RunError, match=r"got 0 read from .*/untagged/2026-12-02 \(an empty folder"):
        run_geotag(spark, cfg, photos_uri=str(tmp_path / "untagged" / "{run_date}"), run_date=D1, run_id="r")


def test_a_catalogue_without_the_named_columns_is_refused_naming_them(spark, tiny_world: Path,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path) -> None:
    catalogue = _catalogue(spark, tiny_world, tmp_path)
    cfg = load_config(_conf(tiny_world, tmp_path, lat_column="latitude"))
    v = current_versions(cfg, read_manifest(cfg.resolve(cfg.index.uri), cfg.s3))
    with pytest.raises(InputError, match=r"expected the columns input.catalogue.lat_column=latitude, got \[.*'lat_deg'"):
        select_night(spark, cfg, catalogue_uri=catalogue, versions=v, run_date=D1)
    with pytest.raises(InputError, match=r"catalogue not found: expected a Delta or Parquet table"):
        select_night(spark, cfg, catalogue_uri=str(tmp_path / "nowhere"), versions=v, run_date=D1)


def test_a_catalogue_night_of_mostly_bad_photos_commits_them_and_moves_on(spark, tiny_world: Path,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    """A photo's own lasting error (not an image) is the catalogue's state, not a systemic failure:
    a night whose photos mostly fail to decode commits their error rows, so the next night takes
    the next photos instead of failing on the same bad ones forever."""
    rows = []
    for i in range(3):
        bad = tmp_path / f"bad-{i}.jpg"
        bad.write_text(f"not an image {i}")
        rows.append((f"bad{i}", str(bad), None, None, dt.datetime(2026, 1, 1, i)))
    good = sorted((tiny_world / "queries").glob("*.jpg"))[0]
    rows.append(("good", str(good), None, None, dt.datetime(2026, 1, 2)))
    uri = str(tmp_path / "catalogue")
    spark.createDataFrame(rows, "photo_id string, uri string, lat_deg double, lon_deg double, uploaded_at timestamp") \
        .write.format("delta").save(uri)
    cfg, s = _night(spark, _conf(tiny_world, tmp_path), uri, D1, "night-bad", max_photos_per_night=3)
    assert (s["read"], s["predicted"], s["errors"]) == (3, 0, 3), s
    _, s2 = _night(spark, _conf(tiny_world, tmp_path), uri, D2, "night-next", max_photos_per_night=3)
    assert (s2["read"], s2["predicted"]) == (1, 1), s2
