"""Rank and decide for one batch of photos: candidates, skip rule, the ranker, the decision.

Called by :func:`georank.pipeline.geotag_partition` (and the sharded placement's rank stage) on
DECODED rows and their NEIGHBOURS. Every failure of one photo is that photo's error row; a
candidate whose gallery image is unusable is dropped and counted (``n_candidates_dropped``).
Runs on executors; the ranker comes from the per-worker cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.candidates import Candidate, PhotoCandidates, from_neighbours, winning_source
from georank.config import GeorankConfig
from georank.decide import decide, decide_skipped, should_skip
from georank.decode import decode_image, rgb_from_bytes
from georank.errors import PhotoError
from georank.io import PhotoReader
from georank.isolation import Failure, is_run_level, per_item, reason_of, stage_of

if TYPE_CHECKING:
    from georank.run_info import RunInfo

log = logging.getLogger(__name__)


def _candidate_image(
    uri: str | None,
    cfg: GeorankConfig,
    images: dict[str, Any],
    unusable: dict[str, str],
    reader: PhotoReader,
) -> tuple[Any, str | None]:
    """(the gallery image behind a candidate, None) or (None, why it is unusable): unreadable,
    undecodable (the same decode_image and limits as the photos) or a size the ranker refuses.

    ``images`` holds the decoded images of ONE rank batch by URI (the caller drops it with the
    batch, so decoded pixels never outlive their batch); ``unusable`` holds the reasons of the
    whole call by URI (a few bytes each: a bad image is read and logged once per partition)."""
    if not uri:
        return None, "the gallery row has no image URI"
    if uri in unusable:
        return None, unusable[uri]
    if uri not in images:
        try:
            img = decode_image(reader.read(uri), cfg.decode)
            _check_rankable(img, cfg)
            images[uri] = img
        except Exception as exc:  # noqa: BLE001  # any failure of one gallery image drops that candidate only
            if is_run_level(exc):
                raise
            why = reason_of(exc, "reading the gallery image")
            log.warning("gallery image %s unusable (%s): the candidate is dropped", uri, why)
            unusable[uri] = why
            return None, why
    return images[uri], None


def _check_rankable(img: Any, cfg: GeorankConfig) -> None:
    """PhotoError("rank", ...) when the ranker's own resize (multiples of 28 within rank.min_pixels /
    rank.max_pixels) would give a size its image processor refuses: found here, before scoring."""
    from georank.rank.prompts import MAX_ASPECT_RATIO, snap_size

    snap_size(img.width, img.height, min_pixels=cfg.rank.min_pixels, max_pixels=cfg.rank.max_pixels,
              max_aspect_ratio=MAX_ASPECT_RATIO)


def _candidate_struct(c: Any, score: float | None) -> dict[str, Any]:
    return {
        "source": c.source,
        "gallery_id": c.gallery_id,
        "lat_deg": c.lat_deg,
        "lon_deg": c.lon_deg,
        "score": None if score is None else float(score),
    }


@dataclass
class _Pending:
    """One photo the ranker must score, before its images are loaded (no pixels held)."""

    common: dict[str, Any]
    index: int  # row of the photo in DECODED (its rgb is read from there when its batch comes)
    pc: PhotoCandidates


@dataclass
class _ToRank:
    """One photo of the current rank batch: its row's common columns, candidates and their images."""

    common: dict[str, Any]
    pc: PhotoCandidates
    usable: list[Any]  # Candidate, in candidate order (unusable gallery images left out)
    images: list[Any]  # PIL image per usable candidate (None for generated ones)
    n_dropped: int
    query: Any = None  # RankQuery, built just before scoring


def _prediction(common: dict[str, Any], d: Any, *, skipped: bool, n: int, n_dropped: int, top: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **common,
        "lat_deg": d.lat_deg,
        "lon_deg": d.lon_deg,
        "confidence": d.confidence,
        "spread_km": d.spread_km,
        "ranker_skipped": skipped,
        "n_candidates": n,
        "n_candidates_dropped": n_dropped,
        "top_candidates": top,
        "winning_source": winning_source(top, ranker_skipped=skipped),
    }


def _error(common: dict[str, Any], exc: BaseException, *, stage: str, what: str) -> dict[str, Any]:
    if is_run_level(exc):
        raise exc
    log.warning("photo %s: %s failed: %s", common["photo_id"], what, exc, exc_info=not isinstance(exc, PhotoError))
    return {**common, "error_stage": stage_of(exc, stage), "error_reason": reason_of(exc, what)}


