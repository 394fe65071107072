"""On the demo world with regions held out of the retrieval index, cell prototypes bring candidates
near the truth where retrieval has none; the proxy classifier beats chance on held-in photos.

Held out = the gallery photos of every other query's S2 level-2 cell are left out of the gallery
INDEX. Prototypes cannot reach a region with no training photos at all: the cells are the
adaptive partition of the classifier's training photos (georank/cells/partition.py), so such a
region has no cell and no prototype (the second seed finds those places with aerial keys, which
the demo world has no imagery for). So the coverage test trains the classifier on the whole
gallery, the held-out regions included (the second seed's setting: a compact index of cell keys
stands in for ground photos that are not indexed), and checks the other side too: trained without
the held-out regions, the prototypes add nothing there. Embeddings come from the demo's tiny
random CLIP on its synthetic photos, so the figures show the machinery, not real-world accuracy.
"""

from __future__ import annotations

import math
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
QUERIES = 200  # enough held-in queries for a binomial bound on the classifier's accuracy to bite
FALSE_PASS = 1e-3  # chance that an image-blind guesser passes the classifier test


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_world: Path) -> dict[str, Any]:
    """A demo world of 360 gallery photos and QUERIES queries, embedded by the tiny world's CLIP."""
    from georank.demo.world import build_demo_world
    from georank.embed import get_embedder

    root = tmp_path_factory.mktemp("heldout-world")
    w = build_demo_world(root, gallery_photos=360, query_photos=QUERIES, seed=5)
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


def _held_out(world: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Every other S2 level-2 region holding a query is held out: (gallery photos kept (n,) bool,
    queries in a held-out region (q,) bool, the held-out regions' cell ids)."""
    g, q_latlon = world["gallery"], world["q_latlon"]
    q_region = parent_ids(leaf_cell_ids(q_latlon[:, 0], q_latlon[:, 1]), 2)
    held = set(np.unique(q_region)[::2].tolist())
    g_region = parent_ids(leaf_cell_ids(g.column("lat_deg").to_numpy(), g.column("lon_deg").to_numpy()), 2)
    kept, q_held = ~np.isin(g_region, list(held)), np.isin(q_region, list(held))
    assert 0 < kept.sum() < len(kept) and q_held.any()
    return kept, q_held, held


def test_prototypes_trained_on_unindexed_regions_find_their_places(world: dict[str, Any], tmp_path: Path) -> None:
    """Queries in regions whose ground photos are NOT in the retrieval index get candidates near the
    truth from the prototypes of a classifier trained on the whole gallery (those regions' photos
    included; the queries themselves are unseen photos). Trained on the held-in gallery only, the
    prototypes have no cell in a held-out region and add no coverage there: the prototypes stand in
    for unindexed photos, not for places nobody photographed."""
    from georank.index import build_index
    from georank.retrieve import open_index

    g, q_latlon = world["gallery"], world["q_latlon"]
    g_lat, g_lon = g.column("lat_deg").to_numpy(), g.column("lon_deg").to_numpy()
    kept, q_held, held = _held_out(world)

    # retrieval over the held-in gallery (2 shards, exact merge)
    meta = pa.table({"gallery_id": g.column("gallery_id"), "lat_deg": g.column("lat_deg"), "lon_deg": g.column("lon_deg"),
                     "description": pa.array([""] * g.num_rows), "image_uri": g.column("uri")}).filter(pa.array(kept))
    build_index(ids=g.column("gallery_id").to_numpy()[kept], vectors=world["g_emb"][kept], meta=meta,
                cfg=IndexConfig(shards=2), uri=str(tmp_path / "index"), s3=S3Config(), embed_version=world["embed_version"])
    retrieved = open_index(str(tmp_path / "index"), S3Config()).search(world["q_emb"], 12)
    off = _any_within(q_latlon, retrieved.lat_deg, retrieved.lon_deg)

    def with_prototypes(train: np.ndarray, name: str) -> tuple[np.ndarray, Any]:
        """Coverage with the prototypes of a classifier trained on the gallery photos ``train``, in their own 2-shard index."""
        pcfg = PrototypeConfig(start_level=2, max_photos_per_cell=6, epochs=60, k=3)
        keys = cell_keys(g_lat[train], g_lon[train], world["g_emb"][train], pcfg)
        write_cells_index(keys, uri=str(tmp_path / name), s3=S3Config(), n_shards=2,
                          embed_version=world["embed_version"], gallery_index_version=None)
        protos = open_index(str(tmp_path / name), S3Config()).search(world["q_emb"], pcfg.k)
        return off | _any_within(q_latlon, protos.lat_deg, protos.lon_deg), keys

    on, keys = with_prototypes(np.ones(len(kept), bool), "cells")
    blind, blind_keys = with_prototypes(kept, "cells-held-in")
    print(f"\nshare of {len(q_latlon)} queries with a candidate within {RADIUS_KM:g} km: prototypes off "
          f"{off.mean():.3f}, on {on.mean():.3f}; in held-out regions ({q_held.sum()} queries): off "
          f"{off[q_held].mean():.3f}, on {on[q_held].mean():.3f}, on without their photos in training "
          f"{blind[q_held].mean():.3f}; {keys.cells.num_rows} cells ({blind_keys.cells.num_rows} without)")
    assert off[q_held].mean() == 0.0  # nothing retrieved can be near a held-out query
    assert on.mean() >= off.mean() + 0.05
    assert on[q_held].mean() >= 0.2
    # the design's limit: no photos of a region in training, no cell there, nothing found there
    blind_regions = parent_ids(np.array([cell_id_of_token(t) for t in blind_keys.cells.column("cell_token").to_pylist()],
                                        dtype=np.uint64), 2)
    leaked = set(blind_regions.tolist()) & held
    assert not leaked, f"{len(leaked)} held-out regions have a cell of the classifier trained without their photos"
    assert blind[q_held].mean() <= 0.05, f"{blind[q_held].mean():.3f} of the held-out queries covered without their regions' photos"


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(max(k, 0), n + 1)))


