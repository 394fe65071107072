"""Golden test beside the ranker's image sizing (georank/rank/prompts.py snap_size/prepare_image):
the snapped sizes are the reference's (transformers' Qwen2-VL smart_resize) wherever both accept an
image, the one aspect limit is the processor's own 200, and a size the processor would refuse
inside the scorer is refused before, as a PhotoError of stage rank."""

from __future__ import annotations

import re

import PIL.Image
import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from georank.config import RankConfig
from georank.errors import PhotoError
from georank.rank.prompts import MAX_ASPECT_RATIO, prepare_image, snap_size

BOUNDS = {"min_pixels": 4 * 28 * 28, "max_pixels": 16384 * 28 * 28, "max_aspect_ratio": MAX_ASPECT_RATIO}
TINY = {**BOUNDS, "max_pixels": 50176}  # the tests' tiny-world rank.max_pixels

SIZES = [(100, 60), (640, 480), (1024, 768), (4000, 3000), (1990, 42), (8400, 42), (5000, 100), (333, 999), (56, 56), (1024, 5 * 28)]


@pytest.mark.parametrize("bounds", [BOUNDS, TINY], ids=["reference", "tiny"])
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_snapped_sizes_are_the_references(w: int, h: int, bounds: dict) -> None:
    ref_h, ref_w = smart_resize(h, w, factor=28, min_pixels=bounds["min_pixels"], max_pixels=bounds["max_pixels"])
    assert snap_size(w, h, **bounds) == (ref_w, ref_h)


def test_golden_sizes() -> None:
    assert snap_size(100, 60, **BOUNDS) == (112, 56)
    assert snap_size(1990, 10, **BOUNDS) == (1988, 28)  # short side floored at 28 px: ratio 71
    assert snap_size(1024, 5, **{**BOUNDS, "max_aspect_ratio": 1000}) == (1036, 28)
    assert prepare_image(PIL.Image.new("RGB", (100, 60)), RankConfig(), is_candidate=False).size == (112, 56)


def test_input_over_the_processors_ratio_is_refused() -> None:
    with pytest.raises(PhotoError, match=re.escape("rank: aspect ratio 204.8 of a 1024x5 image: expected <= 200")):
        snap_size(1024, 5, **BOUNDS)


def test_snapped_size_the_processor_would_refuse_is_refused_before_scoring() -> None:
    """14000x70 (ratio 200, accepted by decode with decode.max_side_px: null) rounds to 14000x56
    (ratio 250): Qwen2-VL's image processor raises ValueError on that inside the scorer; the snap
    refuses it first, as a photo's error."""
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        smart_resize(56, 14000, factor=28, min_pixels=BOUNDS["min_pixels"], max_pixels=BOUNDS["max_pixels"])
    with pytest.raises(PhotoError, match=re.escape("rank: aspect ratio 250.0 of a 14000x70 image snapped to 14000x56 for the ranker: expected <= 200")):
        snap_size(14000, 70, **BOUNDS)
    with pytest.raises(PhotoError, match="snapped to 14000x56"):
        prepare_image(PIL.Image.new("RGB", (14000, 70)), RankConfig(), is_candidate=True)
