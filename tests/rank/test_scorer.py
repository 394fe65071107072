"""Shared-prefix scoring equals the per-pair oracle; batching; the per-worker scorer."""

from __future__ import annotations

import numpy as np
import pytest
from rank_helpers import noise_image

from georank.config import RankConfig, S3Config
from georank.rank import RankCandidate, RankQuery, Scorer, get_scorer
from georank.rank.checkpoint import load_ranker

CFG = RankConfig(min_pixels=4 * 28 * 28, max_pixels=48 * 28 * 28, candidates_per_batch=16, photos_per_batch=4)
SIZES = [(56, 56), (84, 56), (56, 112), (140, 84), (70, 70), (30, 200)]


def _negatives(seed: int) -> list[RankCandidate]:
    rng = np.random.default_rng(seed)
    return [
        RankCandidate(float(rng.uniform(-90, 90)), float(rng.uniform(-180, 180)), f"Town{i} Region", None)
        for i in range(5)
    ]


def _query(n_candidates: int, seed: int, query_size: tuple[int, int] = (112, 84)) -> RankQuery:
    """Candidates mixing retrieved (various image sizes, blank descriptions) and generated ones,
    with negative and positive coordinates."""
    rng = np.random.default_rng(seed)
    cands = []
    for i in range(n_candidates):
        lat, lon = float(rng.uniform(-90, 90)), float(rng.uniform(-180, 180))
        if i % 4 == 3:
            cands.append(RankCandidate(lat, lon, None, None))  # generated
        else:
            desc = "" if i % 5 == 2 else f"City{i} State Country"
            w, h = SIZES[i % len(SIZES)]
            cands.append(RankCandidate(lat, lon, desc, noise_image(w, h, seed=seed * 100 + i)))
    if cands:  # the first candidate sits at negative latitude and longitude
        cands[0] = RankCandidate(-abs(cands[0].lat_deg), -abs(cands[0].lon_deg), cands[0].description, cands[0].image)
    return RankQuery(noise_image(*query_size, seed=seed), cands, _negatives(seed))


@pytest.fixture(scope="module")
def scorer(tiny_new, processor) -> Scorer:
    return Scorer(load_ranker(*tiny_new), processor, CFG)


@pytest.mark.parametrize("n_candidates", [1, 5, 15])
def test_shared_prefix_equals_per_pair(scorer: Scorer, n_candidates: int) -> None:
    queries = [_query(n_candidates, seed=n_candidates)]
    per_pair = scorer.score_per_pair(queries)
    shared = scorer.score_shared_prefix(queries)
    assert [s.shape for s in shared] == [(n_candidates,)]
    assert shared[0].dtype == np.float32
    np.testing.assert_allclose(shared[0], per_pair[0], rtol=0, atol=1e-4)
    assert np.ptp(per_pair[0]) > 1e-3 or n_candidates == 1  # the scores do tell candidates apart


def test_batching_across_photos_of_different_sizes(scorer: Scorer) -> None:
    """Photos with different query-image sizes (different prefix lengths) and candidate counts,
    batched together with chunks that straddle photos, equal the one-pair-at-a-time oracle."""
    queries = [
        _query(3, seed=1, query_size=(112, 84)),
        _query(0, seed=2),
        _query(2, seed=3, query_size=(56, 168)),
        _query(4, seed=4, query_size=(84, 84)),
    ]
    one_by_one = Scorer(scorer.model, scorer.processor, CFG.model_copy(update={"candidates_per_batch": 1}))
    oracle = one_by_one.score_per_pair(queries)
    for photos, cands in [(4, 16), (2, 3)]:
        cfg = CFG.model_copy(update={"photos_per_batch": photos, "candidates_per_batch": cands})
        batched = Scorer(scorer.model, scorer.processor, cfg)
        for got in (batched.score_shared_prefix(queries), batched.score_per_pair(queries)):
            assert [g.shape for g in got] == [(3,), (0,), (2,), (4,)]
            for g, o in zip(got, oracle):
                np.testing.assert_allclose(g, o, rtol=0, atol=1e-4)


def test_score_follows_config(scorer: Scorer) -> None:
    queries = [_query(4, seed=9)]
    shared = Scorer(scorer.model, scorer.processor, CFG.model_copy(update={"shared_prefix": True}))
    plain = Scorer(scorer.model, scorer.processor, CFG.model_copy(update={"shared_prefix": False}))
    np.testing.assert_allclose(shared.score(queries)[0], plain.score(queries)[0], rtol=0, atol=1e-4)
    assert plain.score([]) == [] and shared.score([]) == []


def test_get_scorer_builds_once_per_worker(tiny_new) -> None:
    from georank import resources

    base, adapter = tiny_new
    cfg = CFG.model_copy(update={"base_model_uri": str(base), "adapter_uri": str(adapter)})
    first = get_scorer(cfg, S3Config(), resolve=lambda uri: uri)
    again = get_scorer(cfg.model_copy(), S3Config(), resolve=lambda uri: uri)
    assert again is first
    assert len(first.model_version) == 16 and len(first.adapter_version) == 16
    key = (str(base), first.model_version, str(adapter), first.adapter_version)
    builds = {k[1][4]: v for k, v in resources._builds.items() if k[0] == "georanker" and k[1][:4] == key}
    assert list(builds.values()) == [1]
    assert '"candidates_per_batch": 16' in next(iter(builds))  # the rank config is part of the key
