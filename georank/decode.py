"""Decode stage (CPU): bytes -> an upright, bounded RGB image, or a PhotoError.

Every way a photo can be unusable becomes :class:`~georank.errors.PhotoError`
with stage ``decode`` and a reason a person understands; nothing is dropped and
no task crashes. Runs on executors.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from georank.config import DecodeConfig
from georank.errors import PhotoError

log = logging.getLogger(__name__)

# We enforce our own pixel cap (DecodeConfig.max_pixels) from the header, before decoding;
# PIL's global bomb check stays on as a second fence for anything larger than ours.


def _register_openers() -> None:
    """HEIC/HEIF through pillow-heif (iPhone photos), once per process, at import. AVIF is
    Pillow's own (Pillow >= 11.2 built with libavif; the PyPI wheels are)."""
    from pillow_heif import register_heif_opener

    register_heif_opener()


_register_openers()


def decode_image(data: bytes, cfg: DecodeConfig) -> Image.Image:
    """Decode ``data`` into an RGB image: EXIF-oriented (``cfg.exif_orientation``), alpha
    flattened onto white (``cfg.alpha``), 16-bit and CMYK converted, longest side at most
    ``cfg.max_side_px`` (``None``: native size).

    The format is read from the content (JPEG, PNG, HEIC/HEIF, AVIF, WebP, TIFF, ...), never
    from a file name. A broken EXIF block keeps the stored pixels (logged). The shorter side and
    the aspect ratio are checked on the image as it leaves here (after the shrink), so what
    passes is what the models get.

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
            if img.format == "JPEG" and cfg.max_side_px is not None:
                img.draft("RGB", (cfg.max_side_px, cfg.max_side_px))  # libjpeg scales while decoding: cheaper
            img.load()
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError("decode", "not an image: the bytes are in no image format Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError("decode", f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, RuntimeError) as exc:  # pillow-heif raises RuntimeError
        raise PhotoError("decode", f"truncated or corrupt image data ({exc})") from None
    upright = _oriented(img) if cfg.exif_orientation else img
    rgb = to_rgb(upright, alpha=cfg.alpha)
    stored_w, stored_h = rgb.size
    if cfg.max_side_px is not None and max(stored_w, stored_h) > cfg.max_side_px:
        rgb.thumbnail((cfg.max_side_px, cfg.max_side_px), Image.Resampling.BICUBIC)
    _check_shape(rgb.size, (stored_w, stored_h), cfg)
    return rgb


def _oriented(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; the stored pixels when the EXIF block is
    unreadable (a broken block must not cost a photo whose pixels are fine)."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception as exc:  # noqa: BLE001  # any parser failure: keep the stored orientation
        log.warning("unreadable EXIF block (%s: %s): keeping the stored orientation", type(exc).__name__, exc)
        return img


def _check_shape(size: tuple[int, int], before: tuple[int, int], cfg: DecodeConfig) -> None:
    """Refuse an image whose shorter side or aspect ratio, as decoded and shrunk, is out of bounds."""
    w, h = size
    shrunk = "" if size == before else f" after shrinking {before[0]}x{before[1]} to decode.max_side_px={cfg.max_side_px}"
    if min(w, h) < cfg.min_side_px:
        raise PhotoError(
            "decode", f"image is {w}x{h} pixels{shrunk}; the shorter side must be at least {cfg.min_side_px}"
        )
    ratio = max(w, h) / min(w, h)
    if ratio > cfg.max_aspect_ratio:
        raise PhotoError(
            "decode",
            f"aspect ratio {ratio:.1f} is over the limit of {cfg.max_aspect_ratio:g} (decode.max_aspect_ratio; "
            f"{w}x{h} pixels{shrunk})",
        )


def to_rgb(img: Image.Image, *, alpha: Literal["composite", "drop"] = "composite") -> Image.Image:
    """RGB from any Pillow mode: 16/32-bit scaled to 8-bit, CMYK converted, and alpha composited
    onto white (``alpha="composite"``) or dropped as ``Image.convert("RGB")`` does, keeping the
    colour under transparent pixels (``"drop"``: what the reference does)."""
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
        if alpha == "drop":
            return img.convert("RGB")
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
