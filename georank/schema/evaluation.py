"""Evaluation: benchmarks, the reference's candidates, tar members, methods and results."""

from __future__ import annotations

import pyarrow as pa

from georank.errors import SchemaError
from georank.schema.base import _f
from georank.schema.nightly import (
    SOURCES,
)

# --- Evaluation (georank.eval.benchmarks, georank.storage.tar, georank.eval.core, jobs/evaluate.py) -------

BENCHMARK = pa.schema(
    [
        _f("photo_id", pa.string(), "Benchmark photo id (IMG_ID)", nullable=False),
        _f("image", pa.string(), "Image file name under the benchmark's image folder or prefix"),
        _f("lat_deg", pa.float64(), "True latitude, WGS-84 degrees"),
        _f("lon_deg", pa.float64(), "True longitude, WGS-84 degrees"),
    ]
)

REFERENCE_CANDIDATES = pa.schema(
    [
        _f("photo_id", pa.string(), "Benchmark photo id (IMG_ID)", nullable=False),
        _f("cand_lat_deg", pa.list_(pa.float64()), "candidate_gps_lis latitudes, in the reference's order"),
        _f("cand_lon_deg", pa.list_(pa.float64()), "candidate_gps_lis longitudes, in the reference's order"),
        _f("cand_description", pa.list_(pa.string()), "candidate_text_lis as city state country, blanks dropped"),
        _f("cand_img_id", pa.list_(pa.string()), "candidate_img_lis: MP16-Pro image ids (null when the file has none)"),
        _f("gen_lat_deg", pa.list_(pa.float64()), "zs_gps_lis latitudes (generated candidates)"),
        _f("gen_lon_deg", pa.list_(pa.float64()), "zs_gps_lis longitudes (generated candidates)"),
        _f("gen_zero_count", pa.int32(), "(0.0, 0.0) entries of zs_gps_lis (failed answers), kept or dropped by config"),
    ]
)

TAR_INDEX = pa.schema(
    [
        _f("member", pa.string(), "Member name inside the tar", nullable=False),
        _f("offset_data", pa.int64(), "Byte offset of the member's data in the archive", nullable=False),
        _f("size", pa.int64(), "Member size in bytes", nullable=False),
    ]
)

# The evaluate job's methods. Base rows: retrieval top-1, [L]kNN sigma=4, the ranker over every
# enabled candidate source (skip rule off), the full method (skip rule on). With more than one
# source enabled, one ``ranker_<source>`` row per source (the same scores, that source's candidates
# only); one ``ranker@<name>`` row per adapter of ``evaluate.compare_adapters``. See eval_methods().
EVAL_BASE_METHODS = ("nn", "knn", "ranker", "full")
EVAL_SOURCES = SOURCES  # candidate sources, in the tie order
EVAL_METHODS = EVAL_BASE_METHODS  # the methods of a run with retrieved candidates only and no compared adapter


def eval_methods(
    sources: tuple[str, ...] = ("retrieved",), adapters: tuple[str, ...] = (), *, base: tuple[str, ...] = EVAL_BASE_METHODS
) -> tuple[str, ...]:
    """The evaluate job's methods, in report order: ``base``; then ``ranker_<source>`` for each of
    the enabled ``sources`` when there are two or more (with one, it IS the ``ranker`` row); then
    ``ranker@<name>`` for each compared adapter.

    >>> eval_methods(("retrieved", "prototype"), ("untrained",))
    ('nn', 'knn', 'ranker', 'full', 'ranker_retrieved', 'ranker_prototype', 'ranker@untrained')
    """
    bad = [s for s in sources if s not in EVAL_SOURCES]
    if bad:
        raise SchemaError(f"eval_methods: expected sources among {EVAL_SOURCES}, got {bad}")
    alone = tuple(f"ranker_{s}" for s in EVAL_SOURCES if s in sources) if len(sources) > 1 else ()
    return base + alone + tuple(f"ranker@{a}" for a in adapters)


_METHOD_DOC = "Method: nn | knn | ranker | full | ranker_<source> | ranker@<adapter name> (schema.eval_methods)"

EVAL_PREDICTIONS = pa.schema(
    [
        _f("photo_id", pa.string(), "Benchmark photo id", nullable=False),
        _f("method", pa.string(), _METHOD_DOC, nullable=False),
        _f("lat_deg", pa.float64(), "Predicted latitude (null when the photo failed)"),
        _f("lon_deg", pa.float64(), "Predicted longitude (null when the photo failed)"),
        _f("confidence", pa.float64(), "Decide-step confidence (ranker and full only)"),
        _f("ranker_skipped", pa.bool_(), "full: the skip rule decided without the ranker"),
        _f("model_version", pa.string(), "Ranker base model version"),
        _f("adapter_version", pa.string(), "Ranker LoRA adapter version"),
        _f("embed_version", pa.string(), "Embedder version"),
        _f("index_version", pa.string(), "Gallery index version"),
        _f("error_stage", pa.string(), "Stage that failed (null for a prediction)"),
        _f("error_reason", pa.string(), "Why the photo failed, in words"),
    ]
)

EVAL_RESULTS = pa.schema(
    [
        _f("run_id", pa.string(), "Id of the evaluate run", nullable=False),
        _f("run_at", pa.timestamp("us", tz="UTC"), "When the run finished"),
        _f("benchmark", pa.string(), "Benchmark name (its file's stem, e.g. im2gps3k_places365)", nullable=False),
        _f("candidates", pa.string(), "Candidate source: georank (retrieved here) | reference (the reference's file)"),
        _f("method", pa.string(), _METHOD_DOC, nullable=False),
        _f("radius_km", pa.float64(), "Threshold; a row is a hit when its geodesic error is strictly below it", nullable=False),
        _f("accuracy", pa.float64(), "hits / n, a fraction in [0, 1]"),
        _f("n", pa.int64(), "Benchmark rows evaluated (every row: n = hits + misses)"),
        _f("hits", pa.int64(), "Rows predicted strictly within radius_km"),
        _f("misses", pa.int64(), "Rows not within radius_km, failed photos included"),
        _f("failed", pa.int64(), "Rows without a prediction (a miss at every radius)"),
        _f("median_km", pa.float64(), "Median geodesic error over predicted rows"),
        _f("mean_km", pa.float64(), "Mean geodesic error over predicted rows"),
        _f("model_version", pa.string(), "Ranker base model version"),
        _f("adapter_version", pa.string(), "Ranker LoRA adapter version"),
        _f("embed_version", pa.string(), "Embedder version"),
        _f("index_version", pa.string(), "Gallery index version"),
    ]
)


