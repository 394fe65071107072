"""``--candidates reference``: rank exactly the candidates of the GeoRanker reference's own evaluation
files (``im2gps3k.csv`` / ``yfcc4k.csv``), the faithful reproduction path. Spark-free.

Per benchmark photo (a PHOTOS row joined with its REFERENCE_CANDIDATES row):

- candidates: the first ``candidates.retrieved`` entries of ``candidate_gps_lis`` (12 in the
  reference README, 10 in its evaluate script), each with its description (city state country of
  ``candidate_text_lis``) and its MP16-Pro image (``evaluate.reference_image_uri`` with
  ``{img_id}`` from ``candidate_img_lis``, e.g. a ``tar://`` member; with no template the
  candidate is asked about without its image); then the first ``candidates.generated.n`` entries of
  ``zs_gps_lis`` (no description, no image; ``(0.0, 0.0)`` kept or dropped by
  ``evaluate.reference_zero_gps`` when the file was read);
- negatives: the LAST ``retrieve.negatives_count`` entries of ``candidate_gps_lis``, as the reference;
- methods (:func:`reference_methods`): ``nn`` (the first retrieved entry: the reference's retrieval
  top-1, needs no image), ``ranker`` (every photo ranked) and ``full`` (skip rule on the
  reference's retrieved list); with ``candidates.generated.n > 0`` also ``ranker_retrieved`` and
  ``ranker_generated`` (the same scores, one source's candidates, decided again); one
  ``ranker@<name>`` per ``evaluate.compare_adapters`` entry (the same queries, that adapter).
  [L]kNN needs feature distances, which the reference files do not carry: not computed here.

A candidate whose image cannot be read or decoded is dropped (logged); the photo is ranked on
the others. Runs on executors.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from georank import schema as S
from georank.config import GeorankConfig
from georank.decide import decide
from georank.decode import decode_image, rgb_from_bytes
from georank.errors import PhotoError
from georank.eval.core import eval_row, ranker_and_full, source_alone_rows
from georank.io import PhotoReader
from georank.pipeline import decode_photos
from georank.run_info import RunInfo

log = logging.getLogger(__name__)

REFERENCE_METHODS = ("nn", "ranker", "full")  # the base methods of --candidates reference
REFERENCE_FRAME = pa.schema(list(S.PHOTOS) + [f for f in S.REFERENCE_CANDIDATES if f.name != "photo_id"])


def reference_sources(cfg: GeorankConfig) -> tuple[str, ...]:
    """Sources of the reference file's candidates under ``cfg``: retrieved, and generated
    (``zs_gps_lis``) when ``candidates.generated.n > 0``."""
    return ("retrieved", "generated") if cfg.candidates.generated.n > 0 else ("retrieved",)


def reference_methods(cfg: GeorankConfig) -> tuple[str, ...]:
    """The methods :func:`reference_partition` predicts with under ``cfg``."""
    return S.eval_methods(reference_sources(cfg), tuple(cfg.evaluate.compare_adapters), base=REFERENCE_METHODS)


def _image(img_id: str | None, cfg: GeorankConfig, reader: PhotoReader, cache: dict[str, Any]) -> tuple[Any, bool]:
    """(candidate image or None, usable): no template -> (None, True); unreadable -> (None, False)."""
    template = cfg.evaluate.reference_image_uri
    if template is None:
        return None, True
    if not img_id:
        return None, False
    uri = template.format(img_id=img_id)
    if uri not in cache:
        try:
            cache[uri] = decode_image(reader.read(uri), cfg.decode)
        except PhotoError as err:
            log.warning("reference candidate image %s unusable (%s): the candidate is dropped", uri, err)
            cache[uri] = None
    return cache[uri], cache[uri] is not None


def reference_partition(frame: pa.Table, cfg: GeorankConfig, run: RunInfo) -> pa.Table:
    """REFERENCE_FRAME (PHOTOS + the reference's candidates) -> EVAL_PREDICTIONS (REFERENCE_METHODS)."""
    from georank.rank import RankCandidate, RankQuery, get_scorer

    scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)
    versions = {"model_version": scorer.model_version, "adapter_version": scorer.adapter_version,
                "embed_version": None, "index_version": "reference"}
    decoded = decode_photos(frame.select(S.PHOTOS.names), cfg)
    refs = {r["photo_id"]: r for r in frame.to_pylist()}
    out: list[dict[str, Any]] = []
    for r in frame.to_pylist():  # the reference's retrieval top-1 needs no image
        lat, lon = r["cand_lat_deg"], r["cand_lon_deg"]
        if lat:
            out.append(eval_row(r["photo_id"], "nn", lat_deg=lat[0], lon_deg=lon[0], **versions))
        else:
            out.append(eval_row(r["photo_id"], "nn", error_stage="retrieve", error_reason="the reference file lists no candidate"))
    ranked_methods = [m for m in reference_methods(cfg) if m != "nn"]
    failed = pc.is_valid(decoded.column("error_stage"))
    for r in decoded.filter(failed).to_pylist():
        out += [eval_row(r["photo_id"], m, error_stage=r["error_stage"], error_reason=r["error_reason"]) for m in ranked_methods]
    reader = PhotoReader(cfg.s3, max_bytes=cfg.decode.max_bytes)
    cache: dict[str, Any] = {}
    todo: list[tuple[str, Any, list[dict[str, Any]], np.ndarray]] = []  # photo id, query, candidates, retrieved latlon
    n_neg = cfg.retrieve.negatives_count
    for d in decoded.filter(pc.invert(failed)).to_pylist():
        ref = refs[d["photo_id"]]
        cands, meta = [], []  # meta: source, lat_deg, lon_deg of each candidate
        for i in range(min(cfg.candidates.retrieved, len(ref["cand_lat_deg"]))):
            img, ok = _image(ref["cand_img_id"][i], cfg, reader, cache)
            if ok:
                cands.append(RankCandidate(ref["cand_lat_deg"][i], ref["cand_lon_deg"][i], ref["cand_description"][i] or "", img))
                meta.append({"source": "retrieved", "lat_deg": ref["cand_lat_deg"][i], "lon_deg": ref["cand_lon_deg"][i]})
        n_gen = cfg.candidates.generated.n
        for a, b in list(zip(ref["gen_lat_deg"], ref["gen_lon_deg"]))[:n_gen]:
            cands.append(RankCandidate(a, b, None, None))
            meta.append({"source": "generated", "lat_deg": a, "lon_deg": b})
        negs = [RankCandidate(a, b, t or "", None) for a, b, t in
                list(zip(ref["cand_lat_deg"], ref["cand_lon_deg"], ref["cand_description"]))[-n_neg:]] if n_neg else []
        if not cands:
            out += [eval_row(d["photo_id"], m, error_stage="rank", error_reason="no usable reference candidate") for m in ranked_methods]
            continue
        query = RankQuery(image=rgb_from_bytes(d["rgb"], d["width_px"], d["height_px"]), candidates=cands, negatives=negs)
        retrieved = np.column_stack([ref["cand_lat_deg"], ref["cand_lon_deg"]]).astype(np.float64)
        todo.append((d["photo_id"], query, meta, retrieved))
    sources = reference_sources(cfg)
    others = {f"ranker@{name}": get_scorer(cfg.rank.model_copy(update={"adapter_uri": uri}), cfg.s3, resolve=cfg.resolve)
              for name, uri in cfg.evaluate.compare_adapters.items()}
    step = cfg.rank.photos_per_batch
    for start in range(0, len(todo), step):
        batch = todo[start : start + step]
        queries = [t[1] for t in batch]
        for (pid, _q, meta, retrieved), scores in zip(batch, scorer.score(queries)):
            ranker = _decided(pid, "ranker", scores, meta, cfg, versions)
            out += ranker_and_full(ranker, retrieved, cfg)
            if len(sources) > 1:
                top = [{**m, "score": float(x)} for m, x in zip(meta, scores)]
                ranked = {"photo_id": pid, "error_stage": None, "top_candidates": top, "n_candidates": len(top)}
                out += source_alone_rows(ranked, sources, cfg, versions)
        for method, other in others.items():
            v = {**versions, "model_version": other.model_version, "adapter_version": other.adapter_version}
            out += [_decided(t[0], method, scores, t[2], cfg, v) for t, scores in zip(batch, other.score(queries))]
    return pa.Table.from_pylist(out, schema=S.EVAL_PREDICTIONS)


