"""The geotag job end to end (local Spark) with all three candidate sources on: the predictions
table says which source won for each photo."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark, pytest.mark.slow]
N_PHOTOS = 4


def _predictions(cfg):  # type: ignore[no-untyped-def]
    """The run's prediction rows, read back with delta-rs (a second engine)."""
    from georank import results

    return results.read_predictions(cfg.tables.results)


def test_geotag_with_retrieved_generated_and_prototype_candidates(spark, tiny_world: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from support import tiny_conf

    from georank.cells import build_cells
    from georank.config import load_config
    from georank.spark.geotag import run_geotag

    conf = tiny_conf(
        tiny_world,
        tmp_path / "all-sources.yaml",
        skip={"enabled": False},  # every photo goes to the ranker, so every source is scored
        decide={"top_candidates": 16},  # every scored candidate kept in the row, whatever its score
        candidates={
            "retrieved": 6,
            "generated": {"enabled": True, "samples": 2, "n": 2, "max_new_tokens": 8},
            "prototypes": {"enabled": True, "uri": str(tmp_path / "cells"), "k": 3, "start_level": 2,
                           "max_photos_per_cell": 10, "epochs": 10},
        },
    )
    cfg = load_config(conf)
    built = build_cells(cfg)
    assert built["cells"] > 0
    photos = tmp_path / "photos"  # four query photos: every photo is ranked over all three sources
    photos.mkdir()
    for p in sorted((tiny_world / "queries").glob("*.jpg"))[:N_PHOTOS]:
        (photos / p.name).write_bytes(p.read_bytes())
    summary = run_geotag(spark, cfg, photos_uri=str(photos), run_date=dt.date(2026, 11, 23), run_id="sources-1")
    assert (summary["read"], summary["predicted"], summary["errors"]) == (N_PHOTOS, N_PHOTOS, 0), summary
    rows = _predictions(cfg).to_pylist()
    assert len(rows) == N_PHOTOS
    winners = {r["photo_id"]: r["winning_source"] for r in rows}
    print(f"\nwinning sources: {winners}")
    for r in rows:
        assert r["ranker_skipped"] is False
        # 6 retrieved + 3 prototypes (+ whatever valid answers the random tiny VLM gave: none expected)
        assert r["n_candidates"] >= 9
        top = r["top_candidates"]
        assert r["winning_source"] == top[0]["source"] in ("retrieved", "generated", "prototype")
        assert top[0]["score"] == max(c["score"] for c in top)
        sources = [c["source"] for c in top]
        assert len(top) == r["n_candidates"] and sources.count("retrieved") == 6 and sources.count("prototype") == 3
