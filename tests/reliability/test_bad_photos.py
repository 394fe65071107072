"""Every kind of bad photo, end to end through the session's Spark: one run over a Parquet
photos table holding one photo of each bad kind plus a few good ones. Each photo ends as
exactly one row: an error with its stage and a reason a person understands, or a prediction;
read = predicted + errors; nothing is lost. (S3 404 / access denied: tests/job/test_s3_input.py.)"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support import tiny_conf

from georank.config import load_config
from georank.decode import decode_image
from georank.results import read_errors, read_predictions
from georank.spark.geotag import run_geotag

pytestmark = pytest.mark.spark
DAY = dt.date(2026, 11, 24)
MAX_PIXELS = 1_000_000  # decode.max_pixels for this run: the bomb below is 4x over it

# photo id -> (stage, reason pattern); ids not listed here must be predicted.
EXPECTED_ERRORS = {
    "zero_byte": ("decode", r"^the file is empty \(0 bytes\)$"),
    "truncated": ("decode", r"^truncated or corrupt image data \(.+\)$"),
    "one_pixel": ("decode", r"^image is 1x1 pixels; the shorter side must be at least 2$"),
    "aspect_402x2": ("decode", r"^aspect ratio 201.0 is over the limit of 200 \(decode.max_aspect_ratio; 402x2 pixels\)$"),
    "bomb": ("decode", rf"^image is 2000x2000 = 4000000 pixels, over the cap of {MAX_PIXELS} \(decode.max_pixels; possible decompression bomb\)$"),
    "not_an_image": ("decode", r"^not an image: the bytes are in no image format Pillow can read$"),
    "missing": ("read", r"^file not found: .+/gone\.jpg$"),
}
PREDICTED = ["good_0", "good_1", "good_2", "alpha_png", "cmyk", "grey16", "exif_rotated", "exif_upright_ref", "exif_ignored_ref"]


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _inputs(world: Path, folder: Path) -> dict[str, Path]:
    """One file per kind under ``folder``; returns photo id -> path (``missing`` does not exist)."""
    folder.mkdir()
    q = sorted((world / "queries").glob("*.jpg"))
    src = [Image.open(p).convert("RGB") for p in q[:4]]
    files: dict[str, bytes] = {f"good_{i}": q[i].read_bytes() for i in range(3)}
    files["zero_byte"] = b""
    files["truncated"] = q[3].read_bytes()[: q[3].stat().st_size // 3]
    rgba = src[0].convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # partly transparent
    files["alpha_png"] = _encode(rgba, "PNG")
    files["cmyk"] = _encode(src[1].convert("CMYK"), "JPEG", quality=95)
    grey16 = (np.asarray(src[2].convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    files["grey16"] = _encode(Image.fromarray(grey16), "PNG")
    assert Image.open(io.BytesIO(files["grey16"])).mode.startswith("I;16")
    # EXIF orientation 6 ("rotate 90 clockwise to display"): the stored pixels lie on their side.
    upright = src[3].crop((0, 0, src[3].width, src[3].height - 30))  # not square: rotation shows in the size
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif_rotated"] = _encode(stored, "JPEG", quality=95, exif=exif)
    # References, lossless: the upright pixels the decoder must produce, and the sideways ones.
    files["exif_upright_ref"] = _encode(decode_image(files["exif_rotated"], load_config_decode()), "PNG")
    files["exif_ignored_ref"] = _encode(Image.open(io.BytesIO(files["exif_rotated"])).convert("RGB"), "PNG")
    files["one_pixel"] = _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")
    files["aspect_402x2"] = _encode(Image.new("RGB", (402, 2), (9, 9, 9)), "PNG")
    files["bomb"] = _encode(Image.new("L", (2000, 2000)), "PNG")  # 4 MP of one colour: a few KB
    assert len(files["bomb"]) < 20_000
    files["not_an_image"] = b"%PDF-1.4 these are not pixels"
    paths = {}
    for pid, data in files.items():
        ext = "png" if data.startswith(b"\x89PNG") else "jpg"
        paths[pid] = folder / f"{pid}.{ext}"
        paths[pid].write_bytes(data)
    paths["missing"] = folder / "gone.jpg"
    return paths


def load_config_decode():  # type: ignore[no-untyped-def]
    from georank.config import DecodeConfig

    return DecodeConfig(max_pixels=MAX_PIXELS)


@pytest.fixture(scope="module")
def bad_run(spark, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("bad-photos")
    paths = _inputs(tiny_world, tmp / "photos")
    table = pa.table({"photo_id": list(paths), "uri": [str(p) for p in paths.values()]})
    pq.write_table(table, tmp / "photos.parquet")
    conf = tiny_conf(
        tiny_world, tmp / "c.yaml", input={"photos_per_partition": 4}, decode={"max_pixels": MAX_PIXELS}, skip={"enabled": False}
    )
    cfg = load_config(conf)
    summary = run_geotag(spark, cfg, photos_uri=str(tmp / "photos.parquet"), run_date=DAY, run_id="run-bad-photos")
    return paths, cfg, summary


def test_every_photo_is_one_row_and_counts_add_up(bad_run) -> None:  # type: ignore[no-untyped-def]
    paths, cfg, s = bad_run
    assert s["read"] == len(paths) == s["predicted"] + s["errors"]
    assert (s["predicted"], s["errors"]) == (len(PREDICTED), len(EXPECTED_ERRORS))
    preds = read_predictions(cfg.tables.results).column("photo_id").to_pylist()
    errs = read_errors(cfg.tables.results).column("photo_id").to_pylist()
    assert sorted(preds + errs) == sorted(paths)  # nothing lost, nothing twice
    assert sorted(preds) == sorted(PREDICTED)


def test_each_bad_photo_has_its_stage_and_a_readable_reason(bad_run) -> None:  # type: ignore[no-untyped-def]
    _, cfg, _ = bad_run
    rows = {r["photo_id"]: r for r in read_errors(cfg.tables.results).to_pylist()}
    for pid, (stage, pattern) in EXPECTED_ERRORS.items():
        assert rows[pid]["stage"] == stage, pid
        assert re.match(pattern, rows[pid]["reason"]), (pid, rows[pid]["reason"])
        assert "Traceback" not in rows[pid]["reason"] and len(rows[pid]["reason"]) < 300
        assert rows[pid]["run_id"] == "run-bad-photos" and rows[pid]["run_date"] == DAY


def test_usable_oddities_are_predicted(bad_run) -> None:  # type: ignore[no-untyped-def]
    _, cfg, _ = bad_run
    rows = {r["photo_id"]: r for r in read_predictions(cfg.tables.results).to_pylist()}
    for pid in ("alpha_png", "cmyk", "grey16", "exif_rotated"):
        r = rows[pid]
        assert -90 <= r["lat_deg"] <= 90 and -180 <= r["lon_deg"] <= 180 and 0 <= r["confidence"] <= 1, pid
        assert not r["ranker_skipped"] and r["top_candidates"] and r["top_candidates"][0]["score"] is not None, pid


def test_exif_rotated_photo_is_predicted_from_the_upright_image(bad_run) -> None:  # type: ignore[no-untyped-def]
    """The EXIF-rotated JPEG is predicted exactly as its upright pixels (a lossless PNG copy) and
    not as its stored, sideways pixels; the decode stage hands on the upright size."""
    from georank.pipeline import decode_photos

    paths, cfg, _ = bad_run
    stored_w, stored_h = Image.open(paths["exif_rotated"]).size
    decoded = decode_photos(pa.table({"photo_id": ["x"], "uri": [str(paths["exif_rotated"])], "image_bytes": pa.nulls(1, pa.binary())}), cfg)
    assert (decoded.column("width_px")[0].as_py(), decoded.column("height_px")[0].as_py()) == (stored_h, stored_w) != (stored_w, stored_h)

    rows = {r["photo_id"]: r for r in read_predictions(cfg.tables.results).to_pylist()}

    def scored(pid: str) -> list[tuple[int, float]]:
        return [(c["gallery_id"], c["score"]) for c in rows[pid]["top_candidates"]]

    rot, up, side = scored("exif_rotated"), scored("exif_upright_ref"), scored("exif_ignored_ref")
    assert [g for g, _ in rot] == [g for g, _ in up]
    assert [s for _, s in rot] == pytest.approx([s for _, s in up], abs=1e-5)
    assert (rows["exif_rotated"]["lat_deg"], rows["exif_rotated"]["lon_deg"]) == (rows["exif_upright_ref"]["lat_deg"], rows["exif_upright_ref"]["lon_deg"])
    assert rot != side  # the sideways pixels score differently: the check above is not vacuous
