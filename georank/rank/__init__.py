"""GeoRanker scoring: Qwen2-VL + LoRA + score head over (query photo, candidate) prompts.

- :mod:`~georank.rank.prompts`: the one prompt builder (reference prompt, image sizing).
- :mod:`~georank.rank.tokenizer`: offline Qwen2-VL tokenizer/processor (a model's own files win).
- :mod:`~georank.rank.model`: backbone + bias-free score head on the last token.
- :mod:`~georank.rank.checkpoint`: strict loader for base + PEFT adapter (both key layouts).
- :mod:`~georank.rank.scorer`: per-pair (oracle) and shared-prefix scoring; per-worker scorer.
- :mod:`~georank.rank.tiny`: tiny checkpoints of the real architecture for tests and the demo.

Heavy imports (torch, transformers, peft) happen when these names are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from georank.rank.prompts import RankCandidate, RankQuery

if TYPE_CHECKING:
    from georank.rank.scorer import Scorer, get_scorer
    from georank.rank.tiny import build_tiny_ranker

__all__ = ["RankCandidate", "RankQuery", "Scorer", "build_tiny_ranker", "get_scorer"]


def __getattr__(name: str) -> Any:
    if name in ("Scorer", "get_scorer", "build_scorer"):
        from georank.rank import scorer

        return getattr(scorer, name)
    if name == "build_tiny_ranker":
        from georank.rank.tiny import build_tiny_ranker

        return build_tiny_ranker
    raise AttributeError(f"module 'georank.rank' has no attribute {name!r}")
