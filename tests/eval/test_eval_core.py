"""The evaluate core on the tiny demo world, without Spark: every method for every photo, the full
method is exactly what the nightly pipeline predicts for the same photos, each candidate source
alone is exactly the ranker over that source's candidates, and a compared adapter is scored on the
same photos and candidates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from support import tiny_conf

from georank import schema as S
from georank.config import load_config
from georank.eval.core import evaluate_partition, methods_of
from georank.io import list_images, photo_id_from_uri
from georank.pipeline import decode_photos, geotag_partition
from georank.run_info import RunInfo


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
    assert methods_of(cfg) == S.EVAL_METHODS  # one source, no compared adapter: the base rows only
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


def test_each_source_alone_and_a_compared_adapter(tiny_world: Path, tmp_path: Path) -> None:
    """``ranker_retrieved`` equals ranking the retrieved candidates alone (lat/lon exactly, confidence
    1e-6: the shared-prefix scorer batches 6 vs 9 candidates differently); ``ranker`` is the better
    of the sources; ``ranker@same`` (the run's own adapter) equals ``ranker``; the untrained adapter
    (the demo's step 0) gives other predictions."""
    from georank.cells import build_cells
    from georank.train.demo import save_untrained_adapter

    ranker_dir = tiny_world / "models" / "ranker"
    base_cfg = load_config(tiny_conf(tiny_world, tmp_path / "base.yaml"))
    untrained = save_untrained_adapter(base_cfg, base_dir=ranker_dir / "base", out_dir=tmp_path / "adapter_untrained")
    protos = {"enabled": True, "uri": str(tmp_path / "cells"), "k": 3, "start_level": 2, "max_photos_per_cell": 10, "epochs": 10}
    cfg = load_config(tiny_conf(
        tiny_world, tmp_path / "c.yaml", skip={"enabled": True}, candidates={"retrieved": 6, "prototypes": protos},
        evaluate={"compare_adapters": {"same": str(ranker_dir / "adapter"), "untrained": str(untrained)}},
    ))
    build_cells(cfg)
    methods = methods_of(cfg)
    assert methods == ("nn", "knn", "ranker", "full", "ranker_retrieved", "ranker_prototype", "ranker@same", "ranker@untrained")
    photos = _photos(tiny_world, cfg, 3)
    run = RunInfo("eval-sources", dt.date(2026, 11, 30))
    rows = evaluate_partition(photos, cfg, run).to_pylist()
    ids = photos.column("photo_id").to_pylist()
    assert sorted((r["photo_id"], r["method"]) for r in rows) == sorted((p, m) for p in ids for m in methods)
    assert all(r["error_stage"] == "read" for r in rows if r["photo_id"] == "missing")  # every row of a failed photo
    by = {(r["photo_id"], r["method"]): r for r in rows}
    print("\n" + "\n".join(f"{m:18s} " + "  ".join(
        f"({by[(p, m)]['lat_deg']:7.2f},{by[(p, m)]['lon_deg']:8.2f}) c={by[(p, m)]['confidence']:.3f}" for p in ids[:3])
        for m in methods if m not in ("nn", "knn")))

    retrieved_only = load_config(tiny_conf(tiny_world, tmp_path / "r.yaml", candidates={"retrieved": 6}))
    alone = {(r["photo_id"], r["method"]): r for r in evaluate_partition(photos.slice(0, 3), retrieved_only, run).to_pylist()}
    untrained_differs = False
    for p in ids[:3]:
        mine, ref = by[(p, "ranker_retrieved")], alone[(p, "ranker")]
        assert (mine["lat_deg"], mine["lon_deg"]) == (ref["lat_deg"], ref["lon_deg"]), p
        assert mine["confidence"] == pytest.approx(ref["confidence"], abs=1e-6), p
        ranker = (by[(p, "ranker")]["lat_deg"], by[(p, "ranker")]["lon_deg"])
        assert ranker in {(by[(p, m)]["lat_deg"], by[(p, m)]["lon_deg"]) for m in ("ranker_retrieved", "ranker_prototype")}
        same = by[(p, "ranker@same")]
        assert (same["lat_deg"], same["lon_deg"]) == ranker and same["confidence"] == pytest.approx(by[(p, "ranker")]["confidence"], abs=1e-6)
        assert same["adapter_version"] == by[(p, "ranker")]["adapter_version"]
        other = by[(p, "ranker@untrained")]
        assert other["adapter_version"] != same["adapter_version"] and other["ranker_skipped"] is False
        untrained_differs |= (other["lat_deg"], other["lon_deg"]) != ranker or abs(other["confidence"] - same["confidence"]) > 1e-3
    assert untrained_differs
