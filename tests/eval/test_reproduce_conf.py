"""conf/reproduce_georanker.yaml validates and switches each reference behaviour on; georank's own
behaviour stays the default."""

from __future__ import annotations

from pathlib import Path

from georank.config import GeorankConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_reproduction_config_sets_the_reference_behaviour() -> None:
    cfg = load_config(ROOT / "conf" / "reproduce_georanker.yaml")
    assert cfg.decode.max_side_px is None and cfg.decode.exif_orientation is False and cfg.decode.alpha == "drop"
    assert (cfg.rank.min_pixels, cfg.rank.max_pixels) == (4 * 28 * 28, 16384 * 28 * 28)
    assert cfg.rank.candidate_jpeg_quality == 75 and cfg.rank.dtype == "bfloat16" and cfg.rank.device == "cuda"
    assert (cfg.retrieve.k, cfg.retrieve.negatives_from, cfg.retrieve.negatives_count) == (20, 15, 5)  # the last five of 20
    assert cfg.candidates.retrieved == 12 and cfg.skip.enabled is False
    assert cfg.embed.kind == "g3" and cfg.index.type == "flat"
    assert cfg.evaluate.reference_zero_gps == "keep" and "{img_id}" in (cfg.evaluate.reference_image_uri or "")
    assert cfg.evaluate.radii_km == [1, 25, 200, 750, 2500]


def test_georank_defaults_stay_georank_behaviour() -> None:
    d = GeorankConfig()
    assert d.decode.max_side_px == 1024 and d.decode.exif_orientation is True and d.decode.alpha == "composite"
    assert d.skip.enabled is True and d.evaluate.reference_zero_gps == "drop"
