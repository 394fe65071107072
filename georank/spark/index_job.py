"""Spark layer of the gallery index build (driver side; the work runs on executors).

    gallery table (Delta or Parquet, schema.GALLERY)
      -> duplicate ids split off (stage "input")
      -> mapInArrow(prepare_gallery_batch): validate, read, decode, embed  [GPU profile if enabled]
      -> gallery_embeddings Delta table (whole table replaced in one commit)
      -> gallery_errors Delta table (this run_date's rows replaced in one commit)
      -> groupBy(shard).applyInArrow(write_shard): one task builds and writes each shard
      -> manifest.json written last, on the driver (the commit of the index)

Every gallery row read ends up embedded or in the errors table with a stage and
a reason: ``read == embedded + errors`` is checked before the index is committed.
An IVF-PQ index is trained once on the driver from a sample of the embeddings;
its trained, empty template reaches the shard tasks as a broadcast.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank import write
from georank.config import GeorankConfig
from georank.errors import GalleryIndexError, RunError, SchemaError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

_REQUIRED = ("gallery_id", "lat_deg", "lon_deg")


def read_gallery(spark: SparkSession, uri: str, *, gallery_version: str | None = None) -> tuple[DataFrame, str]:
    """The gallery as a DataFrame with the schema.GALLERY columns, and its version.

    A Delta table is read at its latest version, pinned (``versionAsOf``) so the embeddings
    and the manifest describe one snapshot; a Parquet file/folder gets the version
    ``gallery_version`` or a hash of its file names and sizes. Missing optional columns
    (``uri`` or ``image_bytes``, place fields) are added as nulls.
    """
    from pyspark.sql import functions as F

    if write.is_delta(spark, uri):
        from delta.tables import DeltaTable

        latest = DeltaTable.forPath(spark, uri).history(1).select("version").first()
        version = str(latest["version"])  # type: ignore[index]
        df = spark.read.format("delta").option("versionAsOf", version).load(uri)
        label = gallery_version or f"delta:{version}"
    else:
        try:
            df = spark.read.parquet(uri)
        except Exception as exc:  # noqa: BLE001 - AnalysisException: path missing / not Parquet
            raise SchemaError(f"gallery table {uri}: expected a Delta table or Parquet, got {str(exc).splitlines()[0]}") from None
        files = sorted(df.inputFiles())
        label = gallery_version or "parquet:" + hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing or not ({"uri", "image_bytes"} & set(df.columns)):
        raise SchemaError(
            f"gallery table {uri}: expected columns {list(_REQUIRED)} and at least one of ['uri', 'image_bytes'], "
            f"missing {missing or ['uri/image_bytes']}; got {df.columns}"
        )
    types = {f.name: f.type for f in S.GALLERY}
    from pyspark.sql.pandas.types import from_arrow_type

    cols = [
        (F.col(n) if n in df.columns else F.lit(None)).cast(from_arrow_type(types[n])).alias(n) for n in S.GALLERY.names
    ]
    return df.select(cols), label


def _prepare(cfg_d: dict[str, Any], n_shards: int, progress: tuple[Any, Any]):  # type: ignore[no-untyped-def]
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Executor: validate, read, decode and embed gallery rows (one row out per row in);
        each slice's rows and errors are added to the ``progress`` accumulators (done, errors)."""

        from georank.config import validate_config
        from georank.gallery import prepare_gallery_batch
        from georank.spark.executors import bind_gpu, executor_logging, fit_threads, task_cpus

        executor_logging()
        cpus = task_cpus()
        if cpus is not None:
            fit_threads(cpus)
        cfg = validate_config(cfg_d)
        bind_gpu(cfg)
        done, errors = progress
        for batch in batches:
            if batch.num_rows:
                for start in range(0, batch.num_rows, cfg.embed.batch_size * 8):
                    out = prepare_gallery_batch(batch.slice(start, cfg.embed.batch_size * 8), cfg, n_shards=n_shards)
                    done.add(out.num_rows)
                    errors.add(out.num_rows - out.column("error_stage").null_count)
                    yield out

    return run


def _build_shard(cfg_d: dict[str, Any], template_bc: Any, root: str, version: str, n_shards: int, dim: int):  # type: ignore[no-untyped-def]
    def run(table: pa.Table) -> pa.Table:
        """Executor: build and write one shard from all of its rows."""
        from georank.config import validate_config
        from georank.index import embeddings_matrix, write_shard

        cfg = validate_config(cfg_d)
        shard = int(table.column("shard")[0].as_py())
        entry = write_shard(
            shard=shard,
            n_shards=n_shards,
            ids=table.column("gallery_id").to_numpy(),
            vectors=embeddings_matrix(table.column("embedding"), dim),
            meta=table.select(S.SHARD_META.names),
            template=template_bc.value,
            root_uri=root,
            index_version=version,
            s3=cfg.s3,
        )
        return pa.Table.from_pylist([entry.__dict__], schema=S.SHARD_ENTRY)

    return run


