"""Cell prototypes and aerial keys (georank.cells)."""

from __future__ import annotations

import pyarrow as pa

from georank.schema.base import _f

# --- Cell prototypes and aerial keys (georank.cells, jobs/build_cells.py) ---------------------------

# One row per key of the prototypes' index (``<candidates.prototypes.uri>/<index_version>/cells.parquet``):
# the FAISS id of the key, its S2 cell and where a candidate from it points.
CELLS = pa.schema(
    [
        _f("prototype_id", pa.int64(), "FAISS id of the key in the prototypes' index", nullable=False),
        _f("cell_token", pa.string(), "S2 cell token (s2geometry)"),
        _f("level", pa.int32(), "S2 level of the cell (adaptive: start_level..15; aerial keys: 16)"),
        _f("kind", pa.string(), "prototype (proxy-classifier weight of a cell) | aerial (z_aerial + kappa * z_prototype)"),
        _f("lat_deg", pa.float64(), "Cell centre latitude, WGS-84 degrees: the candidate's location"),
        _f("lon_deg", pa.float64(), "Cell centre longitude, WGS-84 degrees"),
        _f("description", pa.string(), "Reverse-geocoded city, state, country of the centre, blanks dropped"),
        _f("n_photos", pa.int64(), "Gallery photos in the cell (0 for an aerial key)"),
    ]
)

# Aerial-tile embeddings (candidates.prototypes.aerial_uri, Parquet): one per S2 level-16 cell,
# from any aerial encoder whose vectors live in the query embedding space.
AERIAL_TILES = pa.schema(
    [
        _f("cell_token", pa.string(), "S2 level-16 cell token of the tile", nullable=False),
        _f("embedding", pa.list_(pa.float32()), "Tile embedding, same dim as the gallery index"),
    ]
)
