"""The evaluate job's core: every method on the same photos and the same neighbours, Spark-free.

For one partition of benchmark photos (PHOTOS frame) :func:`evaluate_partition` decodes and embeds
once, retrieves once (``max(retrieve.k, evaluate.knn_k)`` neighbours) and predicts with each method
of :func:`methods_of` (``schema.eval_methods`` of the config):

- ``nn``: retrieval top-1 (:func:`georank.eval.baselines.nn_top1`);
- ``knn``: [L]kNN sigma=4 over the top ``evaluate.knn_k`` neighbours (:func:`georank.eval.baselines.knn_sigma`);
- ``ranker``: the ranker over every candidate source the config enables, for EVERY photo (skip
  rule off), through :func:`georank.ranking.rank_and_decide` with ``skip.enabled = false``;
- ``full``: the nightly method (skip rule as configured): a photo whose neighbours agree is
  decided by :func:`georank.decide.decide_skipped`, the others take the ``ranker`` row. This is
  what ``rank_and_decide`` with the skip rule on returns (the same functions, the same neighbours,
  a deterministic ranker), without ranking any photo twice;
- ``ranker_<source>`` (two or more sources enabled): the ranker's SAME scores restricted to that
  source's candidates, decided again by :func:`georank.decide.decide`. Exact, not an estimate: the
  ranker scores each candidate from its own prompt (query photo, that candidate, the negatives),
  never from the other candidates, so a source alone would get these very scores; a photo without
  a candidate of that source is a miss (error row, stage ``rank``);
- ``ranker@<name>``: the ranker with the adapter ``evaluate.compare_adapters[name]`` (same base
  model, same photos, neighbours and prototypes; generated candidates again from the same seed),
  skip rule off, every enabled source.

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
from georank.config import GeorankConfig
from georank.decide import decide, decide_skipped, should_skip
from georank.eval.baselines import KnnConfig, feature_distance, knn_sigma, nn_top1
from georank.pipeline import decode_photos, embed_isolated, rank_and_decide, retrieve_isolated
from georank.run_info import RunInfo

log = logging.getLogger(__name__)


def eval_row(photo_id: str, method: str, **values: Any) -> dict[str, Any]:
    """One EVAL_PREDICTIONS row: the given values, null elsewhere."""
    return {name: values.get(name) for name in S.EVAL_PREDICTIONS.names} | {"photo_id": photo_id, "method": method}


def enabled_sources(cfg: GeorankConfig) -> tuple[str, ...]:
    """The candidate sources the config enables, in the tie order (retrieved always)."""
    gen, protos = cfg.candidates.generated, cfg.candidates.prototypes
    return ("retrieved",) + (("generated",) if gen.enabled and gen.n > 0 else ()) + (("prototype",) if protos.enabled and protos.k > 0 else ())


def methods_of(cfg: GeorankConfig) -> tuple[str, ...]:
    """The methods :func:`evaluate_partition` predicts with under ``cfg`` (``schema.eval_methods``)."""
    return S.eval_methods(enabled_sources(cfg), tuple(cfg.evaluate.compare_adapters))


def source_alone_rows(ranked: dict[str, Any], sources: tuple[str, ...], cfg: GeorankConfig, versions: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``ranker_<source>`` rows of one photo from its ranked RESULTS row, whose
    ``top_candidates`` hold EVERY candidate with its score (``decide.top_candidates`` at least the
    candidate count): each source's candidates alone, decided again with the same scores (their
    order in ``top_candidates``, score-sorted and stable, keeps the tie order)."""
    pid = ranked["photo_id"]
    if ranked["error_stage"] is not None:
        return [eval_row(pid, f"ranker_{s}", error_stage=ranked["error_stage"], error_reason=ranked["error_reason"], **versions)
                for s in sources]
    top = ranked["top_candidates"] or []
    if len(top) != ranked["n_candidates"]:
        raise ValueError(f"photo {pid}: expected every candidate's score ({ranked['n_candidates']}), got {len(top)}")
    out = []
    for s in sources:
        mine = [c for c in top if c["source"] == s]
        if not mine:
            out.append(eval_row(pid, f"ranker_{s}", error_stage="rank", error_reason=(
                f"no {s} candidate for this photo (it had {len(top)} from other sources): a miss for the {s} source alone"), **versions))
            continue
        d = decide(np.array([c["score"] for c in mine], dtype=np.float64),
                   np.array([[c["lat_deg"], c["lon_deg"]] for c in mine], dtype=np.float64), cfg.decide)
        out.append(eval_row(pid, f"ranker_{s}", lat_deg=d.lat_deg, lon_deg=d.lon_deg, confidence=d.confidence,
                            ranker_skipped=False, **versions))
    return out


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
    """PHOTOS -> EVAL_PREDICTIONS: every method of :func:`methods_of` for every photo."""
    decoded = decode_photos(photos, cfg)
    failed = pc.is_valid(decoded.column("error_stage"))
    out: list[dict[str, Any]] = []
    for r in decoded.filter(failed).select(["photo_id", "error_stage", "error_reason"]).to_pylist():
        out.extend(eval_row(r["photo_id"], m, error_stage=r["error_stage"], error_reason=r["error_reason"]) for m in methods_of(cfg))
    good = decoded.filter(pc.invert(failed))
    if good.num_rows:
        out.extend(_methods(good, cfg, run))
    return pa.Table.from_pylist(out, schema=S.EVAL_PREDICTIONS)


