"""Adaptive S2 cells, the proxy classifier's prototypes, and the prototypes' sharded index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import s2geometry as s2
import torch

from georank.cells.partition import cell_levels, leaf_cell_ids, parent_ids, partition
from georank.cells.prototypes import aerial_keys, enclosing_cell, l2_normalize, predict, train_prototypes
from georank.cells.store import CELLS_FILE, CellKeys, cell_keys, write_cells_index
from georank.config import PrototypeConfig, S3Config

torch.set_num_threads(1)


def _clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Photos as real galleries hold them: dense around a few cities, sparse elsewhere."""
    rng = np.random.default_rng(seed)
    cities = np.array([[48.8566, 2.3522], [40.7128, -74.006], [35.6762, 139.6503], [-33.8688, 151.2093]])
    dense = cities[rng.integers(0, len(cities), n // 2)] + rng.normal(0, 0.02, (n // 2, 2))
    sparse = np.stack([rng.uniform(-70, 70, n - n // 2), rng.uniform(-180, 180, n - n // 2)], axis=1)
    latlon = np.concatenate([dense, sparse])
    return latlon[:, 0], latlon[:, 1]


def test_parent_ids_and_levels_match_s2() -> None:
    lat, lon = _clustered(300)
    leaf = leaf_cell_ids(lat, lon)
    for level in (0, 4, 11, 15, 16):
        ours = parent_ids(leaf, level)
        theirs = np.array([s2.S2CellId(int(c)).parent(level).id() for c in leaf], dtype=np.uint64)
        assert np.array_equal(ours, theirs)
        assert (cell_levels(ours) == level).all()


@pytest.mark.parametrize(("cap", "start"), [(25, 4), (3, 2), (1000, 4)])
def test_partition_invariants(cap: int, start: int) -> None:
    lat, lon = _clustered(1200)
    part = partition(lat, lon, start_level=start, max_level=15, max_photos_per_cell=cap)
    # every photo in exactly one cell, and that cell contains the photo
    assert part.photo_cell.shape == (1200,)
    assert part.counts.sum() == 1200
    assert np.array_equal(np.bincount(part.photo_cell, minlength=len(part)), part.counts)
    for i in range(0, 1200, 37):
        cell = s2.S2Cell(s2.S2CellId(int(part.cell_ids[part.photo_cell[i]])))
        assert cell.Contains(s2.S2LatLng.FromDegrees(float(lat[i]), float(lon[i])).ToPoint())
    # no cell over the cap unless at the finest level
    over = part.counts > cap
    assert (part.levels[over] == 15).all()
    assert ((part.levels >= start) & (part.levels <= 15)).all()
    # valid S2 tokens that round-trip, and cells that never overlap (no cell inside another)
    ids = part.cell_ids
    for tok, cid in zip(part.tokens(), ids):
        back = s2.S2CellId.FromToken(tok)
        assert back.is_valid() and back.id() == int(cid)
    for level in sorted(set(part.levels.tolist())):
        ancestors = set(parent_ids(ids[part.levels > level], level).tolist())
        assert not ancestors & set(ids[part.levels == level].tolist())
    if cap == 3:  # dense cities split finer than the sparse rest
        assert part.levels.max() > start + 5
        assert len(set(part.levels.tolist())) > 3


def test_partition_refuses_bad_levels() -> None:
    with pytest.raises(ValueError, match="start_level <= max_level"):
        partition(np.zeros(1), np.zeros(1), start_level=16, max_level=15, max_photos_per_cell=3)


def test_proxy_classifier_learns_separable_cells() -> None:
    rng = np.random.default_rng(1)
    centres = l2_normalize(rng.normal(size=(6, 16)))
    labels = rng.integers(0, 6, 600)
    x = centres[labels] + 0.35 * rng.normal(size=(600, 16))
    protos = train_prototypes(x, labels, 6, epochs=30, learning_rate=0.05, logit_scale=16.0, seed=0)
    assert protos.vectors.shape == (6, 16)
    assert np.allclose(np.linalg.norm(protos.vectors, axis=1), 1.0, atol=1e-5)
    assert protos.train_accuracy > 0.9 > protos.chance_accuracy
    again = train_prototypes(x, labels, 6, epochs=30, learning_rate=0.05, logit_scale=16.0, seed=0)
    assert np.array_equal(again.vectors, protos.vectors)  # deterministic for a seed
    assert (predict(protos.vectors, centres) == np.arange(6)).all()


def test_aerial_keys_combine_with_the_enclosing_prototype() -> None:
    lat, lon = np.array([48.85, 48.86, 40.7]), np.array([2.35, 2.36, -74.0])
    part = partition(lat, lon, start_level=4, max_level=15, max_photos_per_cell=5)
    inside = parent_ids(leaf_cell_ids(np.array([48.851, -10.0]), np.array([2.351, -140.0])), 16)  # Paris, mid-Pacific
    owner = enclosing_cell(inside, part.cell_ids)
    assert owner[1] == -1 and part.cell_ids[owner[0]] == parent_ids(leaf_cell_ids(lat[:1], lon[:1]), int(part.levels[owner[0]]))[0]
    z_a, z_p = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    assert np.allclose(aerial_keys(z_a, z_p, kappa=1.0), [[2**-0.5, 2**-0.5]])
    assert np.allclose(aerial_keys(z_a, z_p, kappa=0.0), [[1.0, 0.0]])


def test_cells_index_shards_merge_to_one_index(tmp_path: Path) -> None:
    """The prototypes' 3-shard index returns exactly what one exact index over all keys returns."""
    import faiss

    from georank.retrieve import open_index

    lat, lon = _clustered(400)
    rng = np.random.default_rng(2)
    emb = l2_normalize(rng.normal(size=(400, 24)))
    cfg = PrototypeConfig(start_level=3, max_photos_per_cell=20, epochs=3)
    keys = cell_keys(lat, lon, emb, cfg)
    assert isinstance(keys, CellKeys) and keys.vectors.shape[0] == keys.cells.num_rows
    manifest = write_cells_index(keys, uri=str(tmp_path / "cells"), s3=S3Config(), n_shards=3,
                                 embed_version="e1", gallery_index_version="g1")
    assert manifest.n_shards == 3 and manifest.ntotal == keys.cells.num_rows
    cells = pq.read_table(tmp_path / "cells" / manifest.index_version / CELLS_FILE)
    assert cells.equals(keys.cells)
    queries = l2_normalize(rng.normal(size=(25, 24)))
    merged = open_index(str(tmp_path / "cells"), S3Config()).search(queries, 7)
    one = faiss.IndexFlatIP(24)
    one.add(keys.vectors)
    sim, ids = one.search(queries, 7)
    assert np.array_equal(merged.gallery_id, ids)
    assert np.allclose(merged.similarity, sim, atol=1e-6)
    rows = merged.gallery_id
    assert np.allclose(merged.lat_deg, keys.cells.column("lat_deg").to_numpy()[rows])
    assert merged.description[0][0] == keys.cells.column("description")[int(rows[0, 0])].as_py()
    assert all(u == "" for r in merged.image_uri for u in r)  # no candidate image
