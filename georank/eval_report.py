"""The evaluate job's outputs from its predictions: the EVAL_RESULTS rows, calibration tables and
the report folder (``report.md``, ``report.html`` and PNG plots).

Plots (matplotlib, Agg; drawn only when it is installed, e.g. ``pip install -e .[report]``):
``cdf.png`` (error distribution, log km), ``calibration.png`` (accuracy within
``evaluate.calibration_radius_km`` per confidence decile) and ``map.png`` (predictions vs truth
on the offline coastlines of :mod:`georank.worldmap`). Runs on the driver.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.evaluate import Accuracy, accuracy_from_errors

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


# ----------------------------------------------------------------------------- text


def accuracy_lines(rep: EvalReport) -> list[str]:
    """The accuracy table as Markdown (accuracy in %, strict <)."""
    radii = next(iter(rep.accuracy.values())).thresholds_km if rep.accuracy else ()
    head = "| method | " + " | ".join(f"{t:g} km" for t in radii) + " | n | failed | median km | mean km |"
    lines = [head, "|" + "---|" * (len(radii) + 5)]
    for method, a in rep.accuracy.items():
        cells = " | ".join(f"{100 * v:.2f}" for v in a.accuracy)
        med = "-" if np.isnan(a.median_km) else f"{a.median_km:.1f}"
        mean = "-" if np.isnan(a.mean_km) else f"{a.mean_km:.1f}"
        lines.append(f"| {method_label(method)} | {cells} | {a.n} | {a.missing} | {med} | {mean} |")
    return lines


def _markdown(rep: EvalReport, radius_km: float, plots: dict[str, str]) -> str:
    lines = [f"# Evaluation: {rep.benchmark}", "",
             f"Run `{rep.run_id}`, candidates: {rep.candidates}. Versions: "
             + ", ".join(f"{k} `{v}`" for k, v in rep.versions.items()), "",
             "## Accuracy (% of ALL rows strictly within each distance; a failed photo is a miss)", "",
             *accuracy_lines(rep), ""]
    if rep.counts:
        lines += ["Benchmark file: " + ", ".join(f"{k} {v}" for k, v in rep.counts.items()), ""]
    if "cdf" in plots:
        lines += ["## Error distribution", "", f"![CDF of error km]({plots['cdf']})", ""]
    lines += [f"## Confidence calibration (full method, accuracy within {radius_km:g} km per confidence decile)", "",
              "| decile | confidence | n | hits | accuracy % |", "|---|---|---|---|---|"]
    lines += [f"| {c['decile']} | {c['confidence_min']:.3f} - {c['confidence_max']:.3f} | {c['n']} | {c['hits']} | "
              f"{100 * c['accuracy']:.1f} |" for c in rep.calibration]
    if "calibration" in plots:
        lines += ["", f"![confidence calibration]({plots['calibration']})"]
    s = rep.skip
    lines += ["", "## Skip rule", "",
              f"Skip rate {100 * s['skip_rate']:.1f}% ({s['n_skipped']} skipped, {s['n_ranked']} ranked, of {s['n_predicted']} predicted).", "",
              "| group | " + " | ".join(f"{t} km" for t in (s["accuracy_skipped"] or s["accuracy_ranked"] or {})) + " |"]
    keys = list((s["accuracy_skipped"] or s["accuracy_ranked"] or {}).keys())
    lines.append("|" + "---|" * (len(keys) + 1))
    for label, key in (("skipped (neighbours' decision)", "accuracy_skipped"), ("ranked", "accuracy_ranked"),
                       ("skipped, had the ranker run", "ranker_on_skipped")):
        vals = s[key]
        lines.append(f"| {label} | " + " | ".join("-" if vals is None else f"{100 * vals[k]:.1f}" for k in keys) + " |")
    if "map" in plots:
        lines += ["", "## Predictions vs truth (full method)", "", f"![map]({plots['map']})"]
    return "\n".join(lines) + "\n"


def _html(markdown: str) -> str:
    """A self-contained HTML page from the report's own Markdown subset (headings, tables, images)."""
    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, rows = table[0], [r for r in table[2:]]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<p><img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}" style="max-width:100%"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    flush()
    style = "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>georank evaluation</title><style>{style}</style></head><body>" \
           + "\n".join(body) + "</body></html>\n"


def write_report(rep: EvalReport, out_dir: Path, *, radius_km: float) -> dict[str, str]:
    """Write report.md, report.html and the PNG plots to ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    try:
        from georank.eval_plots import draw_plots

        plots = draw_plots(rep, out_dir, radius_km=radius_km)
    except ImportError as exc:
        log.warning("report without plots: %s (pip install -e .[report])", exc)
    md = _markdown(rep, radius_km, plots)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(_html(md))
    return {"report_md": str(out_dir / "report.md"), "report_html": str(out_dir / "report.html"),
            **{k: str(out_dir / v) for k, v in plots.items()}}


__all__ = ["EvalReport", "method_label", "confidence_calibration", "results_table", "skip_calibration", "summary_numbers", "write_report"]
