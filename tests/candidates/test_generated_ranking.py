"""Generated candidates from a Qwen2-VL checkpoint given by URI reach the ranker: parsed, placed
after the retrieved ones, scored, and named as the winner when they win (core loop, no Spark)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from conftest import ANSWER_LATLON_DEG

from georank.config import GeorankConfig

torch.set_num_threads(1)


def _cfg(tiny_world: Path, vlm: Path, **extra: dict) -> GeorankConfig:
    from support import tiny_conf

    from georank.config import load_config

    conf = tiny_conf(
        tiny_world, tiny_world.parent / f"gen-{vlm.name}.yaml",
        skip={"enabled": False},
        decide={"top_candidates": 30},
        candidates={"retrieved": 4, "generated": {"enabled": True, "samples": 3, "n": 2, "model_uri": str(vlm)}},
        **extra,
    )
    return load_config(conf)


def test_a_separate_checkpoint_answers_and_every_answer_parses(tiny_world: Path, answering_vlm: Path) -> None:
    from georank.generate import build_generator

    cfg = _cfg(tiny_world, answering_vlm)
    gen = build_generator(cfg)
    assert gen.adapter_owner is None  # its own weights, nothing to switch off
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted((tiny_world / "queries").glob("*.jpg"))[:2]]
    answers = gen.answers(images)
    assert [a.texts for a in answers] == [["latitude: 12, lon=34"] * 3] * 2
    assert all(a.latlon_deg == [ANSWER_LATLON_DEG] * 2 and a.valid == 3 and not a.dropped for a in answers)


def test_generated_candidates_are_ranked_after_the_retrieved_ones(tiny_world: Path, answering_vlm: Path) -> None:
    from georank.index import read_manifest
    from georank.pipeline import decode_photos, geotag_partition
    from georank.run_info import RunInfo

    cfg = _cfg(tiny_world, answering_vlm)
    photos = sorted((tiny_world / "queries").glob("*.jpg"))[:3]
    decoded = decode_photos(pa.table({"photo_id": [p.stem for p in photos], "uri": [str(p) for p in photos],
                                      "image_bytes": pa.nulls(3, pa.binary())}), cfg)
    run = RunInfo("gen-run", dt.date(2026, 11, 23), read_manifest(cfg.resolve(cfg.index.uri), cfg.s3).to_dict())
    results = geotag_partition(decoded, cfg, run).to_pylist()
    assert [r["error_stage"] for r in results] == [None] * 3, [r["error_reason"] for r in results]
    for r in results:
        assert r["n_candidates"] == 4 + 2
        top = r["top_candidates"]
        generated = [c for c in top if c["source"] == "generated"]
        assert [(c["lat_deg"], c["lon_deg"]) for c in generated] == [ANSWER_LATLON_DEG] * 2
        assert all(c["gallery_id"] is None for c in generated)
        assert r["winning_source"] == top[0]["source"]
        # the two generated candidates are the same place with the same prompt: the same score
        # (up to float32 rounding between batch rows)
        assert generated[0]["score"] == pytest.approx(generated[1]["score"], rel=1e-5)


def test_generated_go_after_retrieved_and_before_prototypes(tiny_world: Path, answering_vlm: Path) -> None:
    """The tie order inside one ranker batch: retrieved, generated, prototype (candidates and the
    ranker's query stay aligned)."""
    from PIL import Image

    from georank.candidates import Candidate, PhotoCandidates
    from georank.rank import RankCandidate, RankQuery
    from georank.ranking import _add_generated, _ToRank

    cfg = _cfg(tiny_world, answering_vlm)
    image = Image.open(sorted((tiny_world / "queries").glob("*.jpg"))[0]).convert("RGB")
    usable = [Candidate("retrieved", 1.0, 1.0, "A", "/a.jpg", gallery_id=1), Candidate("prototype", 2.0, 2.0, "B", None, rank=0)]
    query = RankQuery(image=image, candidates=[RankCandidate(1.0, 1.0, "A", image), RankCandidate(2.0, 2.0, "B", None)], negatives=[])
    items = [_ToRank({"photo_id": f"p{i}"}, PhotoCandidates(list(usable), [], []), list(usable), [image, None], 0, query) for i in range(2)]
    out: list[dict] = []
    kept = _add_generated(items, cfg, out)
    assert out == [] and len(kept) == 2
    for item in kept:
        assert [c.source for c in item.usable] == ["retrieved", "generated", "generated", "prototype"]
        assert [(c.lat_deg, c.lon_deg) for c in item.query.candidates] == [(c.lat_deg, c.lon_deg) for c in item.usable]
        assert [c.description for c in item.query.candidates] == ["A", None, None, "B"]  # generated: no description
        assert item.images[1:3] == [None, None]
