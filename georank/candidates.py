"""Propose candidates: one interface for every source, with a ``source`` on each candidate.

Sources, in the tie order the decide step relies on (earlier wins a tie):
1. ``retrieved``: the photo's nearest gallery neighbours, in rank order
   (``candidates.retrieved`` of them; the reference README uses 12, its evaluate script 10);
2. ``generated``: locations a vision-language model proposes (JSON prompt, sampled);
3. ``prototype``: learned geographic-cell prototypes (Lindenberger et al. 2025).

The negatives of a photo (the same for all its candidates) are the retrieved
neighbours at ranks ``retrieve.negatives_from`` .. +``negatives_count`` (the
reference: the last five of 20). Generated and prototype sources are not built
yet; enabling them fails at start-up (:func:`check_sources`), never silently.
Runs on executors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from georank.config import GeorankConfig
from georank.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """One candidate location for a photo."""

    source: str  # retrieved | generated | prototype
    lat_deg: float
    lon_deg: float
    description: str | None  # city, state, country (None for generated candidates)
    image_uri: str | None  # gallery image behind a retrieved candidate
    gallery_id: int | None = None
    similarity: float | None = None  # retrieval inner product


@dataclass(frozen=True)
class PhotoCandidates:
    """Everything the ranker needs for one photo besides its image."""

    candidates: list[Candidate]
    negatives: list[Candidate]
    neighbour_latlon_deg: list[tuple[float, float]]  # all k retrieved neighbours, best first (skip rule)


def check_sources(cfg: GeorankConfig) -> None:
    """Fail at start-up if the config enables a candidate source this version cannot build."""
    if cfg.candidates.generated.enabled:
        raise ConfigError(
            "config key 'candidates.generated.enabled': expected false, got true; generated candidates "
            "(a VLM answering the JSON prompt) are not available in this version of georank"
        )
    if cfg.candidates.prototypes.enabled:
        raise ConfigError(
            "config key 'candidates.prototypes.enabled': expected false, got true; cell-prototype "
            "candidates are not available in this version of georank"
        )
    need = cfg.retrieve.negatives_from + cfg.retrieve.negatives_count
    if need > cfg.retrieve.k:
        raise ConfigError(
            f"config key 'retrieve.k': expected at least retrieve.negatives_from + retrieve.negatives_count = {need}, "
            f"got {cfg.retrieve.k}"
        )
    if cfg.candidates.retrieved > cfg.retrieve.k:
        raise ConfigError(
            f"config key 'candidates.retrieved': expected at most retrieve.k = {cfg.retrieve.k}, "
            f"got {cfg.candidates.retrieved}"
        )


def from_neighbours(row: dict[str, Any], cfg: GeorankConfig) -> PhotoCandidates:
    """Candidates and negatives of one photo from its row of the NEIGHBOURS frame
    (lists of gallery_id, similarity, lat_deg, lon_deg, description, image_uri; best first)."""
    ids: Sequence[int] = row["gallery_id"]
    def one(i: int) -> Candidate:
        return Candidate(
            source="retrieved",
            lat_deg=float(row["lat_deg"][i]),
            lon_deg=float(row["lon_deg"][i]),
            description=row["description"][i] or "",
            image_uri=row["image_uri"][i],
            gallery_id=int(ids[i]),
            similarity=float(row["similarity"][i]),
        )

    n = min(cfg.candidates.retrieved, len(ids))
    lo = cfg.retrieve.negatives_from
    hi = min(lo + cfg.retrieve.negatives_count, len(ids))
    return PhotoCandidates(
        candidates=[one(i) for i in range(n)],
        negatives=[one(i) for i in range(lo, hi)],
        neighbour_latlon_deg=[(float(a), float(b)) for a, b in zip(row["lat_deg"], row["lon_deg"])],
    )
