"""The nightly geotag job's Spark layer: partition, call the core, stage, commit.

Driver side: :func:`run_geotag`. Executor side: the closures passed to
``mapInArrow`` capture only plain values (the config as a dict, the run id and
date) and call :mod:`georank.pipeline`; models and shards come from the
per-worker cache. The executor plumbing (the mapInArrow wrapper, threads, GPU binding, fault
injection, executor errors) lives in :mod:`georank.spark.executors`.

Shape of a run::

    photos (table | folder | s3:// prefix)
      -> input checks (null / repeated ids become error rows; georank.spark.photos)
      -> repartition (input.photos_per_partition): the only shuffle of photos, and it carries
                           PHOTOS rows (uri, inline file bytes), never pixels
      -> decode + geotag   ONE mapInArrow stage (with spark.gpu.enabled, a stage-level
                           ResourceProfile asking for a GPU): each task reads and decodes its
                           photos on a background thread one Arrow batch ahead of the models
                           (georank.pipeline.decode_ahead), as a DataLoader would
      -> staged Parquet    (all compute ends here; counts checked: read = predicted + errors)

With ``index.placement: sharded`` (:mod:`georank.spark.sharded`) the repartition hashes the PHOTOS rows by photo_id and caches
them; an embed stage decodes them (a batch ahead), the search runs shard by shard, and the rank
stage joins each photo's per-shard neighbour lists (partitioned like the photos: neither side
moves) to the same cached PHOTOS rows, merges the lists, looks up the winners' rows in the shards'
memory-mapped metadata and decodes the photos again: no pixels in any shuffle, inline bytes
shuffled once, the per-shard ids and scores once.
      -> ONE results commit (replaceWhere run_date: a rerun replaces the date; georank.spark.commit)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from georank import schema as S
from georank.config import GeorankConfig
from georank.errors import RunError
from georank.pipeline import decode_ahead
from georank.run_info import RunInfo
from georank.spark.commit import Staging
from georank.spark.executors import executor_errors, gpu_profile, on_executors
from georank.spark.photos import as_error_results, read_photos, split_bad_ids
from georank.spark.progress import Progress
from georank.storage import pin_artifacts

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from georank.spark.catalogue import Night
    from georank.write import Txn

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- executor steps


def _geotag_step(run: RunInfo) -> Callable[[pa.Table, GeorankConfig], pa.Table]:
    from georank.pipeline import geotag_partition

    def geotag(decoded: pa.Table, cfg: GeorankConfig) -> pa.Table:
        from georank.storage import pinned

        with pinned(run.artifacts):  # exactly the models the driver pinned, or a RunError naming one
            return geotag_partition(decoded, cfg, run)

    return geotag


def decode_and_geotag(
    cfg_dict: dict[str, Any], run: RunInfo, *, progress: Any = None
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of the replicated placement's one stage: PHOTOS batches in,
    RESULTS batches out. Each batch is read and decoded on a background thread while the models
    work on the batch before (:func:`georank.pipeline.decode_ahead`), so the photos reach this
    stage as file bytes or URIs, never as pixels through a shuffle, and the GPU (when one is
    asked for) does not wait on the decoder. One Python worker per task holds the models (two
    chained stages would give each task two workers, and any of them may load them). Captures
    only plain values and the progress accumulators; the returned function runs on executors."""
    return on_executors(cfg_dict, _geotag_step(run), accelerator=True, progress=progress, prepare=decode_ahead)


def results_frame(
    good: "DataFrame", cfg: GeorankConfig, run: RunInfo, *, n_parts: int, profile: Any = None, progress: Any = None,
    cached: list["DataFrame"] | None = None,
) -> "DataFrame":
    """On the driver: the RESULTS frame of the usable photos (PHOTOS rows), lazily.

    Replicated placement (every executor holds all shards): one shuffle of the PHOTOS rows into
    ``n_parts`` partitions, then ONE stage that reads, decodes (a batch ahead, on a background
    thread) and geotags, under ``profile`` (the GPU ResourceProfile, or None on CPU). No pixels
    cross a shuffle: a photo is at most its file's bytes there (inline input), else its URI.
    Sharded placement: the same PHOTOS rows, hash-partitioned by photo_id and cached, read by an
    embed stage and (joined with their neighbours) a rank stage, each decoding its photos itself:
    no pixels in any shuffle or join, and inline bytes shuffled once (:func:`_sharded_results`).
    The frames it caches are appended to ``cached``, for the caller to unpersist once written."""
    cfg_dict = cfg.model_dump()
    if cfg.index.placement == "replicated":
        return good.repartition(n_parts).mapInArrow(
            decode_and_geotag(cfg_dict, run, progress=progress), S.spark_schema(S.RESULTS), profile=profile
        )
    # Sharded: the photos are read twice (embed, then rank), so their one shuffle is kept: hash
    # partitions by photo_id, cached (inline bytes spill to the executors' disks as shuffle files do).
    photos = good.repartition(n_parts, "photo_id").cache()
    cached = cached if cached is not None else []
    cached.append(photos)
    from georank.spark.sharded import sharded_results

    with executor_errors():
        return sharded_results(photos, cfg, cfg_dict, run, profile, n_parts=n_parts, progress=progress, cached=cached)


