"""Adaptive S2 cells over the gallery: a cell is split while it holds more than N gallery photos.

Cells come from the S2 geometry library (``s2geometry``): a photo's leaf cell (level 30) is
computed once, its ancestors by S2's bit arithmetic (``parent(level)`` keeps the bits above the
level's lowest set bit). Every photo starts in its cell at ``start_level``; every cell holding
more than ``max_photos_per_cell`` photos is replaced by its children that hold photos (all its
photos move one level down together), until no cell is over the cap or it is at ``max_level``
(15: the finest level of the second seed's prototypes). So every photo is in exactly one cell,
and the cells never overlap: dense places get fine cells, sparse ones keep coarse cells.

Runs on the driver (jobs/build_cells.py) and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_S2_LEVEL = 30


def leaf_cell_ids(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """The S2 leaf cell id (level 30) of each point, ``(n,) uint64``."""
    import s2geometry as s2

    lat = np.asarray(lat_deg, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
    return np.fromiter(
        (s2.S2CellId(s2.S2LatLng.FromDegrees(float(a), float(b))).id() for a, b in zip(lat, lon)),
        dtype=np.uint64,
        count=len(lat),
    )


def parent_ids(cell_ids: np.ndarray, level: np.ndarray | int) -> np.ndarray:
    """The ancestor at ``level`` (scalar or per cell) of each cell id ``(n,) uint64``, as S2's
    ``S2CellId::parent(level)``: ``(id & -lsb) | lsb`` with ``lsb = 1 << 2 * (30 - level)``."""
    ids = np.asarray(cell_ids, dtype=np.uint64)
    lvl = np.broadcast_to(np.asarray(level, dtype=np.uint64), ids.shape)
    lsb = np.left_shift(np.uint64(1), np.uint64(2) * (np.uint64(MAX_S2_LEVEL) - lvl))
    return (ids & (~lsb + np.uint64(1))) | lsb


def cell_levels(cell_ids: np.ndarray) -> np.ndarray:
    """The S2 level of each cell id ``(n,) -> (n,) int32`` (from the position of its lowest set bit)."""
    ids = np.asarray(cell_ids, dtype=np.uint64)
    lsb = ids & (~ids + np.uint64(1))
    trailing = np.log2(lsb.astype(np.float64)).round().astype(np.int32)  # exact: a power of two
    return (MAX_S2_LEVEL - trailing // 2).astype(np.int32)


def token(cell_id: int | np.uint64) -> str:
    """The S2 token of a cell id (``"47f"`` for the level-4 cell around Paris)."""
    import s2geometry as s2

    return str(s2.S2CellId(int(cell_id)).ToToken())


def cell_id_of_token(tok: str) -> int:
    """The cell id of an S2 token; :class:`ValueError` when it is not a valid cell."""
    import s2geometry as s2

    cell = s2.S2CellId.FromToken(tok)
    if not cell.is_valid():
        raise ValueError(f"not a valid S2 cell token: {tok!r}")
    return int(cell.id())


def centres_deg(cell_ids: np.ndarray) -> np.ndarray:
    """Centre of each cell, ``(n, 2)`` float64 (lat_deg, lon_deg)."""
    import s2geometry as s2

    out = np.zeros((len(cell_ids), 2), dtype=np.float64)
    for i, c in enumerate(np.asarray(cell_ids, dtype=np.uint64)):
        ll = s2.S2LatLng(s2.S2CellId(int(c)).ToPoint())
        out[i] = (ll.lat().degrees(), ll.lng().degrees())
    return out


@dataclass(frozen=True)
class Partition:
    """Gallery photos assigned to adaptive S2 cells.

    cell_ids: ``(c,) uint64`` the cells, sorted; levels: ``(c,) int32``; counts: ``(c,) int64``
    photos per cell; photo_cell: ``(n,) int64`` index into ``cell_ids`` of each photo's cell.
    """

    cell_ids: np.ndarray
    levels: np.ndarray
    counts: np.ndarray
    photo_cell: np.ndarray

    def __len__(self) -> int:
        return len(self.cell_ids)

    def tokens(self) -> list[str]:
        return [token(c) for c in self.cell_ids]


def partition(
    lat_deg: np.ndarray, lon_deg: np.ndarray, *, start_level: int, max_level: int, max_photos_per_cell: int
) -> Partition:
    """Adaptive cells of photos at ``lat_deg, lon_deg (n,)``; see the module docstring."""
    if not 0 <= start_level <= max_level <= MAX_S2_LEVEL:
        raise ValueError(f"expected 0 <= start_level <= max_level <= 30, got {start_level}, {max_level}")
    if max_photos_per_cell < 1:
        raise ValueError(f"expected max_photos_per_cell >= 1, got {max_photos_per_cell}")
    leaf = leaf_cell_ids(lat_deg, lon_deg)
    level = np.full(len(leaf), start_level, dtype=np.int32)
    cell = parent_ids(leaf, level)
    while True:
        uniq, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
        split = (counts > max_photos_per_cell) & (cell_levels(uniq) < max_level)
        if not split.any():
            break
        move = split[inverse]
        level[move] += 1
        cell[move] = parent_ids(leaf[move], level[move])
    return Partition(cell_ids=uniq, levels=cell_levels(uniq), counts=counts.astype(np.int64), photo_cell=inverse.astype(np.int64))


__all__ = ["Partition", "cell_id_of_token", "cell_levels", "centres_deg", "leaf_cell_ids", "parent_ids", "partition", "token"]
