"""Golden test beside the ranker's feature cache (georank/rank/features.py, Scorer._candidate_features):
candidate images' vision-tower output taken from the cache gives the scores of the uncached path
(pixels through the backbone's own tower) within 1e-5 in fp32, and the tower then sees no
candidate pixels; the cache is bounded by bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rank_helpers import noise_image

from georank.config import RankConfig
from georank.rank import RankCandidate, RankQuery, Scorer
from georank.rank.checkpoint import load_ranker
from georank.rank.features import FeatureCache
from georank.rank.prompts import encode_image, prepare_image

CFG = RankConfig(min_pixels=4 * 28 * 28, max_pixels=48 * 28 * 28, candidates_per_batch=5, photos_per_batch=2)
GALLERY = {g: noise_image(*size, seed=500 + g) for g, size in enumerate([(56, 56), (84, 56), (140, 84), (30, 200), (70, 70)])}


def _queries() -> list[RankQuery]:
    """Three photos whose candidates share gallery images (the same key, the same image; within a
    chunk of candidates_per_batch, across chunks and across calls), mixed
    with generated candidates (no image) and a candidate image without a key (never cached)."""
    negs = [RankCandidate(-10.0 - i, 20.0 + i, f"Town{i}", None) for i in range(5)]
    picks = [[0, 1, 0, None, 3], [2, 0, 4], [4, None, 1, 0, 3, 2]]  # gallery 0 twice in one chunk
    out = []
    for q, gallery_ids in enumerate(picks):
        cands = [
            RankCandidate(1.5 * i - q, 2.5 * i + q, None, None) if g is None
            else RankCandidate(-3.0 * i, 7.0 + q, f"City{g}", GALLERY[g], image_key=f"v1/{g}/{GALLERY[g].width}x{GALLERY[g].height}")
            for i, g in enumerate(gallery_ids)
        ]
        cands.append(RankCandidate(5.0, 6.0, "Unkeyed", noise_image(56, 84, seed=900 + q)))
        out.append(RankQuery(noise_image(112, 84, seed=q), cands, negs))
    return out


@pytest.fixture(scope="module")
def model(tiny_new):
    return load_ranker(*tiny_new)


def test_cached_features_give_the_uncached_scores(model, processor) -> None:
    queries = _queries()
    plain = Scorer(model, processor, CFG.model_copy(update={"feature_cache_mb": 0}))
    cached = Scorer(model, processor, CFG.model_copy(update={"feature_cache_mb": 4}))
    assert plain.features is None and cached.features is not None
    expected = plain.score_shared_prefix(queries)

    tower_patches: list[int] = []
    hook = model.model.visual.register_forward_hook(lambda m, args, out: tower_patches.append(int(args[0].shape[0])))
    try:
        first = cached.score_shared_prefix(queries)  # fills the cache (repeats within the run already hit)
        assert len(cached.features) == len(GALLERY) and cached.features.hits > 0
        first_patches = sum(tower_patches)
        tower_patches.clear()
        again = cached.score_shared_prefix(queries)  # every keyed gallery image from the cache
    finally:
        hook.remove()
    for got in (first, again):
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    assert np.ptp(np.concatenate(expected)) > 1e-3  # the scores tell candidates apart
    # second pass: the tower ran on the query images (prefixes) and the 3 unkeyed images only
    prefix_patches = sum(processor.image_processor(images=[q.image], return_tensors="pt")["pixel_values"].shape[0] for q in queries)
    unkeyed_patches = 3 * (56 // 14) * (84 // 14)
    assert sum(tower_patches) == prefix_patches + unkeyed_patches
    # first pass: each gallery image through the tower once, however often it was a candidate
    gallery_patches = sum(encode_image(processor, prepare_image(g, CFG, is_candidate=True)).pixel_values.shape[0] for g in GALLERY.values())
    assert first_patches == prefix_patches + unkeyed_patches + gallery_patches


def test_cache_key_carries_the_snapped_size_and_the_model(model, processor) -> None:
    s = Scorer(model, processor, CFG, model_version="m1", adapter_version="a1")
    key, hit = s._lookup("v1/7/56x56", 56, 56)
    assert hit is None and key == ("v1/7/56x56", 56, 56, "m1", "a1", "float32", 75)
    assert s._lookup("v1/7/56x56", 84, 56)[0] != key


def test_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    c = FeatureCache(max_bytes=3 * 40)  # three (10,) float32 tensors
    for k in "abc":
        c.put(k, torch.zeros(10))
    assert c.get("a") is not None  # "b" is now the least recently used
    c.put("d", torch.zeros(10))
    assert sorted(c.keys()) == ["a", "c", "d"] and c.nbytes == 120
    c.put("big", torch.zeros(31))  # larger than the whole budget: not kept, nothing evicted
    assert "big" not in c and len(c) == 3
    c.put("e", torch.zeros(20))  # 80 bytes: evicts the two least recently used ("c", then "a")
    assert c.keys() == ["d", "e"] and c.nbytes == 120
    assert (c.hits, c.get("zzz"), c.misses) == (1, None, 1)
    with pytest.raises(ValueError, match="max_bytes: expected >= 0, got -1"):
        FeatureCache(max_bytes=-1)
