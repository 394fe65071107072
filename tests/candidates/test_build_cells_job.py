"""jobs/build_cells.py on the tiny demo world, and aerial keys found for queries near their tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

torch.set_num_threads(1)


def _run(conf: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict:
    import runpy
    import sys

    argv = sys.argv
    sys.argv = ["jobs/build_cells.py", "--conf", str(conf), *extra]
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(Path(__file__).resolve().parents[2] / "jobs" / "build_cells.py"), run_name="__main__")
    finally:
        sys.argv = argv
    line = capsys.readouterr().out.strip().splitlines()[-1]
    return {"code": stop.value.code, **json.loads(line)}


def test_build_cells_job_and_aerial_plumbing(tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from support import tiny_conf

    from georank.cells.partition import leaf_cell_ids, parent_ids, token
    from georank.cells.store import CELLS_FILE, gallery_vectors
    from georank.config import load_config
    from georank.index import read_manifest
    from georank.retrieve import open_index

    cells_uri = tmp_path / "cells"
    conf = tiny_conf(tiny_world, tmp_path / "cells.yaml",
                     candidates={"prototypes": {"enabled": True, "uri": str(cells_uri), "start_level": 2,
                                                "max_photos_per_cell": 10, "epochs": 20}})
    got = _run(conf, capsys=capsys)
    assert got["code"] == 0 and got["status"] == "ok", got
    assert got["gallery_photos"] == 120 and got["cells"] > 1 and got["aerial_keys"] == 0
    assert got["classifier_train_top1"] > got["classifier_majority_share"]
    first = pq.read_table(cells_uri / read_manifest(str(cells_uri), load_config(conf).s3).index_version / CELLS_FILE)
    assert sum(first.column("n_photos").to_pylist()) == 120
    assert all(lvl == 15 for n, lvl in zip(first.column("n_photos").to_pylist(), first.column("level").to_pylist()) if n > 10)
    again = _run(conf, capsys=capsys)  # mode error: an index is there already
    assert again["code"] == 1 and "already exists" in again["error"]

    # A tiny synthetic aerial tile set: three level-16 cells at gallery photos' places, each tile
    # embedded as the gallery photo there (an aerial encoder aligned with the ground encoder).
    cfg = load_config(conf)
    ids, latlon, vectors, _ = gallery_vectors(cfg)
    pick = [0, 40, 80]
    cells16 = parent_ids(leaf_cell_ids(latlon[pick, 0], latlon[pick, 1]), 16)
    tiles = pa.table({"cell_token": [token(c) for c in cells16], "embedding": pa.array(list(vectors[pick]), type=pa.list_(pa.float32()))})
    pq.write_table(tiles, tmp_path / "tiles.parquet")
    got = _run(conf, "--mode", "overwrite", "--set", f"candidates.prototypes.aerial_uri={tmp_path / 'tiles.parquet'}",
               "--set", "candidates.prototypes.kappa=0.5", capsys=capsys)
    assert got["code"] == 0 and got["aerial_keys"] == 3, got
    manifest = read_manifest(str(cells_uri), cfg.s3)
    cells = pq.read_table(cells_uri / manifest.index_version / CELLS_FILE)
    aerial = cells.filter(pa.compute.equal(cells.column("kind"), "aerial"))
    assert aerial.column("cell_token").to_pylist() == tiles.column("cell_token").to_pylist()
    assert set(aerial.column("level").to_pylist()) == {16}
    # the photo behind each tile, as a query, finds that tile's key among its top 3
    hits = open_index(str(cells_uri), cfg.s3).search(vectors[pick], 3)
    aerial_ids = set(aerial.column("prototype_id").to_pylist())
    assert all(set(row.tolist()) & aerial_ids for row in hits.gallery_id)

    bad = tmp_path / "bad_tiles.parquet"
    pq.write_table(tiles.set_column(0, "cell_token", pa.array([token(parent_ids(cells16[:1], 12)[0])] * 3)), bad)
    got = _run(conf, "--mode", "overwrite", "--set", f"candidates.prototypes.aerial_uri={bad}", capsys=capsys)
    assert got["code"] == 1 and "expected 16" in got["error"]
    got = _run(conf, "--mode", "overwrite", "--set", "candidates.prototypes.start_level=15",
               "--set", "candidates.prototypes.max_level=10", capsys=capsys)
    assert got["code"] == 2 and "expected at most candidates.prototypes.max_level = 10, got 15" in got["error"]
    assert np.isfinite(vectors).all() and len(ids) == 120


def test_ensure_cells_builds_once_per_gallery_index(tiny_world: Path, tmp_path: Path) -> None:
    from support import tiny_conf

    from georank.cells.store import ensure_cells
    from georank.config import load_config

    conf = tiny_conf(tiny_world, tmp_path / "ensure.yaml",
                     candidates={"prototypes": {"enabled": True, "uri": str(tmp_path / "cells"), "epochs": 2}})
    cfg = load_config(conf)
    first = ensure_cells(cfg)
    assert first is not None and first["cells"] > 0
    assert ensure_cells(cfg) is None  # current: learned from this gallery index version
