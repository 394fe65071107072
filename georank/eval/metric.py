"""Accuracy at distance thresholds, as GeoRanker and OSV-5M report it.

The share of ALL benchmark rows whose prediction lies strictly closer than each
threshold (WGS-84 geodesic). A photo without a prediction (an error row, a null
coordinate) counts as a miss: it is never dropped from the denominator and never
turned into (0, 0). At every radius ``n = hits + misses``.

Spark-free; runs on the driver (and in the notebooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from georank.geo import pairwise_km, valid_latlon

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import pyarrow as pa

THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)


@dataclass(frozen=True)
class Accuracy:
    """Accuracy (fraction, not %) at each threshold over ``n`` rows, of which ``missing`` had no prediction.

    ``hits[i]`` rows lie strictly within ``thresholds_km[i]``; ``misses[i] = n - hits[i]`` (the
    ``missing`` rows are misses at every radius). Error statistics are over predicted rows only.
    """

    thresholds_km: tuple[float, ...]
    accuracy: tuple[float, ...]
    n: int
    missing: int
    median_km: float  # median error over predicted rows (nan when none)
    hits: tuple[int, ...] = ()
    mean_km: float = float("nan")  # mean error over predicted rows (nan when none)

    @property
    def misses(self) -> tuple[int, ...]:
        return tuple(self.n - h for h in self.hits)

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {f"acc@{t:g}km": round(a, 6) for t, a in zip(self.thresholds_km, self.accuracy)}
        out.update(n=self.n, missing=self.missing, median_km=round(self.median_km, 3), mean_km=round(self.mean_km, 3))
        return out


def error_km(pred_latlon_deg: np.ndarray, true_latlon_deg: np.ndarray) -> np.ndarray:
    """Geodesic error ``(n,)`` in km of ``pred_latlon_deg (n, 2)`` against ``true_latlon_deg (n, 2)``;
    ``inf`` where the prediction is missing or invalid (NaN, None, out of range)."""
    pred = np.asarray(pred_latlon_deg, dtype=np.float64).reshape(-1, 2)
    true = np.asarray(true_latlon_deg, dtype=np.float64).reshape(-1, 2)
    if pred.shape != true.shape:
        raise ValueError(f"expected predictions and truth of the same shape, got {pred.shape} and {true.shape}")
    bad_truth = [i for i, (a, b) in enumerate(true) if not valid_latlon(float(a), float(b))]
    if bad_truth:
        raise ValueError(f"expected valid true coordinates on every row, got invalid ones on rows {bad_truth[:5]}")
    have = np.array([valid_latlon(float(a), float(b)) for a, b in pred], dtype=bool)
    dist_km = np.full(len(pred), np.inf)
    if have.any():
        dist_km[have] = pairwise_km(pred[have], true[have])
    return dist_km


def accuracy_from_errors(dist_km: np.ndarray, thresholds_km: tuple[float, ...] = THRESHOLDS_KM) -> Accuracy:
    """Accuracy from per-row errors ``dist_km (n,)`` (``inf`` = no prediction, a miss at every radius)."""
    d = np.asarray(dist_km, dtype=np.float64).reshape(-1)
    if np.isnan(d).any():
        raise ValueError("expected errors in km or inf for a missing prediction, got NaN")
    n = len(d)
    have = np.isfinite(d)
    hits = tuple(int((d < t).sum()) for t in thresholds_km)  # strict <
    acc = tuple(h / n if n else 0.0 for h in hits)
    median = float(np.median(d[have])) if have.any() else float("nan")
    mean = float(np.mean(d[have])) if have.any() else float("nan")
    return Accuracy(tuple(thresholds_km), acc, n, int((~have).sum()), median, hits, mean)


def accuracy(
    pred_latlon_deg: np.ndarray, true_latlon_deg: np.ndarray, thresholds_km: tuple[float, ...] = THRESHOLDS_KM
) -> Accuracy:
    """``pred_latlon_deg (n, 2)`` (NaN rows = no prediction) against ``true_latlon_deg (n, 2)``."""
    return accuracy_from_errors(error_km(pred_latlon_deg, true_latlon_deg), tuple(thresholds_km))


# ----------------------------------------------------------------------------- per method (evaluate job)


def method_errors(preds: "pa.Table", truth: "pa.Table", methods: "Sequence[str] | None" = None) -> dict[str, np.ndarray]:
    """Per method, the error ``(n,)`` in km of every truth row, in the truth's order.

    ``preds``: schema.EVAL_PREDICTIONS; ``truth``: schema.BENCHMARK; ``methods``: which, in
    which order (default: those in ``preds``, the base methods first, then in order of appearance).
    A truth row without a prediction for a method (a failed photo, or no row at all) gets ``inf``:
    a miss everywhere. A prediction for a photo that is not in the truth is refused (the join
    must be exact).
    """
    from georank.schema import EVAL_BASE_METHODS

    ids = truth.column("photo_id").to_pylist()
    pos = {pid: i for i, pid in enumerate(ids)}
    true = np.column_stack([truth.column("lat_deg").to_numpy(), truth.column("lon_deg").to_numpy()]).astype(np.float64)
    rows = preds.select(["photo_id", "method", "lat_deg", "lon_deg"]).to_pylist()
    if methods is None:
        seen_methods = list(dict.fromkeys(r["method"] for r in rows))
        methods = [m for m in EVAL_BASE_METHODS if m in seen_methods] + [m for m in seen_methods if m not in EVAL_BASE_METHODS]
    out: dict[str, np.ndarray] = {}
    for m in methods:
        pred = np.full((len(ids), 2), np.nan)
        seen = np.zeros(len(ids), dtype=bool)
        for r in rows:
            if r["method"] != m:
                continue
            i = pos.get(r["photo_id"])
            if i is None:
                raise ValueError(f"method {m}: expected predictions only for benchmark photos, got {r['photo_id']!r}")
            if seen[i]:
                raise ValueError(f"method {m}: expected one prediction per photo, got two for {r['photo_id']!r}")
            seen[i] = True
            if r["lat_deg"] is not None and r["lon_deg"] is not None:
                pred[i] = (r["lat_deg"], r["lon_deg"])
        out[m] = error_km(pred, true)
    return out


def method_accuracy(preds: "pa.Table", truth: "pa.Table", thresholds_km: tuple[float, ...] = THRESHOLDS_KM,
                    methods: "Sequence[str] | None" = None) -> dict[str, Accuracy]:
    """:class:`Accuracy` of each method over every truth row (see :func:`method_errors`)."""
    return {m: accuracy_from_errors(d, thresholds_km) for m, d in method_errors(preds, truth, methods).items()}
