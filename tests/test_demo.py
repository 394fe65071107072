"""georank.demo.world: the synthetic demo world (deterministic, idempotent, with a location signal)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from georank.demo.world import QUERIES_TRUTH, DemoWorld, build_demo_world, look_params
from georank.errors import InputError
from georank.geo import geodesic_km, valid_latlon
from georank.schema import GALLERY, check_batch

SMALL = {"gallery_photos": 200, "query_photos": 20, "seed": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> DemoWorld:
    return build_demo_world(tmp_path_factory.mktemp("demo") / "world", **SMALL)


def _rel_rows(world: DemoWorld) -> list[dict[str, object]]:
    rows = pq.read_table(world.gallery_table).to_pylist()
    for r in rows:
        r["uri"] = str(Path(str(r["uri"])).relative_to(world.root))
    return rows


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}


def test_gallery_table_has_the_declared_schema(world: DemoWorld) -> None:
    table = pq.read_table(world.gallery_table)
    check_batch(table, GALLERY, what="demo gallery")
    assert table.schema.equals(GALLERY, check_metadata=True)
    assert table.num_rows == SMALL["gallery_photos"]
    rows = table.to_pylist()
    ids = [r["gallery_id"] for r in rows]
    assert len(set(ids)) == len(ids) and min(ids) > 0
    for r in rows:
        assert Path(r["uri"]).is_absolute() and Path(r["uri"]) == world.gallery_dir / f"{r['gallery_id']}.jpg"
        assert Path(r["uri"]).is_file()
        assert r["image_bytes"] is None
        assert valid_latlon(r["lat_deg"], r["lon_deg"])
        assert r["city"] and r["country"]  # the nearest GeoNames city always has these
        assert r["neighbourhood"] is None and r["region"] is None and r["continent"] is None


def test_queries_and_truth(world: DemoWorld) -> None:
    truth = pq.read_table(world.queries_truth)
    assert truth.schema.equals(QUERIES_TRUTH, check_metadata=True)
    ids = truth.column("photo_id").to_pylist()
    assert sorted(p.stem for p in world.queries_dir.glob("*.jpg")) == sorted(ids)
    for r in truth.to_pylist():
        assert valid_latlon(r["lat_deg"], r["lon_deg"]) and r["country"]
    text = world.readme.read_text()
    assert "SYNTHETIC" in text and "GeoNames" in text
    assert json.loads(world.stamp.read_text())["world_id"] == world.world_id


def test_images_vary_in_size_and_are_jpeg(world: DemoWorld) -> None:
    sizes = set()
    for path in sorted(world.gallery_dir.glob("*.jpg"))[:50]:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 96 <= im.width <= 160 and 96 <= im.height <= 160
            sizes.add(im.size)
    assert len(sizes) > 20


def test_same_seed_gives_same_bytes_and_rows(world: DemoWorld, tmp_path: Path) -> None:
    again = build_demo_world(tmp_path / "again", **SMALL)
    assert again.built and again.world_id != world.world_id  # the root is part of the parameters
    assert _files(again.gallery_dir) == _files(world.gallery_dir)
    assert _files(again.queries_dir) == _files(world.queries_dir)
    assert _rel_rows(again) == _rel_rows(world)
    assert pq.read_table(again.queries_truth).equals(pq.read_table(world.queries_truth))

    other = build_demo_world(tmp_path / "other", **{**SMALL, "seed": 1})
    assert pq.read_table(other.queries_truth).column("lat_deg") != pq.read_table(world.queries_truth).column("lat_deg")


def test_build_is_idempotent_and_rebuilds_on_change(tmp_path: Path) -> None:
    root = tmp_path / "w"
    first = build_demo_world(root, gallery_photos=24, query_photos=4, seed=3)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    second = build_demo_world(root, gallery_photos=24, query_photos=4, seed=3)
    assert first.built and not second.built and second.world_id == first.world_id
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes

    (root / "models").mkdir()
    (root / "models" / "keep.txt").write_text("not the demo world's")
    smaller = build_demo_world(root, gallery_photos=12, query_photos=2, seed=3)
    assert smaller.built and smaller.world_id != first.world_id
    assert len(list(smaller.gallery_dir.glob("*.jpg"))) == 12  # no stale images left behind
    assert len(list(smaller.queries_dir.glob("*.jpg"))) == 2
    assert (root / "models" / "keep.txt").read_text() == "not the demo world's"

    next(smaller.gallery_dir.glob("*.jpg")).unlink()  # an incomplete world is rebuilt
    assert build_demo_world(root, gallery_photos=12, query_photos=2, seed=3).built


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"expected gallery_photos >= 1 and query_photos >= 1, got 0 and 5"):
        build_demo_world(tmp_path, gallery_photos=0, query_photos=5)


def test_look_changes_smoothly_with_position() -> None:
    lat = np.array([45.0, 45.0, 45.0, -45.0])
    lon = np.array([7.0, 7.01, 12.0, -173.0])  # ~1 km, ~390 km, antipode
    look = look_params(lat, lon)
    assert look.shape == (4, 12) and ((look > 0) & (look < 1)).all()
    near, mid, far = (float(np.abs(look[0] - look[i]).mean()) for i in (1, 2, 3))
    assert near < 0.02 < mid and near < far


def _thumbs(paths: list[str], side: int = 16) -> np.ndarray:
    """A crude image feature (n, side*side*3): the resized thumbnail's pixels in [0, 1]."""
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.float32).ravel())
    return np.stack(out) / 255.0


