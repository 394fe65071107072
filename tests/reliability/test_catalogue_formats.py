"""Photos as catalogues hold them, through the session's Spark (one run of ``run_geotag`` over a
folder input): HEIC and AVIF, upper-case ``.JPG``, a file without an extension, the same camera
file name in two sub-folders, two files of one folder differing only by their extension, a
broken EXIF block: every one predicted, each once, under an id that is its path relative to the
folder. In the same run, issue 10's odd shapes: a 1990x10 query photo is a decode error row (its
ratio is 204.8 after the shrink), and a 1990x10 gallery image behind a candidate drops that
candidate (counted in n_candidates_dropped) while the run succeeds."""

from __future__ import annotations

import datetime as dt
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support import tiny_conf

from georank.config import GeorankConfig, load_config
from georank.results import read_errors, read_predictions
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
DAY = dt.date(2026, 11, 29)

PREDICTED = [
    "trip1/IMG_0001", "trip2/IMG_0001", "IMG_0002", "IMG_0003", "scan0004", "IMG_0005.JPG", "IMG_0005.heic", "broken_exif",
]
ERRORS = {
    "wide": ("decode", "aspect ratio 204.8 is over the limit of 200 (decode.max_aspect_ratio; 1024x5 pixels after shrinking 1990x10 to decode.max_side_px=1024)"),
    "notes": ("decode", "not an image: the bytes are in no image format Pillow can read"),
}


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _broken_exif_jpeg(img: Image.Image) -> bytes:
    """A JPEG whose EXIF block Pillow cannot transpose (a SHORT tag over an ASCII value)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    exif[0x0132] = "2026:01:01 00:00:00"
    good = _encode(img, "JPEG", quality=95, exif=exif)
    assert good.count(b"\x01\x0f\x00\x02") == 1
    return good.replace(b"\x01\x0f\x00\x02", b"\x01\x08\x00\x02")


def _folder(world: Path, folder: Path) -> None:
    q = sorted((world / "queries").glob("*.jpg"))
    rgb = [Image.open(p).convert("RGB") for p in q[:8]]
    files = {
        "trip1/IMG_0001.JPG": q[0].read_bytes(),
        "trip2/IMG_0001.JPG": q[1].read_bytes(),
        "IMG_0002.heic": _encode(rgb[2], "HEIF", quality=90),
        "IMG_0003.avif": _encode(rgb[3], "AVIF", quality=90),
        "scan0004": q[4].read_bytes(),
        "IMG_0005.JPG": q[5].read_bytes(),
        "IMG_0005.heic": _encode(rgb[6], "HEIF", quality=90),
        "broken_exif.jpg": _broken_exif_jpeg(rgb[7]),
        "wide.png": _encode(Image.linear_gradient("L").convert("RGB").resize((1990, 10)), "PNG"),
        "notes.txt": b"not pixels",
        ".DS_Store": b"\x00\x00\x00\x01Bud1",  # hidden: not listed, not a row
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


@pytest.fixture(scope="module")
def wide_gallery_image(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The best neighbour of ``trip1/IMG_0001`` (query 0) gets a 1990x10 gallery image for this
    module's run; the shared tiny world is restored afterwards. Yields (photo id, gallery id)."""
    import pyarrow as pa

    from georank.pipeline import decode_photos, embed_isolated, retrieve_isolated
    from georank.run_info import RunInfo

    cfg = load_config(tiny_conf(tiny_world, tmp_path_factory.mktemp("probe") / "c.yaml"))
    q0 = sorted((tiny_world / "queries").glob("*.jpg"))[0]
    photos = pa.table({"photo_id": ["q0"], "uri": [str(q0)], "image_bytes": pa.nulls(1, pa.binary())})
    run = RunInfo("probe", DAY)
    ok, emb, version, _ = embed_isolated(decode_photos(photos, cfg), cfg, run)
    _, neighbours, _ = retrieve_isolated(ok, emb, cfg, run, embed_version=version)
    path = Path(neighbours.column("image_uri")[0].as_py()[0])
    gallery_id = int(neighbours.column("gallery_id")[0].as_py()[0])
    backup = path.with_name(path.name + ".bak")
    shutil.copy2(path, backup)
    try:
        path.write_bytes(_encode(Image.linear_gradient("L").convert("RGB").resize((1990, 10)), "JPEG"))
        yield "trip1/IMG_0001", gallery_id
    finally:
        shutil.move(backup, path)


@pytest.fixture(scope="module")
def run(spark, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory, wide_gallery_image) -> tuple[GeorankConfig, dict[str, Any]]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("catalogue")
    _folder(tiny_world, tmp / "photos")
    cfg = load_config(tiny_conf(tiny_world, tmp / "c.yaml", input={"photos_per_partition": 4}, skip={"enabled": False}))
    summary = run_geotag(spark, cfg, photos_uri=str(tmp / "photos"), run_date=DAY, run_id="run-catalogue")
    return cfg, summary


def test_every_file_is_predicted_once_under_its_relative_path(run) -> None:  # type: ignore[no-untyped-def]
    cfg, s = run
    assert (s["read"], s["predicted"], s["errors"]) == (len(PREDICTED) + len(ERRORS), len(PREDICTED), len(ERRORS))
    preds = read_predictions(cfg.tables.results).to_pylist()
    assert sorted(r["photo_id"] for r in preds) == sorted(PREDICTED)  # each once
    for r in preds:
        assert -90 <= r["lat_deg"] <= 90 and 0 <= r["confidence"] <= 1 and not r["ranker_skipped"], r["photo_id"]
    uris = {r["photo_id"]: r["uri"] for r in preds}
    assert uris["trip1/IMG_0001"].endswith("/photos/trip1/IMG_0001.JPG") and uris["scan0004"].endswith("/photos/scan0004")


def test_the_odd_query_is_an_error_row_with_its_reason(run) -> None:  # type: ignore[no-untyped-def]
    cfg, _ = run
    errors = {r["photo_id"]: (r["stage"], r["reason"]) for r in read_errors(cfg.tables.results).to_pylist()}
    assert errors == ERRORS


def test_the_odd_gallery_image_drops_its_candidate_and_is_counted(run, wide_gallery_image) -> None:  # type: ignore[no-untyped-def]
    cfg, _ = run
    photo_id, gallery_id = wide_gallery_image
    rows = {r["photo_id"]: r for r in read_predictions(cfg.tables.results).to_pylist()}
    target = rows[photo_id]
    assert target["n_candidates_dropped"] >= 1 and target["n_candidates"] + target["n_candidates_dropped"] == 12
    assert gallery_id not in [c["gallery_id"] for c in target["top_candidates"]]
    assert all(r["n_candidates_dropped"] is not None for r in rows.values())