def rank_and_decide(
    decoded: pa.Table, neighbours: pa.Table, cfg: GeorankConfig, run: RunInfo, *, embed_version: str,
    prototypes: Mapping[str, Sequence[Candidate]] | None = None,
) -> pa.Table:
    """DECODED (rows without errors) + NEIGHBOURS (same photo order) -> RESULTS.

    Photos whose neighbours agree are decided without the ranker (skip rule); the rest
    are scored in batches of ``rank.photos_per_batch`` with the shared-prefix scorer. Every
    failure of one photo (its candidates, its image's size for the ranker, scoring, a NaN/inf
    score, deciding) is that photo's error row; a batch that fails is scored again photo by
    photo. A candidate whose gallery image is unusable is dropped and counted
    (``n_candidates_dropped``). Loading the ranker and run-level errors still raise.

    Candidate images are read and decoded one rank batch at a time and released with it: the
    decoded pixels alive are one batch's, whatever the partition's size (issue 14 item 5).
    """
    from georank.rank import get_scorer

    scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)
    rows = decoded.select(["photo_id", "uri"]).to_pylist()  # pixels stay in Arrow until their batch
    neigh = neighbours.to_pylist()
    if [r["photo_id"] for r in rows] != [n["photo_id"] for n in neigh]:
        raise ValueError("rank_and_decide: expected neighbours in the same photo order as the decoded photos")
    out: list[dict[str, Any]] = []
    pending: list[_Pending] = []
    base = {
        "model_version": scorer.model_version,
        "adapter_version": scorer.adapter_version,
        "embed_version": embed_version,
        "run_id": run.run_id,
        "run_date": run.run_date,
        "error_stage": None,
        "error_reason": None,
    }
    for i, (row, nrow) in enumerate(zip(rows, neigh)):
        common = {**base, "photo_id": row["photo_id"], "uri": row["uri"], "index_version": nrow["index_version"]}
        try:
            pc = from_neighbours(nrow, cfg, prototypes=(prototypes or {}).get(row["photo_id"], ()))
        except Exception as exc:  # noqa: BLE001
            out.append(_error(common, exc, stage="retrieve", what="building the candidates from the neighbours"))
            continue
        if not _skipped(common, pc, cfg, out):
            pending.append(_Pending(common, i, pc))

    if pending:
        log.info("ranking %d of %d photos (the others: skip rule or an error)", len(pending), len(rows))
    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)  # one S3 client for every candidate image
    unusable: dict[str, str] = {}  # gallery URI -> why (whole call; no pixels)
    todo = iter(pending)
    while _rank_next_batch(todo, decoded, cfg, scorer, unusable, reader, out):
        pass
    return results_table(out)


def _rank_next_batch(
    todo: Iterator[_Pending],
    decoded: pa.Table,
    cfg: GeorankConfig,
    scorer: Any,
    unusable: dict[str, str],
    reader: PhotoReader,
    out: list[dict[str, Any]],
) -> bool:
    """Rank the next batch: ``rank.photos_per_batch`` photos that reach the ranker, their candidate
    images decoded now and released when this returns (nothing of them outlives the call: rows
    go into ``out``), so memory does not grow with the partition. False when none were left."""
    images: dict[str, Any] = {}  # this batch's decoded gallery images by URI
    batch: list[_ToRank] = []
    for p in todo:
        item = _prepare(p, decoded, cfg, images, unusable, reader, out)
        if item is not None:
            batch.append(item)
        if len(batch) == cfg.rank.photos_per_batch:
            break
    if not batch:
        return False
    batch = _add_generated(batch, cfg, out)
    scored = per_item([t.query for t in batch], scorer.score, what="the ranker", stage="rank")
    for ranked, scores in zip(batch, scored):
        out.append(_decide_ranked(ranked, scores, cfg))
    return True


def _skipped(common: dict[str, Any], pc: PhotoCandidates, cfg: GeorankConfig, out: list[dict[str, Any]]) -> bool:
    """True when the photo is done without the ranker: the skip rule's prediction row, or the
    skip rule's error row, went into ``out``."""
    latlon = np.asarray(pc.neighbour_latlon_deg, dtype=np.float64)
    try:
        if not should_skip(latlon, cfg.skip):
            return False
        d = decide_skipped(latlon, cfg.skip, cfg.decide)
        top = [_candidate_struct(c, None) for c in pc.candidates[: cfg.decide.top_candidates]]
        out.append(_prediction(common, d, skipped=True, n=len(pc.candidates), n_dropped=0, top=top))
    except Exception as exc:  # noqa: BLE001
        out.append(_error(common, exc, stage="decide", what="the skip rule"))
    return True


def _prepare(
    p: _Pending,
    decoded: pa.Table,
    cfg: GeorankConfig,
    images: dict[str, Any],
    unusable: dict[str, str],
    reader: PhotoReader,
    out: list[dict[str, Any]],
) -> _ToRank | None:
    """The photo's query for the ranker, its candidate images loaded into ``images`` (the current
    batch's), or None when it became an error row in ``out``."""
    from georank.rank import RankCandidate, RankQuery

    common, pc = p.common, p.pc
    usable, cand_images, why_dropped = [], [], []
    for c in pc.candidates:
        img, why = (
            _candidate_image(c.image_uri, cfg, images, unusable, reader) if c.source == "retrieved" else (None, None)
        )
        if why is not None:
            why_dropped.append(why)
            continue
        usable.append(c)
        cand_images.append(img)
    if not usable:
        first = f" (first: {why_dropped[0]})" if why_dropped else ""
        reason = f"no usable candidate: the gallery images of all {len(pc.candidates)} candidates are unusable{first}"
        out.append({**common, "error_stage": "rank", "error_reason": reason_of(PhotoError("rank", reason), "")})
        return None
    try:
        query_image = rgb_from_bytes(
            decoded.column("rgb")[p.index].as_py(),
            decoded.column("width_px")[p.index].as_py(),
            decoded.column("height_px")[p.index].as_py(),
        )
        _check_rankable(query_image, cfg)
        query = RankQuery(
            image=query_image,
            candidates=[
                RankCandidate(c.lat_deg, c.lon_deg, c.description, img, image_key=_feature_key(common, c, img))
                for c, img in zip(usable, cand_images)
            ],
            negatives=[RankCandidate(n.lat_deg, n.lon_deg, n.description, None) for n in pc.negatives],
        )
    except Exception as exc:  # noqa: BLE001
        out.append(_error(common, exc, stage="rank", what="preparing the photo for the ranker"))
        return None
    return _ToRank(common, pc, usable, cand_images, len(why_dropped), query)