def _random_encoder(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random-weight two-layer encoder (like an untrained CLIP head): L2-normalised (n, 64)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((x.shape[1], 256)) / np.sqrt(x.shape[1])
    w2 = rng.standard_normal((256, 64)) / 16.0
    h = np.maximum((x - 0.5) @ w1, 0.0) @ w2
    return h / np.linalg.norm(h, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pairs(world: DemoWorld) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of gallery rows: ``i (p,)``, ``j (p,)`` and their geodesic ``dist_km (p,)``."""
    rows = pq.read_table(world.gallery_table).to_pylist()
    i_idx, j_idx = np.triu_indices(len(rows), k=1)
    dist_km = np.array(
        [
            geodesic_km(rows[i]["lat_deg"], rows[i]["lon_deg"], rows[j]["lat_deg"], rows[j]["lon_deg"])
            for i, j in zip(i_idx, j_idx)
        ]
    )
    return i_idx, j_idx, dist_km


def test_nearby_photos_look_alike_and_far_ones_differ(world: DemoWorld, pairs: tuple[np.ndarray, ...]) -> None:
    rows = pq.read_table(world.gallery_table).to_pylist()
    thumbs = _thumbs([r["uri"] for r in rows])  # (n, 768)
    embeds = _random_encoder(thumbs)  # (n, 64)
    i_idx, j_idx, dist_km = pairs
    near, far = dist_km < 25.0, dist_km > 2500.0
    assert near.sum() >= 50 and far.sum() >= 1000
    pixel_d = np.linalg.norm(thumbs[i_idx] - thumbs[j_idx], axis=1)
    embed_d = np.linalg.norm(embeds[i_idx] - embeds[j_idx], axis=1)
    for d in (pixel_d, embed_d):
        assert d[near].mean() < 0.7 * d[far].mean(), (d[near].mean(), d[far].mean())
        # most near pairs are closer than the typical far pair
        assert (d[near] < np.median(d[far])).mean() > 0.9


def test_an_untrained_tiny_clip_sees_the_location_signal(world: DemoWorld, pairs: tuple[np.ndarray, ...]) -> None:
    """The real CLIP vision architecture with random weights (what the demo's embedder starts from)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=64,
        patch_size=16,
        projection_dim=32,
    )
    model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    rows = pq.read_table(world.gallery_table).to_pylist()
    pixels = _thumbs([r["uri"] for r in rows], side=64).reshape(-1, 64, 64, 3)  # resize, no crop
    mean, std = np.array([0.4815, 0.4578, 0.4082]), np.array([0.2686, 0.2613, 0.2758])
    x = torch.tensor(((pixels - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32)  # (n, 3, 64, 64)
    with torch.no_grad():
        e = torch.nn.functional.normalize(model(pixel_values=x).image_embeds, dim=-1).numpy()  # (n, 32)
    i_idx, j_idx, dist_km = pairs
    d = np.linalg.norm(e[i_idx] - e[j_idx], axis=1)
    near, far = dist_km < 25.0, dist_km > 2500.0
    assert d[near].mean() < 0.5 * d[far].mean(), (d[near].mean(), d[far].mean())


def test_queries_find_nearby_gallery_photos_by_their_pixels(world: DemoWorld) -> None:
    gallery = pq.read_table(world.gallery_table).to_pylist()
    truth = pq.read_table(world.queries_truth).to_pylist()
    g = _thumbs([r["uri"] for r in gallery])
    q = _thumbs([str(world.queries_dir / f"{r['photo_id']}.jpg") for r in truth])
    nearest = np.argmin(((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2), axis=1)  # (q,)
    err_km = [
        geodesic_km(t["lat_deg"], t["lon_deg"], gallery[k]["lat_deg"], gallery[k]["lon_deg"])
        for t, k in zip(truth, nearest)
    ]
    best_km = [min(geodesic_km(t["lat_deg"], t["lon_deg"], r["lat_deg"], r["lon_deg"]) for r in gallery) for t in truth]
    assert np.mean(np.array(best_km) < 25.0) >= 0.7  # queries come from where the gallery is
    assert np.mean(np.array(err_km) < 25.0) >= 0.5  # and their pixels say so