def compute_description(run_id: str) -> str:
    """The Spark job description of a run's compute (photos -> staged results): what the UI shows,
    and how the event log's jobs of that step are found (``spark.job.description``;
    benchmarks/bench_shuffle.py)."""
    return f"georank geotag {run_id}: compute"


def run_geotag(
    spark: "SparkSession",
    cfg: GeorankConfig,
    *,
    photos_uri: str | None = None,
    run_date: dt.date,
    run_id: str,
    mode: Literal["overwrite", "error"] = "overwrite",
    allow_empty: bool = False,
    catalogue_uri: str | None = None,
) -> dict[str, Any]:
    """Run the nightly job for one date; returns the summary counts and per-stage seconds.
    The date's rows land in ONE commit of ``tables.results`` or not at all (:mod:`georank.spark.commit`).
    Guards before the commit (:mod:`georank.guards`): no photo read (unless ``allow_empty``) or
    more than ``write.max_error_fraction`` of them failed: the run fails and commits nothing.
    ``photos_uri`` (default ``input.photos``) may hold ``{run_date}``. With ``catalogue_uri`` the
    photos are the catalogue's due ones (:mod:`georank.spark.catalogue`); a catalogue night with
    none due commits nothing and succeeds, its summary saying so."""
    from georank.candidates import check_sources
    from georank.spark import commit

    check_sources(cfg)
    from georank.index import read_manifest

    # An unreadable or foreign manifest stops the run here; every partition then searches this version.
    manifest = read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    run = RunInfo(run_id=run_id, run_date=run_date, index_manifest=manifest.to_dict(), artifacts=pin_artifacts(cfg))
    removed = commit.remove_stale_staging(spark, cfg)
    if mode == "error":
        commit.refuse_existing(spark, cfg, run_date)
    night = None
    if catalogue_uri is not None:  # the catalogue night's photos and backlog, by the current versions
        from georank.catalogue import current_versions
        from georank.spark.catalogue import idle_summary, select_night

        night = select_night(spark, cfg, catalogue_uri=catalogue_uri, versions=current_versions(cfg, manifest),
                             run_date=run_date)
        if night.backlog.taken == 0:
            night.release()
            return idle_summary(cfg, night, run_date=run_date)
    else:
        from georank.catalogue import format_run_date

        photos_uri = format_run_date(photos_uri or cfg.input.photos, run_date)
    try:
        txn = commit.begin(spark, cfg, run_date)  # from the table, at the start: no clock orders commits
        with Staging(spark, cfg, run_id) as staging:
            summary = _compute_and_commit(spark, cfg, run, staging, photos_uri=photos_uri or "", mode=mode, txn=txn,
                                          allow_empty=allow_empty, night=night)
    finally:  # the selection's cached frames, whatever failed (a session may run again)
        if night is not None:
            night.release()
    if removed:
        summary["removed_stale_staging"] = removed
    return summary


