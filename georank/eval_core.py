"""The evaluate job's core: every method on the same photos and the same neighbours, Spark-free.

For one partition of benchmark photos (PHOTOS frame) :func:`evaluate_partition` decodes and embeds
once, retrieves once (``max(retrieve.k, evaluate.knn_k)`` neighbours) and predicts with each method
of ``schema.EVAL_METHODS``:

- ``nn``: retrieval top-1 (:func:`georank.baselines.nn_top1`);
- ``knn``: [L]kNN sigma=4 over the top ``evaluate.knn_k`` neighbours (:func:`georank.baselines.knn_sigma`);
- ``ranker``: the ranker over the retrieved candidates for EVERY photo (skip rule off), through
  :func:`georank.pipeline.rank_and_decide` with ``skip.enabled = false``;
- ``full``: the nightly method (skip rule as configured): a photo whose neighbours agree is
  decided by :func:`georank.decide.decide_skipped`, the others take the ``ranker`` row. This is
  what ``rank_and_decide`` with the skip rule on returns (the same functions, the same neighbours,
  a deterministic ranker), without ranking any photo twice.

Output: one EVAL_PREDICTIONS row per photo and method; a photo that failed (read, decode, rank...)
keeps its rows with ``error_stage``/``error_reason`` and counts as a miss. Runs on executors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from georank import schema as S
from georank.baselines import KnnConfig, feature_distance, knn_sigma, nn_top1
from georank.config import GeorankConfig
from georank.decide import decide_skipped, should_skip
from georank.pipeline import RunInfo, decode_photos, embed_isolated, rank_and_decide, retrieve_isolated

log = logging.getLogger(__name__)


def eval_row(photo_id: str, method: str, **values: Any) -> dict[str, Any]:
    """One EVAL_PREDICTIONS row: the given values, null elsewhere."""
    return {name: values.get(name) for name in S.EVAL_PREDICTIONS.names} | {"photo_id": photo_id, "method": method}


def ranker_and_full(ranker: dict[str, Any], retrieved_latlon_deg: np.ndarray, cfg: GeorankConfig) -> list[dict[str, Any]]:
    """The ``ranker`` row and the ``full`` method's row of one photo: where the retrieved neighbours
    ``(k, 2)`` agree (skip rule) the full method decides without the ranker, else it is the ranker."""
    if should_skip(retrieved_latlon_deg, cfg.skip):
        d = decide_skipped(retrieved_latlon_deg, cfg.skip, cfg.decide)
        versions = {k: ranker[k] for k in ("model_version", "adapter_version", "embed_version", "index_version")}
        full = eval_row(ranker["photo_id"], "full", lat_deg=d.lat_deg, lon_deg=d.lon_deg, confidence=d.confidence,
                        ranker_skipped=True, **versions)
    else:
        full = {**ranker, "method": "full"}
    return [ranker, full]


def _widened(cfg: GeorankConfig, run: RunInfo) -> GeorankConfig:
    """The config with ``retrieve.k = max(retrieve.k, evaluate.knn_k)`` (at most the gallery size)."""
    from georank.index import Manifest, read_manifest

    manifest = (
        Manifest.from_dict(run.index_manifest)
        if run.index_manifest is not None
        else read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    )
    k = min(max(cfg.retrieve.k, cfg.evaluate.knn_k), manifest.ntotal)
    return cfg.model_copy(update={"retrieve": cfg.retrieve.model_copy(update={"k": k})})


def _first_k(neighbours: pa.Table, k: int) -> pa.Table:
    """NEIGHBOURS with every list cut to its first ``k`` entries (what the nightly job retrieves)."""
    cols = {}
    for name in S.NEIGHBOURS.names:
        col = neighbours.column(name)
        cols[name] = pc.list_slice(col, 0, k) if pa.types.is_list(col.type) else col
    return pa.table(cols, schema=S.NEIGHBOURS)


def evaluate_partition(photos: pa.Table, cfg: GeorankConfig, run: RunInfo) -> pa.Table:
    """PHOTOS -> EVAL_PREDICTIONS: every method of ``schema.EVAL_METHODS`` for every photo."""
    decoded = decode_photos(photos, cfg)
    failed = pc.is_valid(decoded.column("error_stage"))
    out: list[dict[str, Any]] = []
    for r in decoded.filter(failed).select(["photo_id", "error_stage", "error_reason"]).to_pylist():
        out.extend(eval_row(r["photo_id"], m, error_stage=r["error_stage"], error_reason=r["error_reason"]) for m in S.EVAL_METHODS)
    good = decoded.filter(pc.invert(failed))
    if good.num_rows:
        out.extend(_methods(good, cfg, run))
    return pa.Table.from_pylist(out, schema=S.EVAL_PREDICTIONS)


def _error_rows(results: pa.Table) -> list[dict[str, Any]]:
    """EVAL rows (every method) of RESULTS error rows (a photo that failed to embed or retrieve)."""
    return [
        eval_row(r["photo_id"], m, error_stage=r["error_stage"], error_reason=r["error_reason"])
        for r in results.select(["photo_id", "error_stage", "error_reason"]).to_pylist()
        for m in S.EVAL_METHODS
    ]


def _methods(good: pa.Table, cfg: GeorankConfig, run: RunInfo) -> list[dict[str, Any]]:
    """As :func:`georank.pipeline.geotag_partition` does: embed and retrieve photo-isolated, then
    the candidate sources the config enables; retrieval here keeps the wider list kNN needs."""
    from georank.candidates import prototype_candidates

    embedded, emb, embed_version, embed_errors = embed_isolated(good, cfg, run)
    retrieved, wide, retrieve_errors = retrieve_isolated(embedded, emb, _widened(cfg, run), run, embed_version=embed_version)
    out = _error_rows(embed_errors) + _error_rows(retrieve_errors)
    if not retrieved.num_rows:
        return out
    neighbours = _first_k(wide, cfg.retrieve.k)
    protos = prototype_candidates(cfg, emb, embed_version=embed_version)  # [] per photo when disabled
    by_photo = dict(zip(embedded.column("photo_id").to_pylist(), protos))
    no_skip = cfg.model_copy(update={"skip": cfg.skip.model_copy(update={"enabled": False})})
    ranked_rows = rank_and_decide(retrieved, neighbours, no_skip, run, embed_version=embed_version, prototypes=by_photo)
    ranked = {r["photo_id"]: r for r in ranked_rows.to_pylist()}
    knn_cfg = KnnConfig(k=cfg.evaluate.knn_k, sigma_deg=cfg.evaluate.knn_sigma_deg)
    for w, n in zip(wide.to_pylist(), neighbours.to_pylist()):
        pid = w["photo_id"]
        rk = ranked[pid]
        versions = {
            "model_version": rk.get("model_version"),
            "adapter_version": rk.get("adapter_version"),
            "embed_version": embed_version,
            "index_version": w["index_version"],
        }
        latlon_wide = np.column_stack([w["lat_deg"], w["lon_deg"]]).astype(np.float64)
        lat, lon = nn_top1(latlon_wide)
        out.append(eval_row(pid, "nn", lat_deg=lat, lon_deg=lon, **versions))
        lat, lon = knn_sigma(latlon_wide, feature_distance(np.asarray(w["similarity"])), knn_cfg)
        out.append(eval_row(pid, "knn", lat_deg=lat, lon_deg=lon, **versions))
        ranker = eval_row(
            pid, "ranker", lat_deg=rk["lat_deg"], lon_deg=rk["lon_deg"], confidence=rk["confidence"], ranker_skipped=False,
            error_stage=rk["error_stage"], error_reason=rk["error_reason"], **versions,
        )
        out += ranker_and_full(ranker, np.column_stack([n["lat_deg"], n["lon_deg"]]).astype(np.float64), cfg)
    return out


__all__ = ["evaluate_partition"]
