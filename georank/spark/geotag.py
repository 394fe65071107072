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

With ``index.placement: sharded`` the repartition hashes the PHOTOS rows by photo_id and caches
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
from georank.errors import GalleryIndexError, RunError
from georank.pipeline import RunInfo, decode_ahead, decode_queries_ahead
from georank.spark.commit import Staging
from georank.spark.executors import executor_errors, gpu_profile, on_executors, passthrough
from georank.spark.photos import read_photos, split_bad_ids
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


def _embed_step(run: RunInfo) -> Callable[[pa.Table, GeorankConfig], pa.Table]:
    def embed(decoded: pa.Table, cfg: GeorankConfig) -> pa.Table:
        """Sharded placement: DECODED (decoded in this task, a batch ahead) -> EMBEDDED. A photo
        that could not be read or decoded is a row with that ``error_stage`` and no embedding;
        one the encoder fails on, stage ``embed`` (per-photo isolation, as the replicated path)."""
        import pyarrow.compute as pc

        from georank.pipeline import embed_isolated

        bad = pc.is_valid(decoded.column("error_stage"))
        unread = decoded.filter(bad)
        good = decoded.filter(pc.invert(bad))
        ids: list[pa.Array] = []
        vectors: list[Any] = []
        versions: list[str | None] = []
        stages: list[pa.Array] = []
        reasons: list[pa.Array] = []
        if good.num_rows:
            from georank.storage import pinned

            with pinned(run.artifacts):
                ok, emb, version, failed = embed_isolated(good, cfg, run)
            n_ok, n_failed = ok.num_rows, failed.num_rows
            ids += [ok.column("photo_id").combine_chunks(), failed.column("photo_id").combine_chunks()]
            vectors += list(emb) + [None] * n_failed
            versions += [version] * (n_ok + n_failed)
            stages += [pa.nulls(n_ok, pa.string()), failed.column("error_stage").combine_chunks()]
            reasons += [pa.nulls(n_ok, pa.string()), failed.column("error_reason").combine_chunks()]
        ids.append(unread.column("photo_id").combine_chunks())
        vectors += [None] * unread.num_rows
        versions += [None] * unread.num_rows
        stages.append(unread.column("error_stage").combine_chunks())
        reasons.append(unread.column("error_reason").combine_chunks())
        return pa.Table.from_arrays(
            [
                pa.concat_arrays([a.cast(pa.string()) for a in ids]),
                pa.array(vectors, type=pa.list_(pa.float32())),
                pa.array(versions, type=pa.string()),
                pa.concat_arrays(stages),
                pa.concat_arrays(reasons),
            ],
            schema=S.EMBEDDED,
        )

    return embed


def _rank_step(run: RunInfo) -> Callable[[pa.Table, GeorankConfig], pa.Table]:
    from georank.index import Manifest
    from georank.pipeline import error_results, rank_and_decide
    from georank.spark.retrieve import merge_lists

    def rank(table: pa.Table, cfg: GeorankConfig) -> pa.Table:
        """Sharded placement: DECODED + per-shard lists (ids, scores) + embed_version rows -> RESULTS:
        merge each photo's lists exactly, look up the winners' rows (NEIGHBOURS), then rank. A photo whose second read or decode
        fails (its file changed between the stages) is its own error row."""
        import pyarrow.compute as pc

        manifest = Manifest.from_dict(run.index_manifest or {})
        bad = pc.is_valid(table.column("error_stage"))
        parts = [error_results(table.filter(bad), run)] if pc.any(bad).as_py() else []
        good = table.filter(pc.invert(bad))
        from georank.storage import pinned

        for version in sorted(set(good.column("embed_version").to_pylist())):
            rows = good.filter(pc.equal(good.column("embed_version"), version))
            neighbours = merge_lists(rows.select(["photo_id", "parts"]), cfg=cfg, manifest=manifest, k=cfg.retrieve.k)
            with pinned(run.artifacts):
                parts.append(rank_and_decide(rows.select(S.DECODED.names), neighbours, cfg, run, embed_version=version))
        return pa.concat_tables(parts) if parts else S.RESULTS.empty_table()

    return rank


# ----------------------------------------------------------------------------- driver


def _as_error_results(df: "DataFrame", run_id: str, run_date: dt.date) -> "DataFrame":
    """RESULTS rows (prediction columns null) from a frame of photo_id, uri, error_stage, error_reason."""
    from pyspark.sql import functions as F

    own = {"photo_id", "uri", "run_id", "run_date", "error_stage", "error_reason"}
    return df.select(
        "photo_id",
        "uri",
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in S.spark_schema(S.RESULTS) if f.name not in own],
        F.lit(run_id).alias("run_id"),
        F.lit(run_date).alias("run_date"),
        "error_stage",
        "error_reason",
    ).select(*S.RESULTS.names)


