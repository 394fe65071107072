"""One candidates interface for the three sources: order (tie rule), ranks, descriptions, images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from georank.candidates import (
    Candidate,
    check_sources,
    from_neighbours,
    generated_candidates,
    prototype_candidates,
    winning_source,
)
from georank.config import GeorankConfig
from georank.errors import ConfigError

torch.set_num_threads(1)


def _row(k: int = 20) -> dict[str, Any]:
    return {
        "photo_id": "p",
        "gallery_id": list(range(100, 100 + k)),
        "similarity": [1.0 - i / 100 for i in range(k)],
        "lat_deg": [10.0 + i for i in range(k)],
        "lon_deg": [20.0 + i for i in range(k)],
        "description": [f"City{i} Country" for i in range(k)],
        "image_uri": [f"/g/{i}.jpg" for i in range(k)],
        "index_version": "v",
    }


def test_sources_in_tie_order_with_ranks_and_no_images_outside_retrieval() -> None:
    cfg = GeorankConfig()
    gen = [Candidate("generated", 1.0, 2.0, None, None, rank=0), Candidate("generated", 3.0, 4.0, None, None, rank=1)]
    proto = [Candidate("prototype", 5.0, 6.0, "Paris France", None, similarity=0.5, rank=0)]
    pc = from_neighbours(_row(), cfg, generated=gen, prototypes=proto)
    sources = [c.source for c in pc.candidates]
    assert sources == ["retrieved"] * 12 + ["generated"] * 2 + ["prototype"]
    assert [c.rank for c in pc.candidates if c.source == "retrieved"] == list(range(12))
    assert all(c.image_uri is None for c in pc.candidates if c.source != "retrieved")
    assert all(c.description is None for c in pc.candidates if c.source == "generated")
    assert pc.candidates[-1].description == "Paris France"
    assert [n.gallery_id for n in pc.negatives] == list(range(115, 120))  # neighbours 16-20
    assert len(pc.neighbour_latlon_deg) == 20  # the skip rule sees the retrieved neighbours only


def test_winning_source() -> None:
    top = [{"source": "generated", "score": 2.0}, {"source": "retrieved", "score": 1.0}]
    assert winning_source(top, ranker_skipped=False) == "generated"
    assert winning_source(top, ranker_skipped=True) == "retrieved"
    assert winning_source([], ranker_skipped=False) is None


def test_sources_are_checked_at_start_up() -> None:
    check_sources(GeorankConfig.model_validate({"candidates": {"generated": {"enabled": True}, "prototypes": {"enabled": True}}}))
    with pytest.raises(ConfigError, match=r"candidates.generated.n': expected at most candidates.generated.samples = 2"):
        check_sources(GeorankConfig.model_validate({"candidates": {"generated": {"enabled": True, "n": 3, "samples": 2}}}))
    with pytest.raises(ConfigError, match=r"candidates.prototypes.uri': expected the prototypes' index"):
        check_sources(GeorankConfig.model_validate({"candidates": {"prototypes": {"enabled": True, "uri": None}}}))
    with pytest.raises(ConfigError, match="index.placement=sharded"):
        check_sources(GeorankConfig.model_validate({"index": {"placement": "sharded"}, "candidates": {"prototypes": {"enabled": True}}}))


def test_disabled_sources_give_nothing_and_load_nothing() -> None:
    cfg = GeorankConfig()
    assert prototype_candidates(cfg, np.zeros((2, 4), np.float32)) == [[], []]
    assert generated_candidates(cfg, [object(), object()]) == ([[], []], {})


def test_prototype_candidates_from_a_cells_index(tmp_path: Path) -> None:
    from georank.cells.prototypes import l2_normalize
    from georank.cells.store import cell_keys, write_cells_index
    from georank.config import PrototypeConfig, S3Config

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 200), rng.uniform(-180, 180, 200)
    emb = l2_normalize(rng.normal(size=(200, 8)))
    keys = cell_keys(lat, lon, emb, PrototypeConfig(start_level=1, max_photos_per_cell=30, epochs=2))
    write_cells_index(keys, uri=str(tmp_path / "cells"), s3=S3Config(), n_shards=2, embed_version="e", gallery_index_version=None)
    cfg = GeorankConfig.model_validate({"candidates": {"prototypes": {"enabled": True, "uri": str(tmp_path / "cells"), "k": 4}}})
    got = prototype_candidates(cfg, emb[:3], embed_version="e")
    assert [len(c) for c in got] == [4, 4, 4]
    first = got[0]
    assert [c.rank for c in first] == [0, 1, 2, 3] and {c.source for c in first} == {"prototype"}
    assert all(c.image_uri is None and c.description is not None for c in first)
    sims = [c.similarity for c in first]
    assert sims == sorted(sims, reverse=True)
    assert all(c.gallery_id is None for c in first)  # not gallery photos
    centres = {(r["lat_deg"], r["lon_deg"]): r["description"] for r in keys.cells.to_pylist()}
    assert all(centres[(c.lat_deg, c.lon_deg)] == c.description for c in first)  # cell centres and their places
    from georank.errors import GalleryIndexError

    with pytest.raises(GalleryIndexError, match="expected the same"):
        prototype_candidates(cfg, emb[:1], embed_version="another")


def test_generated_candidates_one_call_for_the_batch(tiny_ranker: tuple[Path, Path]) -> None:
    base, adapter = tiny_ranker
    cfg = GeorankConfig.model_validate(
        {
            "rank": {"base_model_uri": str(base), "adapter_uri": str(adapter), "max_pixels": 56 * 56},
            "candidates": {"generated": {"enabled": True, "samples": 2, "n": 2, "max_new_tokens": 6}},
        }
    )
    images = [PIL.Image.new("RGB", (64, 48), (i * 60, 90, 30)) for i in range(3)]
    cands, dropped = generated_candidates(cfg, images)
    assert len(cands) == 3
    # the tiny random model answers garbage: every answer dropped, counted by reason, none invented
    assert sum(len(c) for c in cands) + sum(dropped.values()) == 6
    assert all(c.source == "generated" and c.image_uri is None and c.description is None for cs in cands for c in cs)