def _error_rows(results: pa.Table, methods: tuple[str, ...]) -> list[dict[str, Any]]:
    """EVAL rows (every method) of RESULTS error rows (a photo that failed to embed or retrieve)."""
    return [
        eval_row(r["photo_id"], m, error_stage=r["error_stage"], error_reason=r["error_reason"])
        for r in results.select(["photo_id", "error_stage", "error_reason"]).to_pylist()
        for m in methods
    ]


def _with_adapter(cfg: GeorankConfig, adapter_uri: str) -> GeorankConfig:
    return cfg.model_copy(update={"rank": cfg.rank.model_copy(update={"adapter_uri": adapter_uri})})


def _methods(good: pa.Table, cfg: GeorankConfig, run: RunInfo) -> list[dict[str, Any]]:
    """As :func:`georank.pipeline.geotag_partition` does: embed and retrieve photo-isolated, then
    the candidate sources the config enables; retrieval here keeps the wider list kNN needs."""
    from georank.candidates import prototype_candidates

    embedded, emb, embed_version, embed_errors = embed_isolated(good, cfg, run)
    retrieved, wide, retrieve_errors = retrieve_isolated(embedded, emb, _widened(cfg, run), run, embed_version=embed_version)
    methods = methods_of(cfg)
    out = _error_rows(embed_errors, methods) + _error_rows(retrieve_errors, methods)
    if not retrieved.num_rows:
        return out
    neighbours = _first_k(wide, cfg.retrieve.k)
    protos = prototype_candidates(cfg, emb, embed_version=embed_version)  # [] per photo when disabled
    by_photo = dict(zip(embedded.column("photo_id").to_pylist(), protos))
    sources = enabled_sources(cfg)
    every = len(sources) > 1  # source-alone rows need every candidate's score in top_candidates
    n_max = cfg.candidates.retrieved + cfg.candidates.generated.n + cfg.candidates.prototypes.k
    no_skip = cfg.model_copy(update={
        "skip": cfg.skip.model_copy(update={"enabled": False}),
        "decide": cfg.decide.model_copy(update={"top_candidates": max(cfg.decide.top_candidates, n_max) if every else cfg.decide.top_candidates}),
    })
    ranked = {r["photo_id"]: r for r in rank_and_decide(
        retrieved, neighbours, no_skip, run, embed_version=embed_version, prototypes=by_photo).to_pylist()}
    compared = {  # method -> photo id -> RESULTS row of the ranker with that adapter
        f"ranker@{name}": {r["photo_id"]: r for r in rank_and_decide(
            retrieved, neighbours, _with_adapter(no_skip, uri), run, embed_version=embed_version, prototypes=by_photo).to_pylist()}
        for name, uri in cfg.evaluate.compare_adapters.items()
    }
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
        out += ranker_and_full(_ranker_row(rk, "ranker", versions), np.column_stack([n["lat_deg"], n["lon_deg"]]).astype(np.float64), cfg)
        if every:
            out += source_alone_rows(rk, sources, cfg, versions)
        for method, rows in compared.items():
            other = rows[pid]
            out.append(_ranker_row(other, method, {**versions, "model_version": other.get("model_version"),
                                                   "adapter_version": other.get("adapter_version")}))
    return out


def _ranker_row(rk: dict[str, Any], method: str, versions: dict[str, Any]) -> dict[str, Any]:
    """The EVAL row of a ranked RESULTS row (a prediction or its error)."""
    return eval_row(rk["photo_id"], method, lat_deg=rk["lat_deg"], lon_deg=rk["lon_deg"], confidence=rk["confidence"],
                    ranker_skipped=False, error_stage=rk["error_stage"], error_reason=rk["error_reason"], **versions)


__all__ = ["enabled_sources", "evaluate_partition", "methods_of", "source_alone_rows"]