def _sharded_results(
    photos: "DataFrame", cfg: GeorankConfig, cfg_dict: dict[str, Any], run: RunInfo, profile: Any,
    *, n_parts: int, progress: Any = None, cached: list["DataFrame"],
) -> "DataFrame":
    """RESULTS for ``index.placement: sharded`` from PHOTOS rows hash-partitioned by photo_id into
    ``n_parts`` and cached (their one shuffle): an embed stage that reads and decodes its photos
    (a batch ahead), the shard-wise search (:func:`georank.spark.retrieve.shard_lists`), then a
    rank stage that merges each photo's per-shard lists exactly, decodes its photos again and
    ranks. The per-shard lists come partitioned like the photos, so their join moves neither
    side: the photos cross one shuffle, the per-shard ids and scores one (plus the queries'
    embeddings to the shards); the winners' rows are looked up after the merge."""
    from pyspark.sql import functions as F

    from georank.index import Manifest
    from georank.spark.retrieve import shard_lists

    manifest = Manifest.from_dict(run.index_manifest or {})
    if cfg.retrieve.k > manifest.ntotal:
        raise GalleryIndexError(
            f"retrieve.k={cfg.retrieve.k} but index {manifest.index_version} holds only {manifest.ntotal} gallery vectors"
        )
    embedded = photos.mapInArrow(
        on_executors(cfg_dict, _embed_step(run), accelerator=True, prepare=decode_ahead), S.spark_schema(S.EMBEDDED),
        profile=profile,
    ).cache()
    embedded.count()  # embed once: the search and the joins below all read it
    cached.append(embedded)
    embedded_ok = embedded.where(F.col("error_stage").isNull())
    # read / decode / embed failures, with their uri (ids and uris only: the bytes stay cached)
    failed = photos.select("photo_id", "uri").join(
        embedded.where(F.col("error_stage").isNotNull()).select("photo_id", "error_stage", "error_reason"), "photo_id"
    )
    lists = shard_lists(embedded_ok.select("photo_id", "embedding"), cfg_d=cfg_dict, manifest=manifest,
                        k=cfg.retrieve.k, n_parts=n_parts).cache()
    cached.append(lists)
    # A photo the search returned no row for is an error row, never silently dropped by the join.
    not_found = (
        photos.select("photo_id", "uri").join(embedded_ok.select("photo_id"), "photo_id")
        .join(lists.select("photo_id"), "photo_id", "left_anti")
        .select("photo_id", "uri", F.lit("retrieve").alias("error_stage"),
                F.lit("the index search returned no neighbours for the photo").alias("error_reason"))
    )
    # The lists are partitioned exactly as the cached photos (key photo_id, n_parts): this join is
    # narrow on both sides; only the embedder versions (ids and a short string) move to it.
    joined = (
        photos.join(lists, "photo_id")
        .join(embedded_ok.select("photo_id", "embed_version"), "photo_id")
        .select(*S.PHOTOS.names, "parts", "embed_version")
    )
    ranked = joined.mapInArrow(
        on_executors(cfg_dict, _rank_step(run), accelerator=True, progress=progress, prepare=decode_queries_ahead),
        S.spark_schema(S.RESULTS), profile=profile,
    )
    errors = _as_error_results(failed.unionByName(not_found), run.run_id, run.run_date)
    if progress is not None:  # error rows made outside the rank stage count towards progress too
        errors = errors.mapInArrow(
            on_executors(cfg_dict, passthrough, accelerator=False, progress=progress), errors.schema
        )
    return ranked.unionByName(errors)


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
    with executor_errors():
        return _sharded_results(photos, cfg, cfg_dict, run, profile, n_parts=n_parts, progress=progress, cached=cached)


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
    txn = commit.begin(spark, cfg, run_date)  # from the table, at the start: no clock orders commits
    with Staging(spark, cfg, run_id) as staging:
        summary = _compute_and_commit(spark, cfg, run, staging, photos_uri=photos_uri or "", mode=mode, txn=txn,
                                      allow_empty=allow_empty, night=night)
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
    from georank.spark.guards import top_failure

    run_id, run_date = run.run_id, run.run_date
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    # A row number pinned by the cache: split_bad_ids's window sees ids and uris, never the bytes.
    photos = (night.photos if night else read_photos(spark, photos_uri, cfg)).withColumn(
        "_row", F.monotonically_increasing_id()).cache()
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
        # unpersisted once the results are staged (a session may run again)
        cached = [photos, *(night.cached if night else ())]
        try:
            results = results_frame(good, cfg, run, n_parts=n_parts, profile=profile, progress=progress.accumulators,
                                    cached=cached)
            input_rows = _as_error_results(input_errors, run_id, run_date)
            rows = results.unionByName(input_rows)
            if night is not None:  # its error rows name the versions that failed (the next nights' state)
                from georank.spark.catalogue import with_versions

                rows = with_versions(rows, night.versions)
            with executor_errors():
                rows.write.mode("error").parquet(staging.results_uri)
        finally:
            sc.setJobDescription(None)  # type: ignore[arg-type]  # pyspark: None clears the local property
            for frame in cached:
                frame.unpersist()
    seconds["compute"] = time.monotonic() - t1
    staged = spark.read.parquet(staging.results_uri)
    counts = staged.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(F.col("error_stage").isNull(), 1).otherwise(0)).alias("predicted"),
        F.sum(F.when(F.col("error_stage").isNotNull(), 1).otherwise(0)).alias("errors"),
        F.sum(F.when(F.col("ranker_skipped"), 1).otherwise(0)).alias("skipped"),
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
                                    max_fraction=cfg.write.max_error_fraction,
                                    top=top_failure(staged) if errors else None)
    else:  # a catalogue night: a photo's own lasting error (not an image, corrupt) is committed, or the
        # next nights would take the same bad photos again forever; only transient failures (access,
        # credentials, endpoints, GPU memory: the run's, not the photo's) count against the night
        from georank.catalogue import TRANSIENT_REASON

        transient = staged.where(F.col("error_stage").isNotNull() & F.col("error_reason").rlike(TRANSIENT_REASON))
        n_transient = transient.count() if errors else 0
        guards.check_error_fraction(what=f"run {run_id} (transient failures of a catalogue night)", read=n_read,
                                    errors=n_transient, max_fraction=cfg.write.max_error_fraction,
                                    top=top_failure(transient) if n_transient else None)

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
