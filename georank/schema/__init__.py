"""Every table and frame georank reads or writes, declared once as Arrow schemas.

Readers, writers, tests and docs/tables.md use these. Spark schemas are derived with
:func:`spark_schema` (column comments travel as ``comment`` metadata, which Delta
stores as column comments). Units are in the names: ``lat_deg``, ``spread_km``.

Tables (persisted, Delta):
    RESULTS (the nightly table: one row per photo per run date, a prediction or an error),
    ERRORS (gallery_errors), GALLERY, GALLERY_EMBEDDINGS, RUNS (one row per run of every job, :mod:`.runs`)
Views of RESULTS (documented filters, georank.results.read_predictions / read_errors):
    PREDICTIONS (error_stage IS NULL), ERRORS (error_stage IS NOT NULL, renamed stage/reason)
Frames (between stages, in memory / Arrow batches):
    PHOTOS (job input), DECODED (after the CPU stage), CANDIDATES

The declarations live in the package's rooms by job (:mod:`.nightly`, :mod:`.index`,
:mod:`.evaluation`, :mod:`.training`, :mod:`.cells`; :mod:`.base` derives Spark schemas and
checks batches); import them from ``georank.schema``.
"""

from __future__ import annotations

from georank.schema.base import check_batch, comment, spark_schema
from georank.schema.cells import AERIAL_TILES, CELLS
from georank.schema.evaluation import (
    BENCHMARK,
    EVAL_BASE_METHODS,
    EVAL_METHODS,
    EVAL_PREDICTIONS,
    EVAL_RESULTS,
    EVAL_SOURCES,
    REFERENCE_CANDIDATES,
    TAR_INDEX,
    eval_methods,
)
from georank.schema.index import EMBEDDED, GALLERY_PREPARED, NEIGHBOURS, SHARD_ENTRY, SHARD_META
from georank.schema.nightly import (
    CANDIDATE_STRUCT,
    CANDIDATES,
    DECODED,
    ERRORS,
    GALLERY,
    GALLERY_EMBEDDINGS,
    PARTITION_BY,
    PHOTOS,
    PLACE_FIELDS,
    PREDICTIONS,
    RESULTS,
    SOURCES,
    STAGES,
    TABLES,
)
from georank.schema.runs import RUN_STATUSES, RUNS
from georank.schema.training import TRAINING_GROUPS

# Every Delta table georank writes (georank.write.commit), with its partitioning and comment.
TABLES.update({"eval_results": EVAL_RESULTS, "training_groups": TRAINING_GROUPS, "runs": RUNS})
PARTITION_BY.update({"eval_results": (), "training_groups": (), "runs": ()})
TABLE_COMMENTS: dict[str, str] = {
    "results": "georank nightly results: one row per photo per run date (a prediction or an error)",
    "gallery": "georank gallery: geotagged photos the index is built from",
    "gallery_embeddings": "georank index build: the gallery's embeddings",
    "gallery_errors": "georank index build: gallery rows that could not be used, with reasons",
    "eval_results": "georank evaluate: accuracy per run, benchmark, method and radius",
    "training_groups": "georank training data: one GeoRanking group per query photo",
    "runs": "georank runs: one row per run of every job (status, reason, counts, seconds, versions), failed runs included",
}

__all__ = [
    "check_batch",
    "comment",
    "spark_schema",
    "STAGES",
    "SOURCES",
    "PLACE_FIELDS",
    "PHOTOS",
    "DECODED",
    "GALLERY",
    "GALLERY_EMBEDDINGS",
    "CANDIDATE_STRUCT",
    "CANDIDATES",
    "PREDICTIONS",
    "ERRORS",
    "TABLES",
    "PARTITION_BY",
    "TABLE_COMMENTS",
    "RESULTS",
    "GALLERY_PREPARED",
    "SHARD_META",
    "SHARD_ENTRY",
    "EMBEDDED",
    "NEIGHBOURS",
    "BENCHMARK",
    "REFERENCE_CANDIDATES",
    "TAR_INDEX",
    "EVAL_BASE_METHODS",
    "EVAL_SOURCES",
    "EVAL_METHODS",
    "EVAL_PREDICTIONS",
    "EVAL_RESULTS",
    "eval_methods",
    "TRAINING_GROUPS",
    "RUNS",
    "RUN_STATUSES",
    "CELLS",
    "AERIAL_TILES",
]
