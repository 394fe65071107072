"""Retrieval baselines evaluated beside the ranker, on the same photos and the same neighbours.

- :func:`nn_top1`: the location of the nearest gallery photo (retrieval top-1, "NN").
- :func:`knn_sigma`: [L]kNN with sigma = 4 as its authors' code does it (Vo, Hays, Hays:
  "Revisiting IM2GPS in the Deep Learning Era", ICCV 2017, ``predict_gps.m``):

  1. each of the top ``k`` (100) neighbours adds ``1 / d^10`` (``d``: the feature distance to
     the query) to its cell of a 1 x 1 degree grid;
  2. the grid is smoothed with a Gaussian of ``sigma`` (4) cells (longitude wraps around);
     the argmax cell is the coarse peak;
  3. refinement: the same votes on a 0.1-degree grid over +-20 degrees around the coarse peak,
     smoothed with the same sigma in degrees (4 degrees = 40 cells); the argmax is the peak;
  4. the prediction snaps to the highest-ranked neighbour within 100 km (geodesic) of the
     peak, or stays at the peak when none is that close.

  Only ratios of the weights matter, so they are computed as ``(d_min / d)^10`` (no overflow).

Feature distances come from the retrieval inner products of L2-normalised embeddings:
``d = sqrt(2 - 2 * similarity)``. Spark-free numpy; runs on executors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from georank.geo import distances_km


@dataclass(frozen=True)
class KnnConfig:
    """Parameters of :func:`knn_sigma` (defaults: Vo et al. 2017)."""

    k: int = 100  # neighbours that vote
    sigma_deg: float = 4.0  # Gaussian sigma: cells of the 1-degree grid, degrees on the fine grid
    power: float = 10.0  # vote = 1 / d^power
    coarse_cell_deg: float = 1.0
    fine_cell_deg: float = 0.1
    fine_window_deg: float = 20.0  # refinement window: +- this many degrees around the coarse peak
    snap_km: float = 100.0  # snap to the best-ranked neighbour within this distance of the peak


def feature_distance(similarity: np.ndarray) -> np.ndarray:
    """L2 distance ``(n,)`` between unit vectors from their inner products ``similarity (n,)``."""
    s = np.asarray(similarity, dtype=np.float64)
    return np.sqrt(np.clip(2.0 - 2.0 * s, 0.0, None))


def nn_top1(latlon_deg: np.ndarray) -> tuple[float, float]:
    """Retrieval top-1: the location of the first neighbour of ``latlon_deg (k, 2)`` (best first)."""
    pts = np.asarray(latlon_deg, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("nn_top1: expected at least one neighbour, got 0")
    return float(pts[0, 0]), float(pts[0, 1])


def _votes(dist: np.ndarray, power: float) -> np.ndarray:
    d = np.maximum(np.asarray(dist, dtype=np.float64), 1e-12)
    return (d.min() / d) ** power  # (k,), in (0, 1]; proportional to 1 / d^power


def _cell(x: np.ndarray, lo: float, cell: float, n: int) -> np.ndarray:
    return np.clip(np.floor((x - lo) / cell + 1e-9).astype(np.int64), 0, n - 1)


def _coarse_peak(pts: np.ndarray, w: np.ndarray, cfg: KnnConfig) -> tuple[float, float]:
    c = cfg.coarse_cell_deg
    n_lat, n_lon = round(180 / c), round(360 / c)
    grid = np.zeros((n_lat, n_lon))  # (lat cells from -90, lon cells from -180)
    np.add.at(grid, (_cell(pts[:, 0], -90.0, c, n_lat), _cell(pts[:, 1], -180.0, c, n_lon)), w)
    smooth = gaussian_filter(grid, sigma=cfg.sigma_deg / c, mode=("constant", "wrap"))
    i, j = np.unravel_index(int(np.argmax(smooth)), smooth.shape)  # first maximum on ties
    return -90.0 + (i + 0.5) * c, -180.0 + (j + 0.5) * c


def _fine_peak(pts: np.ndarray, w: np.ndarray, peak: tuple[float, float], cfg: KnnConfig) -> tuple[float, float]:
    f, win = cfg.fine_cell_deg, cfg.fine_window_deg
    lat_lo, lat_hi = max(-90.0, peak[0] - win), min(90.0, peak[0] + win)
    lon_lo = peak[1] - win
    n_lat, n_lon = round((lat_hi - lat_lo) / f), round(2 * win / f)
    lon = (pts[:, 1] - lon_lo) % 360.0 + lon_lo  # unwrap longitudes into [lon_lo, lon_lo + 360)
    inside = (pts[:, 0] >= lat_lo) & (pts[:, 0] <= lat_hi) & (lon <= lon_lo + 2 * win)
    grid = np.zeros((n_lat, n_lon))
    np.add.at(grid, (_cell(pts[inside, 0], lat_lo, f, n_lat), _cell(lon[inside], lon_lo, f, n_lon)), w[inside])
    smooth = gaussian_filter(grid, sigma=cfg.sigma_deg / f, mode="constant")
    i, j = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    lat = lat_lo + (i + 0.5) * f
    lon_deg = (lon_lo + (j + 0.5) * f + 180.0) % 360.0 - 180.0
    return float(round(lat, 9)), float(round(lon_deg, 9))


def knn_sigma(latlon_deg: np.ndarray, dist: np.ndarray, cfg: KnnConfig | None = None) -> tuple[float, float]:
    """[L]kNN prediction ``(lat_deg, lon_deg)`` from neighbours ``latlon_deg (k, 2)`` (best first)
    and their feature distances ``dist (k,)``; only the first ``cfg.k`` neighbours vote."""
    cfg = cfg or KnnConfig()
    pts = np.asarray(latlon_deg, dtype=np.float64).reshape(-1, 2)[: cfg.k]
    d = np.asarray(dist, dtype=np.float64).reshape(-1)[: cfg.k]
    if len(pts) == 0 or len(pts) != len(d):
        raise ValueError(f"knn_sigma: expected k >= 1 neighbours with one distance each, got {len(pts)} and {len(d)}")
    w = _votes(d, cfg.power)
    peak = _fine_peak(pts, w, _coarse_peak(pts, w, cfg), cfg)
    near = np.flatnonzero(distances_km(peak[0], peak[1], pts) < cfg.snap_km)
    if len(near):
        best = int(near[0])  # highest-ranked (best first) neighbour near the peak
        return float(pts[best, 0]), float(pts[best, 1])
    return peak


__all__ = ["KnnConfig", "feature_distance", "knn_sigma", "nn_top1"]
