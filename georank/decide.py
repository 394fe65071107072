"""Decide: the prediction, its confidence and the spread of its evidence; and the skip rule.

Definitions (also in docs/tables.md and the table comments):
- **prediction**: the candidate with the highest ranker score; ties go to the earliest
  candidate (retrieved in rank order, then generated, then prototypes). A NaN or infinite
  score is refused (PhotoError, stage ``rank``): the photo becomes an error row, never a
  prediction with a NaN confidence.
- **confidence**: the softmax mass (over the candidates' scores) of the candidates that lie
  within ``decide.confidence_radius_km`` of the prediction, the winner included: 1.0 when
  all the probable candidates agree on the place, small when the mass is spread out.
- **spread_km**: the softmax-weighted median geodesic distance from the candidates to the
  prediction: how far the evidence is from the answer, in km.
- **skip rule**: when the top ``skip.top_k`` neighbours' median geodesic distance to their
  centre is strictly below ``skip.spread_km``, the ranker is not run; the prediction is the
  top neighbour (``skip.take: top1``) or their centre (``centre``); confidence and spread are
  then computed with uniform weights over those neighbours.

Distances are WGS-84 geodesics (georank.geo). Spark-free; runs on executors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from georank.config import DecideConfig, SkipConfig
from georank.errors import PhotoError
from georank.geo import distances_km, geodesic_centre, median_distance_km


@dataclass(frozen=True)
class Decision:
    lat_deg: float
    lon_deg: float
    confidence: float
    spread_km: float
    winner: int  # index into the candidates (or neighbours when skipped); -1 for a centre
    weights: np.ndarray  # (n,) the weights used for confidence/spread


def softmax(scores: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of ``scores (n,)`` in float64."""
    s = np.asarray(scores, dtype=np.float64)
    e = np.exp(s - s.max())
    return e / e.sum()


def _decision(
    lat: float, lon: float, winner: int, latlon_deg: np.ndarray, weights: np.ndarray, cfg: DecideConfig
) -> Decision:
    """The prediction ``(lat, lon)`` with its confidence and spread over ``latlon_deg (n, 2)``."""
    return Decision(
        lat_deg=lat,
        lon_deg=lon,
        confidence=_confidence(lat, lon, latlon_deg, weights, cfg.confidence_radius_km),
        spread_km=median_distance_km(lat, lon, latlon_deg, weights),
        winner=winner,
        weights=weights,
    )


def _confidence(lat: float, lon: float, latlon_deg: np.ndarray, weights: np.ndarray, radius_km: float) -> float:
    near = distances_km(lat, lon, latlon_deg) < radius_km
    return float(np.clip(weights[near].sum(), 0.0, 1.0))


def decide(scores: np.ndarray, latlon_deg: np.ndarray, cfg: DecideConfig) -> Decision:
    """Pick the winner of ``scores (n,)`` over candidates ``latlon_deg (n, 2)``.

    Raises PhotoError("rank", ...) when a score is NaN or infinite: such a score can be no
    winner (``argmax`` would pick a NaN) and gives no confidence (the softmax is NaN).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(f"decide: expected scores of shape (n,) with n >= 1, got shape {s.shape}")
    if len(latlon_deg) != len(s):
        raise ValueError(f"decide: expected one (lat, lon) per score ({len(s)}), got {len(latlon_deg)}")
    bad = ~np.isfinite(s)
    if bad.any():
        raise PhotoError(
            "rank",
            f"the ranker gave {int(bad.sum())} of {len(s)} candidates a non-finite score "
            f"({', '.join(sorted({str(v) for v in s[bad]}))}): expected finite scores",
        )
    winner = int(np.argmax(s))  # first maximum: ties go to the earliest candidate
    lat, lon = float(latlon_deg[winner, 0]), float(latlon_deg[winner, 1])
    return _decision(lat, lon, winner, np.asarray(latlon_deg, dtype=np.float64), softmax(s), cfg)


def neighbour_spread_km(latlon_deg: np.ndarray, top_k: int) -> float:
    """Median geodesic distance (km) of the top ``top_k`` neighbours to their centre."""
    pts = np.asarray(latlon_deg, dtype=np.float64)[:top_k]
    c_lat, c_lon = geodesic_centre(pts)
    return median_distance_km(c_lat, c_lon, pts)


def should_skip(latlon_deg: np.ndarray, cfg: SkipConfig) -> bool:
    """True when the ranker can be skipped: the top neighbours already agree (strict <)."""
    if not cfg.enabled or len(latlon_deg) == 0:
        return False
    return neighbour_spread_km(latlon_deg, cfg.top_k) < cfg.spread_km


def decide_skipped(latlon_deg: np.ndarray, skip: SkipConfig, cfg: DecideConfig) -> Decision:
    """The decision when the ranker was skipped, from the top ``skip.top_k`` neighbours."""
    pts = np.asarray(latlon_deg, dtype=np.float64)[: skip.top_k]
    w = np.full(len(pts), 1.0 / len(pts))
    if skip.take == "centre":
        lat, lon = geodesic_centre(pts)
        winner = -1
    else:
        lat, lon = float(pts[0, 0]), float(pts[0, 1])
        winner = 0
    return _decision(lat, lon, winner, pts, w, cfg)
