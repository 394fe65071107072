"""Score training groups with gradients, through the ranker's own prompt and batch builders.

The prompts come from :func:`georank.rank.prompts.encode_query` (in the data stream) and the
left-padded batch with M-RoPE positions from :class:`georank.rank.scorer.Scorer`'s batch
builder, so the trainer scores exactly what the geotag job will score (per-pair path, the
oracle). Gradients flow through :meth:`georank.rank.model.GeoRankerModel.forward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from georank.config import RankConfig
from georank.rank.model import GeoRankerModel, RankerInputs
from georank.rank.prompts import EncodedPair, EncodedQuery
from georank.rank.scorer import Scorer


class GroupScorer:
    """Scores ``(b, g)`` of ``b`` encoded groups of ``g`` candidates each, differentiable."""

    def __init__(self, ranker: GeoRankerModel, processor: Any, rank_cfg: RankConfig) -> None:
        self.ranker = ranker
        self._batcher = Scorer(ranker, processor, rank_cfg)

    def inputs(self, pairs: Sequence[EncodedPair]) -> RankerInputs:
        """One left-padded batch of whole prompts, as the job's per-pair path builds it."""
        return self._batcher._full_batch([p.input_ids for p in pairs], [list(p.images) for p in pairs])

    def __call__(self, groups: Sequence[EncodedQuery]) -> torch.Tensor:
        g = len(groups[0].pairs)
        if any(len(e.pairs) != g for e in groups):
            raise ValueError(f"groups of one batch must have one size, got {[len(e.pairs) for e in groups]}")
        scores = self.ranker(**self.inputs([p for e in groups for p in e.pairs]).as_kwargs())  # (b * g,) float32
        return scores.view(len(groups), g)


__all__ = ["GroupScorer"]
