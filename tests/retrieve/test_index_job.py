"""The index build job's library function on a tiny gallery with every kind of bad row."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from georank import schema as S
from georank.config import validate_config
from georank.embed import build_tiny_clip, load_embedder
from georank.errors import GalleryIndexError
from georank.index import read_manifest
from georank.results import read_arrow
from georank.retrieve import open_index

pytestmark = pytest.mark.spark


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (40 + seed, 60, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _gallery(folder: Path) -> tuple[Path, dict[int, str]]:
    """12 good rows (11 files, 1 inline) and 7 bad ones; returns the table and the expected error stages."""
    folder.mkdir()
    rows = []
    for i in range(11):
        path = folder / f"{i}.jpg"
        path.write_bytes(_jpeg(i))
        place = ("Lyon", "Auvergne-Rhone-Alpes", "France") if i % 2 else (None, None, None)  # odd: given; even: geocoded
        rows.append(dict(gallery_id=1000 + i, uri=str(path), image_bytes=None, lat_deg=45.0 + i, lon_deg=4.8 + i,
                         city=place[0], state=place[1], country=place[2]))
    rows.append(dict(gallery_id=2000, uri=None, image_bytes=_jpeg(50), lat_deg=-33.9, lon_deg=151.2))
    (folder / "bad.jpg").write_bytes(b"not a jpeg at all")
    bad = {
        3001: ("decode", dict(uri=str(folder / "bad.jpg"))),
        3002: ("read", dict(uri=str(folder / "missing.jpg"))),
        3003: ("input", dict(uri=str(folder / "1.jpg"), lat_deg=math.nan)),
        3004: ("input", dict(uri=str(folder / "1.jpg"), lat_deg=91.0)),
        3005: ("input", dict(uri=None)),
    }
    expected = {gid: stage for gid, (stage, _) in bad.items()}
    for gid, (_, over) in bad.items():
        rows.append({**dict(gallery_id=gid, uri=None, image_bytes=None, lat_deg=10.0, lon_deg=10.0), **over})
    for _ in range(2):  # the same id twice: both rows are errors
        rows.append(dict(gallery_id=4000, uri=str(folder / "2.jpg"), image_bytes=None, lat_deg=1.0, lon_deg=1.0))
    expected[4000] = "input"
    table = pa.Table.from_pylist(rows, schema=pa.schema([S.GALLERY.field(n) for n in
                                  ("gallery_id", "uri", "image_bytes", "lat_deg", "lon_deg", "city", "state", "country")]))
    pq.write_table(table, folder / "gallery.parquet")
    return folder / "gallery.parquet", expected


def test_build_index_job_counts_add_up_and_finds_itself(spark, tmp_path: Path) -> None:
    from georank.spark.index_job import run_build_index

    clip = build_tiny_clip(tmp_path / "clip")
    gallery, expected_errors = _gallery(tmp_path / "gallery")
    cfg = validate_config({
        "project_root": str(tmp_path),
        "tables": {"gallery": str(gallery), "gallery_embeddings": str(tmp_path / "emb"), "gallery_errors": str(tmp_path / "err")},
        "embed": {"model_uri": str(clip), "batch_size": 4},
        "index": {"uri": str(tmp_path / "index"), "shards": 3},
        "retrieve": {"k": 5},
        "input": {"photos_per_partition": 8},
    })
    summary = run_build_index(spark, cfg, run_id="test-run")
    assert summary["read"] == 19 == summary["embedded"] + summary["errors"]
    assert summary["embedded"] == 12 and summary["errors"] == 7
    assert summary["errors_by_stage"] == {"decode": 1, "input": 5, "read": 1}
    # the progress counts (executor accumulators, the repeated ids included) match the table's
    assert {k: summary["progress"][k] for k in ("done", "total", "errors")} == {"done": 19, "total": 19, "errors": 7}

    errors = read_arrow(str(tmp_path / "err")).to_pylist()
    assert sorted((int(r["photo_id"]), r["stage"]) for r in errors) == sorted(
        [(g, s) for g, s in expected_errors.items() if g != 4000] + [(4000, "input"), (4000, "input")]
    )
    reasons = {int(r["photo_id"]): r["reason"] for r in errors}
    assert "out of range" in reasons[3004] and "not finite" in reasons[3003]
    assert "appears 2 times" in reasons[4000] and "file not found" in reasons[3002]
    assert {r["run_id"] for r in errors} == {"test-run"}

    emb = read_arrow(str(tmp_path / "emb"))
    assert emb.num_rows == 12 and len(emb.column("embedding")[0]) == 16
    manifest = read_manifest(str(tmp_path / "index"), cfg.s3)
    assert manifest.ntotal == 12 and manifest.n_shards == 3 and manifest.dim == 16
    assert manifest.embed_version == emb.column("embed_version")[0].as_py() == summary["embed_version"]
    assert manifest.gallery_table == str(gallery) and manifest.gallery_table_version.startswith("parquet:")

    # a gallery photo, embedded again as a query, finds itself first; rows come back by id
    embedder = load_embedder(cfg.embed, cfg.s3)
    q = embedder.embed([Image.open(tmp_path / "gallery" / "3.jpg").convert("RGB")])
    nb = open_index(str(tmp_path / "index"), cfg.s3).search(q, 5)
    assert nb.gallery_id[0, 0] == 1003 and nb.similarity[0, 0] > 0.999
    assert nb.lat_deg[0, 0] == 48.0 and nb.image_uri[0][0] == str(tmp_path / "gallery" / "3.jpg")
    assert nb.description[0][0] == "Lyon Auvergne-Rhone-Alpes France"
    inline = open_index(str(tmp_path / "index"), cfg.s3).search(embedder.embed([Image.open(io.BytesIO(_jpeg(50))).convert("RGB")]), 1)
    assert inline.gallery_id[0, 0] == 2000 and inline.image_uri[0][0] == ""  # bytes were inline: no uri
    assert "Australia" in inline.description[0][0]  # no place fields: reverse-geocoded

    with pytest.raises(GalleryIndexError, match="an index already exists"):
        run_build_index(spark, cfg, run_id="again")
