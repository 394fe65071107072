"""Fixtures of the candidate-source tests: one tiny GeoRanker (base + adapter) for the run."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ranker(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base_dir, adapter_dir) of a tiny GeoRanker (a real Qwen2VLForConditionalGeneration base)."""
    from georank.rank.tiny import build_tiny_ranker

    return build_tiny_ranker(tmp_path_factory.mktemp("gen-ranker"), seed=0)
