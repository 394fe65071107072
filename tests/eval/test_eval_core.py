"""The evaluate core on the tiny demo world, without Spark: every method for every photo, and the
full method is exactly what the nightly pipeline predicts for the same photos."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from support import tiny_conf

from georank import schema as S
from georank.config import load_config
from georank.eval_core import evaluate_partition
from georank.io import list_images, photo_id_from_uri
from georank.pipeline import RunInfo, decode_photos, geotag_partition


@pytest.fixture(scope="module")
def cfg(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_config(tiny_conf(tiny_world, tmp_path_factory.mktemp("eval-core") / "c.yaml"))


def _photos(world: Path, cfg, n: int) -> pa.Table:  # type: ignore[no-untyped-def]
    uris = list_images(str(world / "queries"), cfg.s3)[:n]
    uris.append(str(world / "queries" / "missing.jpg"))  # a benchmark photo whose image is absent
    return pa.table(
        {"photo_id": [photo_id_from_uri(u) for u in uris], "uri": uris, "image_bytes": pa.nulls(len(uris), pa.binary())},
        schema=S.PHOTOS,
    )


def test_every_method_for_every_photo_and_full_equals_the_nightly_prediction(tiny_world: Path, cfg) -> None:  # type: ignore[no-untyped-def]
    photos = _photos(tiny_world, cfg, 4)
    run = RunInfo("eval-test", dt.date(2026, 11, 30))
    out = evaluate_partition(photos, cfg, run)
    assert out.schema == S.EVAL_PREDICTIONS
    rows = out.to_pylist()
    assert sorted((r["photo_id"], r["method"]) for r in rows) == sorted(
        (p, m) for p in photos.column("photo_id").to_pylist() for m in S.EVAL_METHODS
    )
    missing = [r for r in rows if r["photo_id"] == "missing"]
    assert all(r["error_stage"] == "read" and r["lat_deg"] is None for r in missing)  # a miss, for every method
    by = {(r["photo_id"], r["method"]): r for r in rows}
    nightly = geotag_partition(decode_photos(photos.slice(0, 4), cfg), cfg, run).to_pylist()
    assert len(nightly) == 4
    assert {n["ranker_skipped"] for n in nightly} == {True, False}  # both branches of the skip rule are compared
    for n in nightly:
        full = by[(n["photo_id"], "full")]
        assert (full["lat_deg"], full["lon_deg"], full["ranker_skipped"]) == (n["lat_deg"], n["lon_deg"], n["ranker_skipped"])
        assert full["confidence"] == pytest.approx(n["confidence"])
        if not n["ranker_skipped"]:  # a ranked photo: the ranker method gives the same answer
            assert by[(n["photo_id"], "ranker")]["lat_deg"] == n["lat_deg"]
    assert {r["ranker_skipped"] for r in rows if r["method"] == "ranker" and r["error_stage"] is None} == {False}
    assert all(r["model_version"] and r["embed_version"] and r["index_version"] for r in rows if r["error_stage"] is None)
