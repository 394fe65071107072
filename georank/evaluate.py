"""Accuracy at distance thresholds, as GeoRanker and OSV-5M report it.

The share of ALL benchmark rows whose prediction lies strictly closer than each
threshold (WGS-84 geodesic). A photo without a prediction (an error row, a null
coordinate) counts as a miss: it is never dropped from the denominator and never
turned into (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from georank.geo import pairwise_km, valid_latlon

THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)


@dataclass(frozen=True)
class Accuracy:
    """Accuracy (fraction, not %) at each threshold over ``n`` rows, of which ``missing`` had no prediction."""

    thresholds_km: tuple[float, ...]
    accuracy: tuple[float, ...]
    n: int
    missing: int
    median_km: float  # over predicted rows (nan when none)

    def as_dict(self) -> dict[str, float]:
        out = {f"acc@{t:g}km": round(a, 6) for t, a in zip(self.thresholds_km, self.accuracy)}
        out.update(n=self.n, missing=self.missing, median_km=round(self.median_km, 3))
        return out


def accuracy(
    pred_latlon_deg: np.ndarray, true_latlon_deg: np.ndarray, thresholds_km: tuple[float, ...] = THRESHOLDS_KM
) -> Accuracy:
    """``pred_latlon_deg (n, 2)`` (NaN rows = no prediction) against ``true_latlon_deg (n, 2)``."""
    pred = np.asarray(pred_latlon_deg, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(true_latlon_deg, dtype=np.float64).reshape(-1, 2)
    if pred.shape != true.shape:
        raise ValueError(f"expected predictions and truth of the same shape, got {pred.shape} and {true.shape}")
    have = np.array([valid_latlon(a, b) for a, b in pred], dtype=bool)
    dist_km = np.full(len(pred), np.inf)
    if have.any():
        dist_km[have] = pairwise_km(pred[have], true[have])
    n = len(pred)
    acc = tuple(float((dist_km < t).sum() / n) if n else 0.0 for t in thresholds_km)
    median = float(np.median(dist_km[have])) if have.any() else float("nan")
    return Accuracy(tuple(thresholds_km), acc, n, int((~have).sum()), median)
