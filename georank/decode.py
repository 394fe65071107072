"""Decode stage (CPU): bytes -> an upright, bounded RGB image, or a PhotoError.

Every way a photo can be unusable becomes :class:`~georank.errors.PhotoError`
with stage ``decode`` and a reason a person understands; nothing is dropped and
no task crashes. Runs on executors.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from georank.config import DecodeConfig
from georank.errors import PhotoError

# We enforce our own pixel cap (DecodeConfig.max_pixels) from the header, before decoding;
# PIL's global bomb check stays on as a second fence for anything larger than ours.


def decode_image(data: bytes, cfg: DecodeConfig) -> Image.Image:
    """Decode ``data`` into an RGB image: EXIF-oriented, alpha flattened onto white, 16-bit and
    CMYK converted, longest side at most ``cfg.max_side_px``.

    Raises PhotoError("decode", reason) for empty, oversized, truncated, non-image,
    too-small or too-elongated input.
    """
    if len(data) == 0:
        raise PhotoError("decode", "the file is empty (0 bytes)")
    if len(data) > cfg.max_bytes:
        raise PhotoError("decode", f"file is {len(data)} bytes, over the limit of {cfg.max_bytes} (decode.max_bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > cfg.max_pixels:
                raise PhotoError(
                    "decode",
                    f"image is {width}x{height} = {width * height} pixels, over the cap of {cfg.max_pixels} "
                    "(decode.max_pixels; possible decompression bomb)",
                )
            if img.format == "JPEG":  # let libjpeg scale down while decoding: cheaper than resizing later
                img.draft("RGB", (cfg.max_side_px, cfg.max_side_px))
            img.load()
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError("decode", "not an image: the bytes are in no image format Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError("decode", f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError("decode", f"truncated or corrupt image data ({exc})") from None
    try:
        upright: Image.Image = ImageOps.exif_transpose(img) or img
    except Exception as exc:  # a broken EXIF block must not cost the photo  # noqa: BLE001
        raise PhotoError("decode", f"unreadable EXIF orientation ({exc})") from None
    rgb = to_rgb(upright)
    w, h = rgb.size
    if min(w, h) < cfg.min_side_px:
        raise PhotoError("decode", f"image is {w}x{h} pixels; the shorter side must be at least {cfg.min_side_px}")
    ratio = max(w, h) / min(w, h)
    if ratio > cfg.max_aspect_ratio:
        raise PhotoError(
            "decode", f"aspect ratio {ratio:.0f} is over the limit of {cfg.max_aspect_ratio:g} ({w}x{h} pixels)"
        )
    if max(w, h) > cfg.max_side_px:
        rgb.thumbnail((cfg.max_side_px, cfg.max_side_px), Image.Resampling.BICUBIC)
    return rgb


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any Pillow mode: alpha composited onto white, 16/32-bit scaled to 8-bit, CMYK converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def rgb_to_bytes(img: Image.Image) -> tuple[bytes, int, int]:
    """Raw row-major uint8 pixels of an RGB image: ``(bytes, width_px, height_px)``."""
    return img.tobytes(), img.width, img.height


def rgb_from_bytes(data: bytes, width_px: int, height_px: int) -> Image.Image:
    """Inverse of :func:`rgb_to_bytes`."""
    return Image.frombytes("RGB", (width_px, height_px), data)
