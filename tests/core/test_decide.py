"""Decide: ties to the earliest candidate, documented confidence and spread, the skip rule."""

from __future__ import annotations

import numpy as np
import pytest

from georank.config import DecideConfig, SkipConfig
from georank.decide import decide, decide_skipped, neighbour_spread_km, should_skip, softmax
from georank.geo import geodesic_km

PARIS, LYON, TOKYO = (48.8566, 2.3522), (45.764, 4.8357), (35.6762, 139.6503)


def test_geodesic_is_ellipsoidal() -> None:
    # one degree of latitude at the equator on WGS-84 is 110.574 km (a sphere gives 111.195)
    assert geodesic_km(0.0, 0.0, 1.0, 0.0) == pytest.approx(110.574, abs=1e-3)


def test_ties_go_to_the_earliest_candidate() -> None:
    latlon = np.array([PARIS, LYON, TOKYO])
    d = decide(np.array([1.0, 3.0, 3.0], dtype=np.float32), latlon, DecideConfig())
    assert d.winner == 1 and (d.lat_deg, d.lon_deg) == LYON


def test_confidence_is_softmax_mass_within_radius() -> None:
    latlon = np.array([PARIS, (48.86, 2.35), TOKYO])
    scores = np.array([2.0, 1.0, 0.0])
    d = decide(scores, latlon, DecideConfig(confidence_radius_km=25))
    w = softmax(scores)
    assert d.confidence == pytest.approx(w[0] + w[1])
    assert d.spread_km < 1.0  # the weighted median candidate is within Paris


def test_skip_rule_strict_threshold() -> None:
    near = np.array([PARIS, (48.86, 2.36), (48.85, 2.34), (48.87, 2.35), (48.84, 2.33)])
    spread = neighbour_spread_km(near, 5)
    assert should_skip(near, SkipConfig(spread_km=spread + 1e-6))
    assert not should_skip(near, SkipConfig(spread_km=spread))  # strict <
    assert not should_skip(near, SkipConfig(enabled=False, spread_km=1e9))
    far = np.array([PARIS, TOKYO, LYON, PARIS, TOKYO])
    assert not should_skip(far, SkipConfig(spread_km=25))


def test_skipped_decision_top1_or_centre() -> None:
    pts = np.array([PARIS, (48.86, 2.36), (48.85, 2.34)])
    top1 = decide_skipped(pts, SkipConfig(take="top1"), DecideConfig())
    assert (top1.lat_deg, top1.lon_deg) == PARIS and top1.confidence == pytest.approx(1.0)
    centre = decide_skipped(pts, SkipConfig(take="centre"), DecideConfig())
    assert geodesic_km(centre.lat_deg, centre.lon_deg, *PARIS) < 2.0 and centre.winner == -1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused_not_picked(bad: float) -> None:
    """A NaN was argmax's winner (NaN confidence); inf took all the softmax mass. Now: a rank error."""
    from georank.errors import PhotoError

    latlon = np.array([PARIS, LYON, TOKYO])
    with pytest.raises(PhotoError, match=r"^rank: the ranker gave 1 of 3 candidates a non-finite score \((nan|inf|-inf)\): expected finite scores$") as err:
        decide(np.array([1.0, bad, 0.5], dtype=np.float32), latlon, DecideConfig())
    assert err.value.stage == "rank"


def test_scores_and_candidates_must_match() -> None:
    with pytest.raises(ValueError, match=r"expected one \(lat, lon\) per score \(2\), got 3"):
        decide(np.array([1.0, 2.0]), np.array([PARIS, LYON, TOKYO]), DecideConfig())