def _compute_and_commit(
    spark: "SparkSession",
    cfg: GeorankConfig,
    run: RunInfo,
    staging: Staging,
    *,
    photos_uri: str,
    mode: Literal["overwrite", "error"],
    txn: "Txn",
    allow_empty: bool,
    night: "Night | None" = None,
) -> dict[str, Any]:
    """Compute every photo into the staging folder, check the counts and guards, commit once."""
    from pyspark.sql import functions as F

    from georank import guards
    from georank.spark import commit
    from georank.spark.catalogue import transient_error
    from georank.spark.guards import top_failure

    run_id, run_date = run.run_id, run.run_date
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    # A row number pinned by the cache: split_bad_ids's window sees ids and uris, never the bytes.
    photos = (night.photos if night else read_photos(spark, photos_uri, cfg)).withColumn(
        "_row", F.monotonically_increasing_id()).cache()
    cached = [photos, *(night.cached if night else ())]  # unpersisted once staged, or on any failure
    try:
        n_read = photos.count()
        good, input_errors = split_bad_ids(photos, cfg)
        n_good = good.count()
        seconds["input"] = time.monotonic() - t0
        log.info("run %s: %d photos read, %d usable ids", run_id, n_read, n_good)
        guards.check_not_empty(what=f"run {run_id}", read=n_read, source=night.uri if night else cfg.resolve(photos_uri),
                               allow_empty=allow_empty)

        n_parts = max(1, math.ceil(n_good / cfg.input.photos_per_partition))
        # Arrow batches of at most input.photos_per_batch rows: a task holds the pixels of two batches at a
        # time (the one the models work on and the next, decoded ahead), plus one being decoded.
        batch_rows = min(cfg.input.photos_per_partition, cfg.input.photos_per_batch)
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
        # Progress lines on the driver every input.progress_interval_s while the photos are computed;
        # input errors are decided here, the rest counted by the stage that makes the results rows.
        with Progress(spark, job="geotag", total=n_read, interval_s=cfg.input.progress_interval_s,
                      backlog=night.backlog if night else None) as progress:
            progress.add(done=n_read - n_good, errors=n_read - n_good)
            profile = gpu_profile(cfg)
            t1 = time.monotonic()
            log.info("run %s: computing %d photos in %d partitions", run_id, n_good, n_parts)
            sc = spark.sparkContext
            # Names the jobs in the UI and the event log; set before results_frame, whose sharded
            # placement runs its embed stage (and the photos' shuffle) at once.
            sc.setJobDescription(compute_description(run_id))
            try:
                results = results_frame(good, cfg, run, n_parts=n_parts, profile=profile, progress=progress.accumulators,
                                        cached=cached)
                input_rows = as_error_results(input_errors, run_id, run_date)
                rows = results.unionByName(input_rows)
                if night is not None:  # its error rows name the versions that failed (the next nights' state)
                    from georank.spark.catalogue import with_versions

                    rows = with_versions(rows, night.versions)
                with executor_errors():
                    rows.write.mode("error").parquet(staging.results_uri)
            finally:
                sc.setJobDescription(None)  # type: ignore[arg-type]  # pyspark: None clears the local property
    finally:
        for frame in cached:
            frame.unpersist()
    seconds["compute"] = time.monotonic() - t1
    staged = spark.read.parquet(staging.results_uri)
    counts = staged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("error_stage").isNull(), 1).otherwise(0)).alias("predicted"),
        F.sum(F.when(F.col("error_stage").isNotNull(), 1).otherwise(0)).alias("errors"),
        F.sum(F.when(F.col("ranker_skipped"), 1).otherwise(0)).alias("skipped"),
        F.sum(F.when(transient_error(), 1).otherwise(0)).alias("transient"),
    ).collect()[0]
    predicted, errors = int(counts["predicted"] or 0), int(counts["errors"] or 0)
    if predicted + errors != n_read:
        raise RunError(
            f"run {run_id}: expected read = predicted + errors, got {n_read} != {predicted} + {errors}; nothing was committed"
        )
    dup = staged.where(F.col("error_stage").isNull()).groupBy("photo_id").count().where("count > 1").limit(1).count()
    if dup:
        raise RunError(f"run {run_id}: a photo id has two predictions; nothing was committed")
    if night is None:
        guards.check_error_fraction(what=f"run {run_id}", read=n_read, errors=errors,
                                    max_fraction=cfg.write.max_error_fraction, top=lambda: top_failure(staged))
    else:  # a catalogue night: a photo's own lasting error (not an image, corrupt) is committed, or the
        # next nights would take the same bad photos again forever; only transient failures (access,
        # credentials, endpoints, GPU memory: the run's, not the photo's) count against the night
        guards.check_error_fraction(what=f"run {run_id} (transient failures of a catalogue night)", read=n_read,
                                    errors=int(counts["transient"] or 0), max_fraction=cfg.write.max_error_fraction,
                                    top=lambda: top_failure(staged.where(transient_error())))

    t2 = time.monotonic()
    version = commit.commit_results(staged, cfg, run_id=run_id, run_date=run_date, txn=txn, mode=mode)
    seconds["write"] = time.monotonic() - t2
    total = time.monotonic() - t0
    return {
        "read": n_read,
        "predicted": predicted,
        "errors": errors,
        "ranker_skipped": int(counts["skipped"] or 0),
        "skip_rate": round(int(counts["skipped"] or 0) / predicted, 4) if predicted else 0.0,
        "partitions": n_parts,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "photos_per_s": round(n_read / total, 3) if total > 0 else 0.0,
        "progress": progress.snapshot(),  # the progress lines' last counts (done, total, errors, rate)
        "run_date": run_date.isoformat(),
        "table": cfg.resolve(cfg.tables.results),
        "table_version": version,
        **({"catalogue": night.summary()} if night else {}),  # the catalogue night's backlog and versions
    }
