"""Every bad photo becomes a PhotoError with a stage and a reason a person understands;
usable oddities (alpha, CMYK, 16-bit, EXIF rotation) decode to an upright RGB image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georank.config import DecodeConfig, S3Config
from georank.decode import decode_image
from georank.errors import PhotoError
from georank.io import read_bytes

CFG = DecodeConfig()


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    arr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return _encode(Image.fromarray(arr), "JPEG")


def test_zero_bytes() -> None:
    with pytest.raises(PhotoError, match=r"^decode: the file is empty \(0 bytes\)$"):
        decode_image(b"", CFG)


def test_truncated_jpeg() -> None:
    data = _jpeg(256, 256)
    with pytest.raises(PhotoError, match="decode: truncated or corrupt image data"):
        decode_image(data[: len(data) // 2], CFG)


def test_not_an_image_with_jpg_name(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("these are not pixels")
    with pytest.raises(PhotoError, match="decode: not an image: the bytes are in no image format Pillow can read"):
        decode_image(read_bytes(str(p), S3Config()), CFG)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match=f"read: file not found: {tmp_path / 'gone.jpg'}") as err:
        read_bytes(str(tmp_path / "gone.jpg"), S3Config())
    assert err.value.stage == "read"


def test_png_with_alpha_is_flattened_on_white() -> None:
    img = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    out = decode_image(_encode(img, "PNG"), CFG)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_and_16bit_decode_to_rgb() -> None:
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # red
    out = decode_image(_encode(cmyk, "JPEG"), CFG)
    r, g, b = out.getpixel((20, 15))
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60
    arr16 = np.full((30, 40), 65535 // 2, dtype=np.uint16)
    out16 = decode_image(_encode(Image.fromarray(arr16), "PNG"), CFG)
    assert out16.mode == "RGB" and abs(out16.getpixel((0, 0))[0] - 128) <= 1


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(_encode(img, "JPEG", exif=exif), CFG)
    assert out.size == (20, 60)


def test_one_pixel_image_is_refused() -> None:
    with pytest.raises(PhotoError, match=r"decode: image is 1x1 pixels; the shorter side must be at least 2"):
        decode_image(_encode(Image.new("RGB", (1, 1)), "PNG"), CFG)


def test_extreme_aspect_ratio_is_refused() -> None:
    with pytest.raises(PhotoError, match=r"^decode: aspect ratio 201.0 is over the limit of 200 \(decode.max_aspect_ratio; 402x2 pixels\)$"):
        decode_image(_encode(Image.new("RGB", (402, 2)), "PNG"), CFG)


def test_aspect_ratio_is_checked_after_the_shrink() -> None:
    """1990x10 (ratio 199) shrinks to 1024x5 (ratio 204.8): refused here, by the one limit, not
    later inside the ranker."""
    with pytest.raises(
        PhotoError,
        match=r"^decode: aspect ratio 204.8 is over the limit of 200 \(decode.max_aspect_ratio; 1024x5 pixels "
        r"after shrinking 1990x10 to decode.max_side_px=1024\)$",
    ):
        decode_image(_encode(Image.new("RGB", (1990, 10)), "PNG"), CFG)
    assert decode_image(_encode(Image.new("RGB", (1990, 10)), "PNG"), DecodeConfig(max_side_px=None)).size == (1990, 10)


def test_short_side_is_checked_after_the_shrink() -> None:
    with pytest.raises(PhotoError, match=r"^decode: image is 100x1 pixels after shrinking 300x3 to decode.max_side_px=100; the shorter side must be at least 2$"):
        decode_image(_encode(Image.new("RGB", (300, 3)), "PNG"), DecodeConfig(max_side_px=100, max_aspect_ratio=200))


def test_one_aspect_ratio_key_at_most_the_rankers_limit() -> None:
    from pydantic import ValidationError

    from georank.config import RankConfig
    from georank.rank.prompts import MAX_ASPECT_RATIO

    assert "max_aspect_ratio" not in RankConfig.model_fields
    assert DecodeConfig().max_aspect_ratio == MAX_ASPECT_RATIO == 200
    with pytest.raises(ValidationError, match="less than or equal to 200"):
        DecodeConfig(max_aspect_ratio=201)


def test_native_size_when_max_side_is_null() -> None:
    out = decode_image(_jpeg(3000, 1000), DecodeConfig(max_side_px=None))
    assert out.size == (3000, 1000)


def _exif_jpeg(orientation: int, size: tuple[int, int] = (60, 20)) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera"  # Make, ASCII
    exif[0x0132] = "2026:01:01 00:00:00"  # DateTime, ASCII
    return _encode(Image.new("RGB", size, (0, 0, 255)), "JPEG", exif=exif)


def test_exif_orientation_can_be_ignored_as_the_reference_does() -> None:
    data = _exif_jpeg(6)
    assert decode_image(data, CFG).size == (20, 60)
    assert decode_image(data, DecodeConfig(exif_orientation=False)).size == (60, 20)


def test_broken_exif_block_keeps_the_stored_pixels(caplog: pytest.LogCaptureFixture) -> None:
    """One IFD entry's tag damaged from Make (0x010F) to CellWidth (0x0108, a SHORT tag) over an
    ASCII value: Pillow's EXIF transpose raises (struct.error); the photo is decoded as stored,
    with a warning, instead of becoming an error row."""
    good = _exif_jpeg(6)
    entry = b"\x01\x0f\x00\x02"  # big-endian IFD entry: tag 0x010F, type 2 (ASCII)
    assert good.count(entry) == 1
    broken = good.replace(entry, b"\x01\x08\x00\x02")
    from PIL import ImageOps

    with pytest.raises(Exception):  # noqa: B017, PT011  # the failure this guards against
        ImageOps.exif_transpose(Image.open(io.BytesIO(broken)))
    with caplog.at_level("WARNING", logger="georank.decode"):
        out = decode_image(broken, CFG)
    assert out.size == (60, 20) and out.mode == "RGB"
    assert "unreadable EXIF block" in caplog.text and "keeping the stored orientation" in caplog.text


def test_alpha_can_be_dropped_as_the_reference_does() -> None:
    img = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    assert decode_image(_encode(img, "PNG"), DecodeConfig(alpha="drop")).getpixel((0, 0)) == (255, 0, 0)
    assert decode_image(_encode(img, "PNG"), CFG).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_by_content(fmt: str) -> None:
    arr = np.zeros((48, 64, 3), dtype=np.uint8)
    arr[:, :32] = (220, 30, 30)
    arr[:, 32:] = (30, 30, 220)
    data = _encode(Image.fromarray(arr), fmt, quality=95)
    assert Image.open(io.BytesIO(data)).format == fmt
    out = decode_image(data, CFG)
    assert out.mode == "RGB" and out.size == (64, 48)
    left, right = out.getpixel((8, 24)), out.getpixel((56, 24))
    assert left[0] > 150 and left[2] < 100 and right[2] > 150 and right[0] < 100


def test_decompression_bomb_is_refused_from_the_header() -> None:
    # A 5000 x 5000 PNG of one colour compresses to a few KB; our cap refuses it from the
    # header, before any pixel is decoded.
    cfg = DecodeConfig(max_pixels=10_000_000)
    data = _encode(Image.new("L", (5000, 5000)), "PNG")
    assert len(data) < 100_000
    with pytest.raises(PhotoError, match=r"decode: image is 5000x5000 = 25000000 pixels, over the cap of 10000000"):
        decode_image(data, cfg)


def test_bomb_beyond_pillows_own_limit_is_a_decode_error() -> None:
    data = _encode(Image.new("1", (14000, 14000)), "PNG")  # 196 MP, over Pillow's hard limit
    with pytest.raises(PhotoError, match=r"decode: refused as a decompression bomb: Image size \(196000000 pixels\)"):
        decode_image(data, DecodeConfig(max_pixels=10**12))


def test_large_photo_is_bounded() -> None:
    out = decode_image(_jpeg(3000, 1000), DecodeConfig(max_side_px=512))
    assert max(out.size) <= 512 and out.mode == "RGB"


def test_reproduction_switches_from_the_command_line(project_root: Path) -> None:
    """issue 11's reference mode: no EXIF transpose, alpha dropped, native size; one aspect key."""
    from georank.config import load_config
    from georank.errors import ConfigError

    conf = project_root / "conf" / "local.yaml"
    d = load_config(conf, ["decode.max_side_px=null", "decode.alpha=drop", "decode.exif_orientation=false"]).decode
    assert (d.max_side_px, d.alpha, d.exif_orientation) == (None, "drop", False)
    d = load_config(conf).decode
    assert (d.max_side_px, d.alpha, d.exif_orientation, d.max_aspect_ratio) == (1024, "composite", True, 200.0)
    with pytest.raises(ConfigError, match="unknown config key 'rank.max_aspect_ratio'"):
        load_config(conf, ["rank.max_aspect_ratio=100"])
    with pytest.raises(ConfigError, match="'decode.alpha'.*expected one of 'composite' or 'drop', got a string"):
        load_config(conf, ["decode.alpha=keep"])
