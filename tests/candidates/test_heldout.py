"""On the demo world with regions held out of the retrieval index, cell prototypes bring candidates
near the truth where retrieval has none; the proxy classifier beats chance on held-in photos.

Held out = the gallery photos of every other query's S2 level-2 cell are left out of the gallery
INDEX; the proxy classifier that makes the prototypes is trained on the whole gallery's embeddings
(the second seed's setting: the index then only needs cell keys where ground photos are few).
Embeddings come from the demo's tiny random CLIP on its synthetic photos, so the figures show the
machinery, not real-world accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from georank.cells.partition import cell_id_of_token, leaf_cell_ids, parent_ids
from georank.cells.prototypes import enclosing_cell, predict
from georank.cells.store import cell_keys, write_cells_index
from georank.config import GeorankConfig, IndexConfig, PrototypeConfig, S3Config
from georank.geo import distances_km

torch.set_num_threads(1)
RADIUS_KM = 200.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_world: Path) -> dict[str, Any]:
    """A demo world of 360 gallery photos and 60 queries, embedded by the tiny world's CLIP."""
    from georank.demo.world import build_demo_world
    from georank.embed import get_embedder

    root = tmp_path_factory.mktemp("heldout-world")
    w = build_demo_world(root, gallery_photos=360, query_photos=60, seed=5)
    cfg = GeorankConfig.model_validate({"embed": {"model_uri": str(tiny_world / "models" / "clip")}})
    embedder = get_embedder(cfg)
    gallery, truth = pq.read_table(w.gallery_table), pq.read_table(w.queries_truth)
    g_images = [Image.open(u).convert("RGB") for u in gallery.column("uri").to_pylist()]
    q_images = [Image.open(w.queries_dir / f"{p}.jpg").convert("RGB") for p in truth.column("photo_id").to_pylist()]
    return {
        "root": root,
        "gallery": gallery,
        "g_emb": embedder.embed(g_images),
        "q_emb": embedder.embed(q_images),
        "q_latlon": np.stack([truth.column("lat_deg").to_numpy(), truth.column("lon_deg").to_numpy()], axis=1),
        "embed_version": embedder.version,
    }


def _any_within(q_latlon: np.ndarray, cand_lat: np.ndarray, cand_lon: np.ndarray) -> np.ndarray:
    """(q,) bool: at least one candidate of the query within RADIUS_KM (WGS-84 geodesic, strict <)."""
    return np.array(
        [(distances_km(a, b, np.stack([cand_lat[i], cand_lon[i]], axis=1)) < RADIUS_KM).any() for i, (a, b) in enumerate(q_latlon)]
    )


def test_prototypes_raise_coverage_where_the_gallery_is_held_out(world: dict[str, Any], tmp_path: Path) -> None:
    from georank.index import build_index
    from georank.retrieve import open_index

    g, q_latlon = world["gallery"], world["q_latlon"]
    g_lat, g_lon = g.column("lat_deg").to_numpy(), g.column("lon_deg").to_numpy()
    q_region = parent_ids(leaf_cell_ids(q_latlon[:, 0], q_latlon[:, 1]), 2)
    held = set(np.unique(q_region)[::2].tolist())
    kept = ~np.isin(parent_ids(leaf_cell_ids(g_lat, g_lon), 2), list(held))
    q_held = np.isin(q_region, list(held))
    assert 0 < kept.sum() < len(kept) and q_held.any()

    # retrieval over the held-in gallery (2 shards, exact merge)
    meta = pa.table({"gallery_id": g.column("gallery_id"), "lat_deg": g.column("lat_deg"), "lon_deg": g.column("lon_deg"),
                     "description": pa.array([""] * g.num_rows), "image_uri": g.column("uri")}).filter(pa.array(kept))
    build_index(ids=g.column("gallery_id").to_numpy()[kept], vectors=world["g_emb"][kept], meta=meta,
                cfg=IndexConfig(shards=2), uri=str(tmp_path / "index"), s3=S3Config(), embed_version=world["embed_version"])
    retrieved = open_index(str(tmp_path / "index"), S3Config()).search(world["q_emb"], 12)
    off = _any_within(q_latlon, retrieved.lat_deg, retrieved.lon_deg)

    # prototypes of the whole gallery's cells, in their own 2-shard index
    pcfg = PrototypeConfig(start_level=2, max_photos_per_cell=6, epochs=60, k=3)
    keys = cell_keys(g_lat, g_lon, world["g_emb"], pcfg)
    write_cells_index(keys, uri=str(tmp_path / "cells"), s3=S3Config(), n_shards=2,
                      embed_version=world["embed_version"], gallery_index_version=None)
    protos = open_index(str(tmp_path / "cells"), S3Config()).search(world["q_emb"], pcfg.k)
    on = off | _any_within(q_latlon, protos.lat_deg, protos.lon_deg)

    print(f"\nshare of {len(q_latlon)} queries with a candidate within {RADIUS_KM:g} km: prototypes off "
          f"{off.mean():.3f}, on {on.mean():.3f}; in held-out regions ({q_held.sum()} queries): off "
          f"{off[q_held].mean():.3f}, on {on[q_held].mean():.3f}; {keys.cells.num_rows} cells")
    assert off[q_held].mean() == 0.0  # nothing retrieved can be near a held-out query
    assert on.mean() >= off.mean() + 0.05
    assert on[q_held].mean() >= 0.2


def test_proxy_classifier_beats_chance_on_held_in_photos(world: dict[str, Any]) -> None:
    g, q_latlon = world["gallery"], world["q_latlon"]
    g_lat, g_lon = g.column("lat_deg").to_numpy(), g.column("lon_deg").to_numpy()
    q_region = parent_ids(leaf_cell_ids(q_latlon[:, 0], q_latlon[:, 1]), 2)
    held = set(np.unique(q_region)[::2].tolist())
    kept = ~np.isin(parent_ids(leaf_cell_ids(g_lat, g_lon), 2), list(held))
    pcfg = PrototypeConfig(start_level=2, max_photos_per_cell=6, epochs=60)
    keys = cell_keys(g_lat[kept], g_lon[kept], world["g_emb"][kept], pcfg)  # trained on the held-in gallery only
    n_cells = keys.cells.num_rows
    # training photos: top-1 cell vs always guessing the largest cell
    assert keys.train_accuracy > 3 * keys.chance_accuracy
    # unseen held-in queries whose truth lies in a cell: their predicted cell vs a uniform guess
    cell_ids = np.array([cell_id_of_token(t) for t in keys.cells.column("cell_token").to_pylist()], dtype=np.uint64)
    order = np.argsort(cell_ids)
    truth_cell = enclosing_cell(parent_ids(leaf_cell_ids(q_latlon[:, 0], q_latlon[:, 1]), 16), cell_ids[order])
    has = truth_cell >= 0
    predicted = predict(keys.vectors, world["q_emb"][has])
    accuracy = float((order[truth_cell[has]] == predicted).mean())
    print(f"\nproxy classifier over {n_cells} cells: train top-1 {keys.train_accuracy:.3f} (largest cell's share "
          f"{keys.chance_accuracy:.3f}); {has.sum()} held-in queries: top-1 {accuracy:.3f} (uniform {1 / n_cells:.3f})")
    assert has.sum() >= 8
    assert accuracy > 3 / n_cells
