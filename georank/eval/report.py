"""The evaluate job's outputs from its predictions: the EVAL_RESULTS rows, calibration tables and
the numbers the report shows (:class:`EvalReport`). :mod:`georank.eval.render` writes it as
``report.md``, ``report.html`` and PNG plots (:mod:`georank.eval.plots`). Runs on the driver.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.eval.metric import Accuracy, accuracy_from_errors

log = logging.getLogger(__name__)

METHOD_LABELS = {
    "nn": "Retrieval top-1 (NN)",
    "knn": "[L]kNN, sigma=4 (Vo et al. 2017)",
    "ranker": "GeoRanker, every enabled source (skip rule off)",
    "full": "Full method (skip rule on)",
}


def method_label(method: str) -> str:
    """The report's words for a method of ``schema.eval_methods``.

    >>> method_label("ranker_prototype"), method_label("ranker@untrained")
    ('GeoRanker, prototype candidates alone', 'GeoRanker, adapter untrained (skip rule off)')
    """
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    if method.startswith("ranker_"):
        return f"GeoRanker, {method.removeprefix('ranker_')} candidates alone"
    if method.startswith("ranker@"):
        return f"GeoRanker, adapter {method.removeprefix('ranker@')} (skip rule off)"
    return method


@dataclass
class EvalReport:
    """Everything the report shows, computed once from the predictions and the truth."""

    benchmark: str
    candidates: str
    run_id: str
    accuracy: dict[str, Accuracy]
    errors_km: dict[str, np.ndarray]  # per method, (n,) in the truth's order, inf = failed
    calibration: list[dict[str, Any]]  # confidence deciles of the full method
    skip: dict[str, Any]  # skip-rule calibration
    versions: dict[str, str | None]
    adapter_versions: dict[str, str | None] = field(default_factory=dict)  # per method, when it differs (ranker@<name>)
    counts: dict[str, int] = field(default_factory=dict)  # benchmark reader counts (rows, zero_gps_*)
    truth_latlon_deg: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    full_latlon_deg: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def _by_photo(preds: pa.Table, method: str) -> dict[str, dict[str, Any]]:
    return {r["photo_id"]: r for r in preds.to_pylist() if r["method"] == method}


def confidence_calibration(preds: pa.Table, truth: pa.Table, err_km: np.ndarray, radius_km: float, *, method: str = "full",
                           bins: int = 10) -> list[dict[str, Any]]:
    """Accuracy within ``radius_km`` per confidence decile (equal-count bins over the photos that
    have a confidence), lowest confidence first, with counts and the decile's confidence range."""
    rows = _by_photo(preds, method)
    ids = truth.column("photo_id").to_pylist()
    conf = np.array([np.nan if rows.get(p, {}).get("confidence") is None else rows[p]["confidence"] for p in ids], dtype=np.float64)
    have = np.flatnonzero(np.isfinite(conf))
    order = have[np.argsort(conf[have], kind="stable")]
    out = []
    for i, part in enumerate(np.array_split(order, min(bins, len(order)) or 1)):
        if len(part) == 0:
            continue
        hits = int((err_km[part] < radius_km).sum())
        out.append({"decile": i + 1, "confidence_min": float(conf[part].min()), "confidence_max": float(conf[part].max()),
                    "n": int(len(part)), "hits": hits, "accuracy": hits / len(part)})
    return out


def skip_calibration(preds: pa.Table, truth: pa.Table, errors_km: dict[str, np.ndarray], radii_km: tuple[float, ...]) -> dict[str, Any]:
    """Skipped vs ranked photos of the full method: counts, skip rate, accuracy of each group at
    every radius, and what the ranker would have scored on the skipped photos."""
    rows = _by_photo(preds, "full")
    ids = truth.column("photo_id").to_pylist()
    skipped = np.array([bool(rows.get(p, {}).get("ranker_skipped")) for p in ids])
    predicted = np.isfinite(errors_km["full"]) if "full" in errors_km else np.zeros(len(ids), bool)
    ranked = predicted & ~skipped

    def acc(mask: np.ndarray, method: str) -> dict[str, float] | None:
        if not mask.any() or method not in errors_km:
            return None
        a = accuracy_from_errors(errors_km[method][mask], radii_km)
        return {f"{t:g}": v for t, v in zip(a.thresholds_km, a.accuracy)}

    n_pred = int(predicted.sum())
    return {
        "n_predicted": n_pred,
        "n_skipped": int(skipped.sum()),
        "n_ranked": int(ranked.sum()),
        "skip_rate": float(skipped.sum() / n_pred) if n_pred else 0.0,
        "accuracy_skipped": acc(skipped, "full"),
        "accuracy_ranked": acc(ranked, "full"),
        "ranker_on_skipped": acc(skipped, "ranker"),
    }


def results_table(rep: EvalReport, *, run_at: dt.datetime) -> pa.Table:
    """EVAL_RESULTS rows: one per method and radius."""
    rows = []
    for method, a in rep.accuracy.items():
        for t, acc, hits in zip(a.thresholds_km, a.accuracy, a.hits):
            rows.append({
                "run_id": rep.run_id, "run_at": run_at, "benchmark": rep.benchmark, "candidates": rep.candidates,
                "method": method, "radius_km": float(t), "accuracy": acc, "n": a.n, "hits": hits, "misses": a.n - hits,
                "failed": a.missing, "median_km": a.median_km, "mean_km": a.mean_km, **rep.versions,
                "adapter_version": rep.adapter_versions.get(method) or rep.versions.get("adapter_version"),
            })
    return pa.Table.from_pylist(rows, schema=S.EVAL_RESULTS)


def summary_numbers(rep: EvalReport) -> dict[str, Any]:
    """The JSON summary's headline numbers: per method n, failed, hits/misses and accuracy (%) per radius."""
    out: dict[str, Any] = {}
    for method, a in rep.accuracy.items():
        out[method] = {
            "n": a.n, "failed": a.missing,
            "hits": {f"{t:g}km": h for t, h in zip(a.thresholds_km, a.hits)},
            "misses": {f"{t:g}km": a.n - h for t, h in zip(a.thresholds_km, a.hits)},
            "acc_pct": {f"{t:g}km": round(100 * v, 2) for t, v in zip(a.thresholds_km, a.accuracy)},
            "median_km": None if np.isnan(a.median_km) else round(a.median_km, 3),
        }
    return out


__all__ = ["EvalReport", "method_label", "confidence_calibration", "results_table", "skip_calibration", "summary_numbers"]
