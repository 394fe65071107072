"""The evaluate report's folder: ``report.md``, ``report.html`` and the PNG plots, from an
:class:`~georank.eval.report.EvalReport`.

Plots (matplotlib, Agg; drawn only when it is installed, e.g. ``pip install -e .[report]``):
``cdf.png`` (error distribution, log km), ``calibration.png`` (accuracy within
``evaluate.calibration_radius_km`` per confidence decile) and ``map.png`` (predictions vs truth
on the offline coastlines of :mod:`georank.eval.worldmap`). Runs on the driver.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np

from georank.eval.report import EvalReport, method_label

log = logging.getLogger(__name__)


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
        from georank.eval.plots import draw_plots

        plots = draw_plots(rep, out_dir, radius_km=radius_km)
    except ImportError as exc:
        log.warning("report without plots: %s (pip install -e .[report])", exc)
    md = _markdown(rep, radius_km, plots)
    (out_dir / "report.md").write_text(md)
    (out_dir / "report.html").write_text(_html(md))
    return {"report_md": str(out_dir / "report.md"), "report_html": str(out_dir / "report.html"),
            **{k: str(out_dir / v) for k, v in plots.items()}}


__all__ = ["accuracy_lines", "write_report"]