def _feature_key(common: dict[str, Any], c: Candidate, img: Any) -> str | None:
    """What names a gallery image for the ranker's feature cache: the index version and gallery
    id behind the candidate, and the decoded size (None: not cached, e.g. no gallery id)."""
    if img is None or c.gallery_id is None:
        return None
    return f"{common['index_version']}/{c.gallery_id}/{img.width}x{img.height}"


def _add_generated(batch: list[_ToRank], cfg: GeorankConfig, out: list[dict[str, Any]]) -> list[_ToRank]:
    """Generated candidates for the photos of one ranker batch (ONE generate call; photo by photo
    only if that raises), placed after the retrieved ones and before the prototypes (the tie
    order). A photo whose generation fails becomes its error row (stage rank); the batch's others go on."""
    if not cfg.candidates.generated.enabled or cfg.candidates.generated.n == 0 or not batch:
        return batch
    from georank.candidates import generated_candidates
    from georank.rank import RankCandidate

    made = per_item([t.query.image for t in batch], lambda imgs: generated_candidates(cfg, imgs)[0],
                    what="the candidate generator", stage="rank")
    kept = []
    for item, cands in zip(batch, made):
        if isinstance(cands, Failure):
            out.append({**item.common, "error_stage": cands.stage, "error_reason": cands.reason})
            continue
        at = next((i for i, c in enumerate(item.usable) if c.source == "prototype"), len(item.usable))
        item.usable[at:at] = cands
        item.images[at:at] = [None] * len(cands)
        ranked = list(item.query.candidates)
        ranked[at:at] = [RankCandidate(c.lat_deg, c.lon_deg, None, None) for c in cands]
        item.query = replace(item.query, candidates=ranked)
        kept.append(item)
    return kept


def _decide_ranked(item: _ToRank, scores: Any, cfg: GeorankConfig) -> dict[str, Any]:
    """The prediction row of a scored photo, or its error row (scoring failed, wrong number of
    scores, a NaN/inf score, or deciding failed)."""
    if isinstance(scores, Failure):
        return {**item.common, "error_stage": scores.stage, "error_reason": scores.reason}
    try:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (len(item.usable),):
            raise PhotoError("rank", f"the ranker returned {s.shape} scores: expected ({len(item.usable)},), one per candidate")
        latlon = np.array([[c.lat_deg, c.lon_deg] for c in item.usable], dtype=np.float64)
        d = decide(s, latlon, cfg.decide)  # refuses NaN/inf (PhotoError, stage rank)
        order = np.argsort(-s, kind="stable")[: cfg.decide.top_candidates]
        top = [_candidate_struct(item.usable[i], s[i]) for i in order]
        return _prediction(item.common, d, skipped=False, n=len(item.usable), n_dropped=item.n_dropped, top=top)
    except Exception as exc:  # noqa: BLE001
        return _error(item.common, exc, stage="decide", what="deciding")



def results_table(rows: list[dict[str, Any]]) -> pa.Table:
    """RESULTS rows (missing columns null), the prediction rows given their place names:
    ``country_code``, ``admin1``, ``place``, ``place_dist_km`` of the predicted point, for the
    whole batch at once (:func:`georank.places.nearest_places`); error rows keep them null."""
    full = [{name: r.get(name) for name in S.RESULTS.names} for r in rows]
    _add_place_names(full)
    return pa.Table.from_pylist(full, schema=S.RESULTS)


def _add_place_names(rows: list[dict[str, Any]]) -> None:
    from georank.places import nearest_places

    preds = [r for r in rows if r["error_stage"] is None and r["lat_deg"] is not None and r["lon_deg"] is not None]
    if not preds:
        return
    near = nearest_places(np.array([r["lat_deg"] for r in preds], dtype=np.float64),
                          np.array([r["lon_deg"] for r in preds], dtype=np.float64))
    for i, r in enumerate(preds):
        dist_km = float(near.dist_km[i])
        r["country_code"], r["admin1"], r["place"] = near.country_code[i], near.admin1[i], near.place[i]
        r["place_dist_km"] = None if np.isnan(dist_km) else dist_km
