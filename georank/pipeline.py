"""The nightly geotag pipeline as a Spark-free core over Arrow tables.

    PHOTOS --decode_photos--> DECODED --embed_photos--> (photo_id, embedding)
           --search_neighbours--> NEIGHBOURS --rank_and_decide--> RESULTS

:func:`geotag_partition` runs every step after decoding on one partition (the
bare core loop, also used by the benchmark); the Spark layer
(:mod:`georank.spark.geotag`) calls these same functions inside ``mapInArrow``.
Every function here runs on executors; models and index shards come from the
per-worker cache (:mod:`georank.resources`). A photo that cannot be used becomes
a row with ``error_stage``/``error_reason``; nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank.candidates import PhotoCandidates, from_neighbours
from georank.config import GeorankConfig
from georank.decide import decide, decide_skipped, should_skip
from georank.decode import decode_image, rgb_from_bytes, rgb_to_bytes
from georank.errors import PhotoError
from georank.io import PhotoReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """Plain values every output row carries (shipped to executors as is). ``index_manifest`` is the
    index manifest the driver read at start-up (``Manifest.to_dict()``): every partition of the run
    searches that one index version, even if a new index is committed meanwhile."""

    run_id: str
    run_date: dt.date
    index_manifest: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- decode (CPU stage)


def decode_photos(photos: pa.Table | pa.RecordBatch, cfg: GeorankConfig) -> pa.Table:
    """PHOTOS -> DECODED: read (inline bytes, local path or s3://) and decode each photo.

    A photo that cannot be read or decoded keeps its row with ``error_stage`` and
    ``error_reason`` set; one S3 client serves the whole batch.
    """
    log.info("decoding %d photos", photos.num_rows)
    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)
    out: dict[str, list[Any]] = {name: [] for name in S.DECODED.names}
    for row in photos.to_pylist():
        uri, data = row.get("uri"), row.get("image_bytes")
        rgb = width = height = stage = reason = None
        try:
            rgb, width, height = rgb_to_bytes(decode_image(reader.read(uri, data), cfg.decode))
        except PhotoError as err:
            stage, reason = err.stage, err.reason
        out["photo_id"].append(row["photo_id"])
        out["uri"].append(uri)
        out["rgb"].append(rgb)
        out["width_px"].append(width)
        out["height_px"].append(height)
        out["error_stage"].append(stage)
        out["error_reason"].append(reason)
    return pa.table(out, schema=S.DECODED)


# ----------------------------------------------------------------------------- embed + retrieve

QUERY_EMBEDDINGS = pa.schema(
    [
        pa.field("photo_id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)


def _images(decoded: pa.Table) -> list[Any]:
    return [
        rgb_from_bytes(r["rgb"], r["width_px"], r["height_px"])
        for r in decoded.select(["rgb", "width_px", "height_px"]).to_pylist()
    ]


def embed_photos(decoded: pa.Table, cfg: GeorankConfig) -> tuple[np.ndarray, str]:
    """Query embeddings ``(n, d)`` float32 (L2-normalised) of decoded photos, and the embedder version."""
    from georank.embed import get_embedder

    embedder = get_embedder(cfg)
    if decoded.num_rows == 0:
        return np.zeros((0, 0), dtype=np.float32), embedder.version
    return embedder.embed(_images(decoded)), embedder.version


def search_neighbours(
    photo_ids: list[str],
    emb: np.ndarray,
    cfg: GeorankConfig,
    *,
    embed_version: str | None = None,
    manifest_dict: dict[str, Any] | None = None,
) -> pa.Table:
    """NEIGHBOURS of each query: top ``retrieve.k`` over every shard held by this worker.

    ``embed_version``: the queries' embedder version; an index whose gallery was embedded by
    another embedder is refused (its neighbours would be meaningless), naming both versions.
    """
    from georank.errors import GalleryIndexError
    from georank.index import Manifest, read_manifest
    from georank.retrieve import search

    if len(photo_ids) == 0:
        return S.NEIGHBOURS.empty_table()
    root = cfg.resolve(cfg.index.uri)
    manifest = Manifest.from_dict(manifest_dict) if manifest_dict is not None else read_manifest(root, cfg.s3)
    if embed_version is not None and manifest.embed_version != embed_version:
        raise GalleryIndexError(
            f"index {root} (version {manifest.index_version}) was built from gallery embeddings of embedder "
            f"{manifest.embed_version}, but the queries are embedded by {embed_version} ({cfg.embed.model_uri}); "
            "expected the same embedder: rebuild the index (jobs/build_index.py) or set embed.* to the gallery's embedder"
        )
    return pa.Table.from_batches([search(cfg, emb, k=cfg.retrieve.k, manifest=manifest).to_batch(photo_ids)])


# ----------------------------------------------------------------------------- rank + decide


def _candidate_image(uri: str | None, cfg: GeorankConfig, cache: dict[str, Any], reader: PhotoReader) -> Any:
    if not uri:
        return None
    if uri not in cache:
        try:
            cache[uri] = decode_image(reader.read(uri), cfg.decode)
        except PhotoError as err:
            log.warning("gallery image %s unusable (%s): the candidate is dropped", uri, err)
            cache[uri] = None
    return cache[uri]


def _candidate_struct(c: Any, score: float | None) -> dict[str, Any]:
    return {
        "source": c.source,
        "gallery_id": c.gallery_id,
        "lat_deg": c.lat_deg,
        "lon_deg": c.lon_deg,
        "score": None if score is None else float(score),
    }


def rank_and_decide(
    decoded: pa.Table, neighbours: pa.Table, cfg: GeorankConfig, run: RunInfo, *, embed_version: str
) -> pa.Table:
    """DECODED (rows without errors) + NEIGHBOURS (same photo order) -> RESULTS.

    Photos whose neighbours agree are decided without the ranker (skip rule); the rest
    are scored in batches of ``rank.photos_per_batch`` with the shared-prefix scorer.
    """
    from georank.rank import RankCandidate, RankQuery, get_scorer

    scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)
    rows = decoded.select(["photo_id", "uri", "rgb", "width_px", "height_px"]).to_pylist()
    neigh = neighbours.to_pylist()
    if [r["photo_id"] for r in rows] != [n["photo_id"] for n in neigh]:
        raise ValueError("rank_and_decide: expected neighbours in the same photo order as the decoded photos")
    out: list[dict[str, Any]] = []
    to_rank: list[tuple[dict[str, Any], PhotoCandidates, list[Any], list[Any]]] = []
    image_cache: dict[str, Any] = {}
    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)  # one S3 client for every candidate image
    base = {
        "model_version": scorer.model_version,
        "adapter_version": scorer.adapter_version,
        "embed_version": embed_version,
        "run_id": run.run_id,
        "run_date": run.run_date,
        "error_stage": None,
        "error_reason": None,
    }
    for row, nrow in zip(rows, neigh):
        pc = from_neighbours(nrow, cfg)
        common = {**base, "photo_id": row["photo_id"], "uri": row["uri"], "index_version": nrow["index_version"]}
        latlon = np.asarray(pc.neighbour_latlon_deg, dtype=np.float64)
        if should_skip(latlon, cfg.skip):
            d = decide_skipped(latlon, cfg.skip, cfg.decide)
            top = pc.candidates[: cfg.decide.top_candidates]
            out.append(
                {
                    **common,
                    "lat_deg": d.lat_deg,
                    "lon_deg": d.lon_deg,
                    "confidence": d.confidence,
                    "spread_km": d.spread_km,
                    "ranker_skipped": True,
                    "n_candidates": len(pc.candidates),
                    "top_candidates": [_candidate_struct(c, None) for c in top],
                }
            )
            continue
        usable, images = [], []
        for c in pc.candidates:
            img = _candidate_image(c.image_uri, cfg, image_cache, reader) if c.source == "retrieved" else None
            if c.source == "retrieved" and img is None:
                continue
            usable.append(c)
            images.append(img)
        if not usable:
            out.append(
                {
                    **common,
                    "error_stage": "rank",
                    "error_reason": "no usable candidate: every neighbour's gallery image failed to load",
                }
            )
            continue
        to_rank.append((common, pc, usable, images))

    def flush(batch: list[tuple[dict[str, Any], PhotoCandidates, list[Any], list[Any]]]) -> None:
        queries = []
        for common, pc, usable, images in batch:
            idx = rows_by_id[common["photo_id"]]
            query_image = rgb_from_bytes(rows[idx]["rgb"], rows[idx]["width_px"], rows[idx]["height_px"])
            queries.append(
                RankQuery(
                    image=query_image,
                    candidates=[RankCandidate(c.lat_deg, c.lon_deg, c.description, img) for c, img in zip(usable, images)],
                    negatives=[RankCandidate(n.lat_deg, n.lon_deg, n.description, None) for n in pc.negatives],
                )
            )
        for (common, _pc, usable, _images), scores in zip(batch, scorer.score(queries)):
            latlon = np.array([[c.lat_deg, c.lon_deg] for c in usable], dtype=np.float64)
            d = decide(np.asarray(scores), latlon, cfg.decide)
            order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[: cfg.decide.top_candidates]
            out.append(
                {
                    **common,
                    "lat_deg": d.lat_deg,
                    "lon_deg": d.lon_deg,
                    "confidence": d.confidence,
                    "spread_km": d.spread_km,
                    "ranker_skipped": False,
                    "n_candidates": len(usable),
                    "top_candidates": [_candidate_struct(usable[i], scores[i]) for i in order],
                }
            )

    rows_by_id = {r["photo_id"]: i for i, r in enumerate(rows)}
    if to_rank:
        log.info("ranking %d of %d photos (the others: skip rule or no usable candidate)", len(to_rank), len(rows))
    step = cfg.rank.photos_per_batch
    for start in range(0, len(to_rank), step):
        flush(to_rank[start : start + step])
    return _results_table(out)


def _results_table(rows: list[dict[str, Any]]) -> pa.Table:
    full = [{name: r.get(name) for name in S.RESULTS.names} for r in rows]
    return pa.Table.from_pylist(full, schema=S.RESULTS)


def error_results(decoded_errors: pa.Table, run: RunInfo) -> pa.Table:
    """RESULTS rows for photos that failed before the accelerator stage."""
    rows = [
        {
            "photo_id": r["photo_id"],
            "uri": r["uri"],
            "run_id": run.run_id,
            "run_date": run.run_date,
            "error_stage": r["error_stage"],
            "error_reason": r["error_reason"],
        }
        for r in decoded_errors.select(["photo_id", "uri", "error_stage", "error_reason"]).to_pylist()
    ]
    return _results_table(rows)


def geotag_partition(decoded: pa.Table, cfg: GeorankConfig, run: RunInfo) -> pa.Table:
    """DECODED -> RESULTS for one partition: embed, retrieve (shards held by this worker),
    candidates, skip rule, rank, decide. Rows that already failed pass through as errors."""
    import pyarrow.compute as pc

    failed = pc.is_valid(decoded.column("error_stage"))
    bad = decoded.filter(failed)
    good = decoded.filter(pc.invert(failed))
    parts = [error_results(bad, run)] if bad.num_rows else []
    if good.num_rows:
        emb, embed_version = embed_photos(good, cfg)
        ids = good.column("photo_id").to_pylist()
        neighbours = search_neighbours(ids, emb, cfg, embed_version=embed_version, manifest_dict=run.index_manifest)
        parts.append(rank_and_decide(good, neighbours, cfg, run, embed_version=embed_version))
    if not parts:
        return S.RESULTS.empty_table()
    return pa.concat_tables(parts)
