"""Propose candidates: one interface for every source, with a ``source`` on each candidate.

Sources, in the tie order the decide step relies on (earlier wins a tie):
1. ``retrieved``: the photo's nearest gallery neighbours, in rank order
   (``candidates.retrieved`` of them; the reference README uses 12, its evaluate script 10);
   each with its reverse-geocoded description and the gallery image behind it;
2. ``generated``: locations a vision-language model proposes (:mod:`georank.generate`: the seed's
   JSON prompt, sampled; the first ``candidates.generated.n`` valid answers); no description and
   no image (the ranker's generated-candidate prompt);
3. ``prototype``: the ``candidates.prototypes.k`` cell keys nearest to the query embedding
   (:mod:`georank.cells`: proxy-classifier prototypes of adaptive S2 cells, optionally aerial
   keys); the cell centre, its reverse-geocoded description, no image.

Every :class:`Candidate` carries lat, lon, source, its rank within its source (0-based),
description and image URI (None when it has none). The negatives of a photo (the same for all its
candidates) are the retrieved neighbours at ranks ``retrieve.negatives_from`` ..
+``negatives_count`` (the reference: the last five of 20). Runs on executors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from georank.config import GeorankConfig
from georank.errors import ConfigError


@dataclass(frozen=True)
class Candidate:
    """One candidate location for a photo."""

    source: str  # retrieved | generated | prototype
    lat_deg: float
    lon_deg: float
    description: str | None  # city, state, country (None for generated candidates)
    image_uri: str | None  # gallery image behind a retrieved candidate (None for the other sources)
    gallery_id: int | None = None  # gallery id of a retrieved candidate (None for the other sources)
    similarity: float | None = None  # retrieval inner product (retrieved, prototype)
    rank: int = 0  # 0-based position within its source (best first)


@dataclass(frozen=True)
class PhotoCandidates:
    """Everything the ranker needs for one photo besides its image."""

    candidates: list[Candidate]
    negatives: list[Candidate]
    neighbour_latlon_deg: list[tuple[float, float]]  # all k retrieved neighbours, best first (skip rule)


def check_sources(cfg: GeorankConfig) -> None:
    """Fail at start-up if the config asks for candidates this version cannot build."""
    gen, protos = cfg.candidates.generated, cfg.candidates.prototypes
    if gen.enabled and gen.n > gen.samples and gen.temperature > 0:
        raise ConfigError(
            f"config key 'candidates.generated.n': expected at most candidates.generated.samples = {gen.samples} "
            f"(answers kept out of those sampled), got {gen.n}"
        )
    if protos.enabled and protos.uri is None:
        raise ConfigError(
            "config key 'candidates.prototypes.uri': expected the prototypes' index (built by jobs/build_cells.py) "
            "when candidates.prototypes.enabled is true, got null"
        )
    if protos.enabled and cfg.index.placement == "sharded":
        raise ConfigError(
            "config key 'candidates.prototypes.enabled': expected false with index.placement=sharded (its rank "
            "stage does not see the query embeddings yet), got true; valid: index.placement=replicated, or "
            "candidates.prototypes.enabled=false"
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


def from_neighbours(
    row: dict[str, Any],
    cfg: GeorankConfig,
    *,
    generated: Sequence[Candidate] = (),
    prototypes: Sequence[Candidate] = (),
) -> PhotoCandidates:
    """Candidates and negatives of one photo from its row of the NEIGHBOURS frame
    (lists of gallery_id, similarity, lat_deg, lon_deg, description, image_uri; best first),
    followed by its ``generated`` and then its ``prototypes`` candidates (the tie order)."""
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
            rank=i,
        )

    n = min(cfg.candidates.retrieved, len(ids))
    lo = cfg.retrieve.negatives_from
    hi = min(lo + cfg.retrieve.negatives_count, len(ids))
    return PhotoCandidates(
        candidates=[one(i) for i in range(n)] + list(generated) + list(prototypes),
        negatives=[one(i) for i in range(lo, hi)],
        neighbour_latlon_deg=[(float(a), float(b)) for a, b in zip(row["lat_deg"], row["lon_deg"])],
    )


def prototype_candidates(cfg: GeorankConfig, embeddings: np.ndarray, *, embed_version: str | None = None) -> list[list[Candidate]]:
    """The ``candidates.prototypes.k`` nearest cell keys of each query ``embeddings (q, d)``, best
    first (one search over the prototypes' shards, merged exactly); empty lists when disabled."""
    q = len(embeddings)
    if not cfg.candidates.prototypes.enabled or cfg.candidates.prototypes.k == 0 or q == 0:
        return [[] for _ in range(q)]
    from georank.cells import search_cells

    hits = search_cells(cfg, embeddings, embed_version=embed_version)
    return [
        [
            Candidate(
                source="prototype",
                lat_deg=float(hits.lat_deg[i, j]),
                lon_deg=float(hits.lon_deg[i, j]),
                description=hits.description[i][j] or "",
                image_uri=None,
                gallery_id=None,  # not a gallery photo (the key's id in the prototypes' index stays there)
                similarity=float(hits.similarity[i, j]),
                rank=j,
            )
            for j in range(hits.k)
        ]
        for i in range(q)
    ]


def generated_candidates(cfg: GeorankConfig, images: Sequence[Any]) -> tuple[list[list[Candidate]], Counter[str]]:
    """Generated candidates of each image (ONE ``generate`` call for all of them) and the answers
    dropped, by reason; empty lists when disabled."""
    if not cfg.candidates.generated.enabled or cfg.candidates.generated.n == 0 or not images:
        return [[] for _ in images], Counter()
    from georank.generate import get_generator

    answers = get_generator(cfg).answers(images)
    dropped: Counter[str] = Counter()
    for a in answers:
        dropped.update(a.dropped)
    out = [
        [Candidate("generated", lat, lon, None, None, rank=j) for j, (lat, lon) in enumerate(a.latlon_deg)]
        for a in answers
    ]
    return out, dropped


def winning_source(top_candidates: Sequence[dict[str, Any]], *, ranker_skipped: bool) -> str | None:
    """The source of the prediction: the best-scored candidate's (``top_candidates`` is best first,
    ties to the earliest candidate); a skipped ranker predicts from the retrieved neighbours."""
    if ranker_skipped:
        return "retrieved"
    return str(top_candidates[0]["source"]) if top_candidates else None
