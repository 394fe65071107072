"""Fixtures of the ranker tests: tiny GeoRanker checkpoints (both key layouts) and images."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_new(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base_dir, adapter_dir) of a tiny ranker saved with the new key layout (seed 0)."""
    from georank.rank.tiny import build_tiny_ranker

    return build_tiny_ranker(tmp_path_factory.mktemp("ranker-new"), seed=0, layout="new")


@pytest.fixture(scope="session")
def tiny_old(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same weights as ``tiny_new`` (same seed), saved with the old key layout."""
    from georank.rank.tiny import build_tiny_ranker

    return build_tiny_ranker(tmp_path_factory.mktemp("ranker-old"), seed=0, layout="old")


@pytest.fixture(scope="session")
def processor(tiny_new: tuple[Path, Path]):
    from georank.rank.tokenizer import load_processor

    return load_processor(tiny_new[0], min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