def _decided(pid: str, method: str, scores: Any, meta: list[dict[str, Any]], cfg: GeorankConfig, versions: dict[str, Any]) -> dict[str, Any]:
    latlon = np.array([[m["lat_deg"], m["lon_deg"]] for m in meta], dtype=np.float64)
    dec = decide(np.asarray(scores, dtype=np.float64), latlon, cfg.decide)
    return eval_row(pid, method, lat_deg=dec.lat_deg, lon_deg=dec.lon_deg, confidence=dec.confidence,
                    ranker_skipped=False, **versions)


def reference_frame(photos: pa.Table, reference: pa.Table) -> pa.Table:
    """PHOTOS joined with REFERENCE_CANDIDATES by position (both in the benchmark file's order)."""
    if photos.column("photo_id").to_pylist() != reference.column("photo_id").to_pylist():
        raise ValueError("reference_frame: expected photos and reference candidates in the same order")
    cols = {n: photos.column(n) for n in S.PHOTOS.names}
    cols.update({n: reference.column(n) for n in REFERENCE_FRAME.names if n not in cols})
    return pa.table(cols, schema=REFERENCE_FRAME)


__all__ = ["REFERENCE_FRAME", "REFERENCE_METHODS", "reference_frame", "reference_methods", "reference_partition", "reference_sources"]
