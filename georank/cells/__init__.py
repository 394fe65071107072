"""Geographic-cell prototypes (and aerial keys) as extra retrieval keys (Lindenberger et al. 2025).

- :mod:`~georank.cells.partition`: adaptive S2 cells over the gallery (split while over a cap, to level 15);
- :mod:`~georank.cells.prototypes`: the proxy classifier whose l2-normalised weights are the prototypes,
  and aerial keys ``normalize(z_aerial + kappa * z_prototype)``;
- :mod:`~georank.cells.store`: the prototypes' index (built with georank.index, searched with
  georank.retrieve) and its ``cells.parquet``.

jobs/build_cells.py builds it; candidates with source ``prototype`` come from :func:`search_cells`.
"""

from __future__ import annotations

from georank.cells.store import build_cells, get_cells_index, search_cells

__all__ = ["build_cells", "get_cells_index", "search_cells"]
