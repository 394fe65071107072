"""What a demo photo looks like: a fixed *look field* on the sphere and the renderer that draws a
photo from it (see :mod:`georank.demo.world` for the world these photos make up).

The look field (random Fourier features at wavelengths ``LOOK_SCALES_KM``, from 5000 km down to
40 km, seeded by ``LOOK_SEED``, independent of the world's seed) gives every location
``LOOK_CHANNELS`` appearance parameters in (0, 1). :func:`render_photo` draws sky, skyline and
ground from them, and adds the photo's own size, pan, tilt, exposure, colour cast and noise.
Changing anything here changes the demo's bytes: bump :data:`georank.demo.world.GENERATOR_VERSION`.
Runs on the driver only.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image

SIDE_PX = (96, 160)  # inclusive range of each image side
JPEG_QUALITY = 90

LOOK_SEED = 20261123  # the look field is fixed: a place looks the same whatever the sampling seed
LOOK_SCALES_KM = (5000.0, 1000.0, 200.0, 40.0)  # wavelengths of the look field's components
LOOK_SCALE_WEIGHTS = (1.0, 0.9, 0.8, 0.7)  # how much each scale moves a parameter
LOOK_CHANNELS = 12  # appearance parameters per location
LOOK_TERMS = 24  # random Fourier terms per scale and channel
_EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius: sets the look field's length scales only


# ----------------------------------------------------------------------------- look field


def _look_field() -> tuple[np.ndarray, np.ndarray]:
    """Frequencies ``(S, C, T, 3)`` (per unit-sphere length) and phases ``(S, C, T)``."""
    rng = np.random.default_rng(LOOK_SEED)
    s, c, t = len(LOOK_SCALES_KM), LOOK_CHANNELS, LOOK_TERMS
    per_unit = np.array([_EARTH_RADIUS_KM / L for L in LOOK_SCALES_KM])  # kernel length scale -> unit sphere
    omega = rng.standard_normal((s, c, t, 3)) * per_unit[:, None, None, None]
    phase = rng.uniform(0.0, 2.0 * np.pi, (s, c, t))
    return omega, phase


_OMEGA, _PHASE = _look_field()


def look_params(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """Appearance parameters ``(n, LOOK_CHANNELS)`` in (0, 1) of locations ``(n,)``.

    Each parameter is a weighted sum of smooth random fields on the sphere (one per
    scale in ``LOOK_SCALES_KM``), roughly standard normal, squashed by a logistic.
    Two locations d km apart have parameters correlated about
    ``sum_s w_s^2 exp(-d^2 / (2 L_s^2)) / sum_s w_s^2``.
    """
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    p = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)  # (n, 3)
    z = np.sqrt(2.0 / LOOK_TERMS) * np.cos(np.einsum("nk,sctk->nsct", p, _OMEGA) + _PHASE).sum(axis=3)  # (n, S, C)
    w = np.asarray(LOOK_SCALE_WEIGHTS)
    mix = np.einsum("nsc,s->nc", z, w) / np.sqrt((w**2).sum())  # (n, C), ~N(0, 1)
    return 1.0 / (1.0 + np.exp(-1.7 * mix))


# ----------------------------------------------------------------------------- rendering


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), dtype=np.float32)


def render_photo(look: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One synthetic photo (RGB) of a place with appearance ``look (LOOK_CHANNELS,)``;
    ``rng`` supplies the photo's own size, pan, tilt, exposure and noise."""
    (sky_h, ground_h, ground_s, ground_v, horizon, angle, freq, contrast, accent_h, density, height, sky_s) = (
        float(x) for x in look
    )
    w_px, h_px = (int(v) for v in rng.integers(SIDE_PX[0], SIDE_PX[1] + 1, size=2))
    pan = float(rng.uniform(0.0, 1.0))
    tilt = float(rng.normal(0.0, 0.03))
    gain = float(rng.normal(1.0, 0.07))
    cast = rng.normal(0.0, 0.025, 3).astype(np.float32)

    x = (np.arange(w_px, dtype=np.float32) + 0.5) / w_px  # (W,)
    y = (np.arange(h_px, dtype=np.float32) + 0.5) / h_px  # (H,)
    xx, yy = np.meshgrid(x, y)  # (H, W)
    horizon_y = 0.25 + 0.45 * horizon + tilt * (xx - 0.5)  # (H, W)

    sky_top = _hsv(sky_h, 0.15 + 0.55 * sky_s, 0.95)
    sky_low = _hsv(sky_h + 0.06, 0.5 * (0.15 + 0.55 * sky_s), 1.0)
    ground = _hsv(ground_h, 0.25 + 0.65 * ground_s, 0.3 + 0.55 * ground_v)
    accent = _hsv(accent_h, 0.7, 0.35 + 0.5 * (1.0 - ground_v))
    building = 0.55 * accent + 0.25 * ground + 0.05

    # sky: vertical gradient down to the horizon
    t_sky = np.clip(yy / np.maximum(horizon_y, 1e-3), 0.0, 1.0)[..., None]
    img = sky_top * (1.0 - t_sky) + sky_low * t_sky  # (H, W, 3)

    # skyline: blocks whose heights follow the look (smooth in it), panned per photo
    n_blocks = 4 + round(10 * density)
    block = np.floor((xx + pan) % 1.0 * n_blocks)  # (H, W)
    block_h = (0.05 + 0.35 * height) * (0.55 + 0.45 * np.sin(block * 2.39996 + 2 * np.pi * density))
    in_building = (yy < horizon_y) & (yy > horizon_y - block_h)
    img = np.where(in_building[..., None], building, img)

    # ground: oriented stripes mixing ground and accent colours
    theta = np.pi * angle
    cycles = 3.0 + 11.0 * freq
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) + 2 * np.pi * pan)
    mix = (0.1 + 0.5 * contrast) * stripes[..., None]
    ground_img = ground * (1.0 - mix) + accent * mix
    img = np.where((yy >= horizon_y)[..., None], ground_img, img)

    img = img * gain + cast + rng.normal(0.0, 0.025, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


__all__ = ["JPEG_QUALITY", "LOOK_CHANNELS", "SIDE_PX", "jpeg_bytes", "look_params", "render_photo"]