def test_proxy_classifier_beats_chance_on_held_in_photos(world: dict[str, Any]) -> None:
    """Trained on the held-in gallery only, the classifier's top-1 cell for unseen held-in queries is
    right more often than any image-blind guess could manage by luck: with the guesser's hit rate
    p0 (uniform over the cells, or always the largest cell, whichever is higher), the chance of its
    scoring as many hits on this many queries is below FALSE_PASS (a binomial tail)."""
    g, q_latlon = world["gallery"], world["q_latlon"]
    g_lat, g_lon = g.column("lat_deg").to_numpy(), g.column("lon_deg").to_numpy()
    kept, _, _ = _held_out(world)
    pcfg = PrototypeConfig(start_level=2, max_photos_per_cell=6, epochs=60)
    keys = cell_keys(g_lat[kept], g_lon[kept], world["g_emb"][kept], pcfg)  # trained on the held-in gallery only
    n_cells = keys.cells.num_rows
    # training photos: top-1 cell vs always guessing the largest cell
    assert keys.train_accuracy > 3 * keys.chance_accuracy
    # unseen held-in queries whose truth lies in a cell: their predicted cell vs an image-blind guess
    cell_ids = np.array([cell_id_of_token(t) for t in keys.cells.column("cell_token").to_pylist()], dtype=np.uint64)
    order = np.argsort(cell_ids)
    truth_cell = enclosing_cell(parent_ids(leaf_cell_ids(q_latlon[:, 0], q_latlon[:, 1]), 16), cell_ids[order])
    has = truth_cell >= 0
    predicted = predict(keys.vectors, world["q_emb"][has])
    n, hits = int(has.sum()), int((order[truth_cell[has]] == predicted).sum())
    # the best photo-blind guess: always the largest cell, of the training photos or of these very queries
    p0 = max(1 / n_cells, keys.chance_accuracy, np.bincount(order[truth_cell[has]]).max() / n)
    need = next(k for k in range(n + 2) if _binomial_tail(k, n, p0) < FALSE_PASS)
    print(f"\nproxy classifier over {n_cells} cells: train top-1 {keys.train_accuracy:.3f} (largest cell's share "
          f"{keys.chance_accuracy:.3f}); {n} held-in queries: {hits} right, top-1 {hits / n:.3f} (blind guess {p0:.3f}: "
          f"{need} needed for P(luck) < {FALSE_PASS:g}; P(>= {hits}) = {_binomial_tail(hits, n, p0):.2g})")
    assert n >= 60, f"only {n} held-in queries lie in a cell: too few for the accuracy to mean something"
    assert hits >= need, f"{hits} of {n} right: an image-blind guess ({p0:.3f} a query) gets that many with probability " \
                         f"{_binomial_tail(hits, n, p0):.2g} >= {FALSE_PASS:g}"
