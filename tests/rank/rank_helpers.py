"""Helpers of the ranker tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np
import PIL.Image


def noise_image(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """A random RGB image of the given size (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