def _train_sample(ok: DataFrame, cfg: GeorankConfig, n: int, dim: int) -> np.ndarray | None:
    from georank.index import IVF_TYPES, embeddings_matrix, train_size

    if cfg.index.type not in IVF_TYPES:
        return None
    t = train_size(cfg.index, n)
    frac = min(1.0, 1.5 * t / max(n, 1))
    rows = ok.select("embedding").sample(fraction=frac, seed=cfg.demo.seed).limit(t).toArrow()
    return embeddings_matrix(rows.column("embedding"), dim)


def run_build_index(
    spark: SparkSession,
    cfg: GeorankConfig,
    *,
    gallery_uri: str | None = None,
    mode: Literal["error", "overwrite"] = "error",
    gallery_version: str | None = None,
    run_date: dt.date | None = None,
    run_id: str = "",
) -> dict[str, Any]:
    """Embed the gallery, write the embeddings and errors tables, build and commit the index.

    ``gallery_uri`` defaults to ``tables.gallery``; ``mode="error"`` refuses when an index
    already exists at ``index.uri`` ("overwrite" commits a new version beside it). Returns the
    summary (counts add up: ``read == embedded + errors``). Runs on the driver.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from georank.index import (
        check_writable,
        empty_index,
        make_manifest,
        new_index_version,
        serialize,
        write_manifest,
        write_shard,
    )
    from georank.spark.executors import gpu_profile, on_executors, passthrough
    from georank.spark.progress import Progress

    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    run_date = run_date or dt.datetime.now(dt.UTC).date()
    gallery_uri = cfg.resolve(gallery_uri or cfg.tables.gallery)
    index_uri = cfg.resolve(cfg.index.uri)
    n_shards = cfg.index.shards
    check_writable(index_uri, cfg.s3, mode)
    # Transactions decided from the tables at the start: of two builds at once, the first to commit wins.
    errors_uri, embeddings_uri = cfg.resolve(cfg.tables.gallery_errors), cfg.resolve(cfg.tables.gallery_embeddings)
    errors_txn = write.begin(spark, errors_uri, f"georank-build-index:{run_date.isoformat()}")
    embeddings_txn = write.begin(spark, embeddings_uri, "georank-build-index")

    gallery, g_version = read_gallery(spark, gallery_uri, gallery_version=gallery_version)
    read = gallery.count()
    n_parts = max(spark.sparkContext.defaultParallelism, math.ceil(read / cfg.input.photos_per_partition))
    dup_count = F.when(F.col("gallery_id").isNull(), F.lit(1)).otherwise(F.count(F.lit(1)).over(Window.partitionBy("gallery_id")))
    counted = gallery.withColumn("_copies", dup_count)
    dups = counted.where("_copies > 1").select(
        "gallery_id", "uri", "lat_deg", "lon_deg",
        F.lit(None).cast("string").alias("description"),
        F.lit(None).cast("array<float>").alias("embedding"),
        F.lit(None).cast("string").alias("embed_version"),
        F.lit(None).cast("int").alias("shard"),
        F.lit("input").alias("error_stage"),
        F.format_string("gallery_id %d appears %d times in the gallery; expected unique ids", "gallery_id", "_copies").alias("error_reason"),
    )
    unique = counted.where("_copies = 1").drop("_copies").repartition(n_parts)
    prepared_schema = S.spark_schema(S.GALLERY_PREPARED)
    profile = gpu_profile(cfg)
    kwargs = {"profile": profile} if profile is not None else {}
    progress = Progress(spark, job="build_index", total=read, interval_s=cfg.input.progress_interval_s, unit="rows")
    prepared = unique.mapInArrow(_prepare(cfg.model_dump(), n_shards, progress.accumulators), prepared_schema, **kwargs)
    # the repeated ids count towards progress as they pass (no extra Spark job)
    dups = dups.mapInArrow(on_executors(cfg.model_dump(), passthrough, accelerator=False, progress=progress.accumulators), dups.schema)
    prepared = prepared.unionByName(dups).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with progress:  # a line every input.progress_interval_s while the gallery is embedded
            groups = prepared.groupBy("error_stage", "embed_version").agg(
                F.count(F.lit(1)).alias("n"), F.min(F.size("embedding")).alias("dim_min"), F.max(F.size("embedding")).alias("dim_max")
            ).collect()
        seconds["embed"] = time.monotonic() - t0
        by_stage: dict[str | None, int] = {}
        for r in groups:
            by_stage[r["error_stage"]] = by_stage.get(r["error_stage"], 0) + int(r["n"])
        embedded = int(by_stage.pop(None, 0))
        errors = int(sum(by_stage.values()))
        ok_groups = [r for r in groups if r["error_stage"] is None]
        if read != embedded + errors:
            raise RunError(f"gallery rows do not add up: read {read}, embedded {embedded} + errors {errors}")
        ok = prepared.where("error_stage IS NULL")
        bad = prepared.where("error_stage IS NOT NULL")

        if embedded == 0:  # before any write: a build that failed whole replaces nothing
            worst = sorted(by_stage.items(), key=lambda kv: -kv[1])[:1]
            raise GalleryIndexError(
                f"no gallery row could be embedded: expected at least one, got all {read} rows failing"
                + "".join(f" (most at stage {stage}: {n} rows)" for stage, n in worst) + "; nothing was written"
            )
        from georank.guards import check_error_fraction
        from georank.spark.guards import top_failure

        check_error_fraction(what=f"index build of {gallery_uri}", read=read, errors=errors,
                             max_fraction=cfg.write.max_error_fraction,
                             top=lambda: top_failure(prepared))  # before any write
        versions = [r["embed_version"] for r in ok_groups]
        if len(versions) != 1:
            raise GalleryIndexError(f"expected one embedder version across the gallery, got {sorted(versions)}")
        dim = int(ok_groups[0]["dim_max"])
        if int(ok_groups[0]["dim_min"]) != dim:
            raise GalleryIndexError(f"expected every embedding to have one dim, got {ok_groups[0]['dim_min']}..{dim}")
        t = time.monotonic()
        label = run_id or f"build_index-{index_uri}-{time.time_ns()}"
        write.commit(
            bad.select(
                F.col("gallery_id").cast("string").alias("photo_id"), "uri",
                F.col("error_stage").alias("stage"), F.col("error_reason").alias("reason"),
                F.lit(run_id).alias("run_id"), F.lit(run_date).cast("date").alias("run_date"),
            ),
            errors_uri, table="gallery_errors", run_date=run_date.isoformat(), mode="replace",
            txn=errors_txn, label=label, cfg=cfg,
        )
        write.commit(
            ok.select("gallery_id", "embedding", "lat_deg", "lon_deg", "embed_version"),
            embeddings_uri, table="gallery_embeddings", mode="overwrite", txn=embeddings_txn, label=label, cfg=cfg,
        )
        seconds["write_tables"] = time.monotonic() - t

        t = time.monotonic()
        template = serialize(empty_index(dim, cfg.index, _train_sample(ok, cfg, embedded, dim)))
        version = new_index_version()
        template_bc = spark.sparkContext.broadcast(template)
        rows = ok.select(
            "gallery_id", "embedding", "lat_deg", "lon_deg", "description", F.col("uri").alias("image_uri"), "shard"
        )
        built = rows.groupBy("shard").applyInArrow(
            _build_shard(cfg.model_dump(), template_bc, index_uri, version, n_shards, dim),
            S.spark_schema(S.SHARD_ENTRY),
        ).collect()
        from georank.index import ShardEntry

        entries = {r["shard"]: ShardEntry(**r.asDict()) for r in built}
        for s in range(n_shards):  # a shard no gallery row hashed to is written empty
            if s not in entries:
                entries[s] = write_shard(
                    shard=s, n_shards=n_shards, ids=np.zeros(0, np.int64), vectors=np.zeros((0, dim), np.float32),
                    meta=S.SHARD_META.empty_table(), template=template, root_uri=index_uri, index_version=version, s3=cfg.s3,
                )
        manifest = make_manifest(
            index_version=version, cfg=cfg.index, dim=dim, entries=entries.values(), embed_version=versions[0],
            gallery_table=gallery_uri, gallery_table_version=g_version,
        )
        if manifest.ntotal != embedded:
            raise RunError(f"index holds {manifest.ntotal} vectors, expected the {embedded} embedded rows")
        write_manifest(manifest, index_uri, cfg.s3)
        template_bc.destroy()
        seconds["build_index"] = time.monotonic() - t
    finally:
        prepared.unpersist()
    return {
        "gallery": gallery_uri,
        "gallery_version": g_version,
        "read": read,
        "embedded": embedded,
        "errors": errors,
        "errors_by_stage": {str(k): int(v) for k, v in sorted(by_stage.items())},
        "index_uri": index_uri,
        "index_version": manifest.index_version,
        "index_type": manifest.index_type,
        "shards": manifest.n_shards,
        "ntotal": manifest.ntotal,
        "dim": dim,
        "embed_version": manifest.embed_version,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "progress": progress.snapshot(),  # the progress lines' last counts (done, total, errors, rate)
    }


__all__ = ["read_gallery", "run_build_index"]
