"""Geodesic distances on the WGS-84 ellipsoid (geographiclib), never a haversine.

Shapes are in the names: ``latlon_deg (n, 2)``; distances in km.
"""

from __future__ import annotations

import math

import numpy as np
from geographiclib.geodesic import Geodesic

_WGS84 = Geodesic.WGS84


def latlon_problem(lat_deg: float | None, lon_deg: float | None) -> str | None:
    """What is wrong with a coordinate pair: ``"missing"``, ``"non_finite"``, ``"out_of_range"``
    (outside [-90, 90] x [-180, 180]), or None when it is a valid WGS-84 position. The one
    coordinate check; callers word the reason for their own rows.

    >>> latlon_problem(32.3, -64.8), latlon_problem(None, 1.0), latlon_problem(91.0, 0.0)
    (None, 'missing', 'out_of_range')
    """
    if lat_deg is None or lon_deg is None:
        return "missing"
    if not (math.isfinite(lat_deg) and math.isfinite(lon_deg)):
        return "non_finite"
    if not (-90.0 <= lat_deg <= 90.0 and -180.0 <= lon_deg <= 180.0):
        return "out_of_range"
    return None


def valid_latlon(lat_deg: float | None, lon_deg: float | None) -> bool:
    """True for finite coordinates inside [-90, 90] x [-180, 180]."""
    return latlon_problem(lat_deg, lon_deg) is None


def valid_latlon_mask(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """:func:`valid_latlon` over arrays (n,): a boolean mask (n,)."""
    lat, lon = np.asarray(lat_deg, dtype=np.float64), np.asarray(lon_deg, dtype=np.float64)
    return np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)


def geodesic_km(lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float) -> float:
    """Ellipsoidal geodesic distance in km between two points."""
    return float(_WGS84.Inverse(lat1_deg, lon1_deg, lat2_deg, lon2_deg, Geodesic.DISTANCE)["s12"]) / 1000.0


def distances_km(lat_deg: float, lon_deg: float, latlon_deg: np.ndarray) -> np.ndarray:
    """Distances (n,) in km from one point to each row of ``latlon_deg (n, 2)``."""
    return np.array([geodesic_km(lat_deg, lon_deg, float(a), float(b)) for a, b in latlon_deg], dtype=np.float64)


def pairwise_km(latlon_a_deg: np.ndarray, latlon_b_deg: np.ndarray) -> np.ndarray:
    """Row-wise distances (n,) in km between ``latlon_a_deg (n, 2)`` and ``latlon_b_deg (n, 2)``."""
    return np.array(
        [geodesic_km(float(a[0]), float(a[1]), float(b[0]), float(b[1])) for a, b in zip(latlon_a_deg, latlon_b_deg)],
        dtype=np.float64,
    )


def geodesic_centre(latlon_deg: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """The (weighted) spherical centroid of ``latlon_deg (n, 2)``: the normalised mean of the
    points' unit vectors, which for evidence spread over a few hundred km lies within metres of
    the ellipsoidal least-squares centre. Returns ``(lat_deg, lon_deg)``."""
    pts = np.asarray(latlon_deg, dtype=np.float64)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, dtype=np.float64)
    lat, lon = np.radians(pts[:, 0]), np.radians(pts[:, 1])
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    m = (xyz * w[:, None]).sum(axis=0)
    norm = np.linalg.norm(m)
    if norm < 1e-12:  # antipodal evidence: no meaningful centre; fall back to the heaviest point
        i = int(np.argmax(w))
        return float(pts[i, 0]), float(pts[i, 1])
    m /= norm
    c_lat, c_lon = math.degrees(math.asin(max(-1.0, min(1.0, m[2])))), math.degrees(math.atan2(m[1], m[0]))
    return c_lat, c_lon


def median_distance_km(lat_deg: float, lon_deg: float, latlon_deg: np.ndarray, weights: np.ndarray | None = None) -> float:
    """(Weighted) median geodesic distance in km from a point to ``latlon_deg (n, 2)``."""
    d = distances_km(lat_deg, lon_deg, latlon_deg)
    if len(d) == 0:
        return 0.0
    w = np.ones_like(d) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(w[order])
    idx = int(np.searchsorted(cum, 0.5 * cum[-1]))
    return float(d[order][min(idx, len(d) - 1)])
