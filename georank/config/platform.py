"""Config sections of the platform: Spark, tables, the commit, S3."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from georank.config.base import _Section


class GpuConfig(_Section):
    """How GPU stages ask Spark for accelerators (stage-level resource profile)."""

    enabled: bool = False  # ask for GPUs in the accelerator stage's ResourceProfile
    executor_amount: int = Field(1, ge=1)  # spark.executor.resource.gpu.amount
    task_amount: float = Field(1.0, gt=0, le=1)  # GPUs per task (1.0 = one task per GPU)
    discovery_script: str = "scripts/gpu_discovery.sh"  # shipped: pyspark's wheel has none


class SparkConfig(_Section):
    """The Spark session the job builds; ``master`` is overridden by spark-submit --master."""

    app_name: str = "georank"  # Spark application name (UI, event log)
    master: str = "local[*]"  # Spark master URL; spark-submit --master overrides it
    jars_dir: str = "jars/delta"  # filled by scripts/setup.sh (mvn dependency:copy-dependencies)
    s3a_jars_dir: str = "jars/s3a"  # only needed when a table URI is s3a://
    conf: dict[str, str] = Field(default_factory=dict)  # extra spark.* settings, verbatim
    gpu: GpuConfig = Field(default_factory=GpuConfig)


class TablesConfig(_Section):
    """Output and reference tables, each a URI (local path, file://, s3a://)."""

    # The nightly table: one row per photo per run date (a prediction, or an error with its stage
    # and reason), partitioned by run_date; a run replaces its date in ONE Delta commit.
    results: str = "warehouse/results"
    # When set, the job declares the views <views_schema>.predictions, <views_schema>.errors and
    # <views_schema>.predictions_latest over the results table in the session's catalog (Hive metastore or Unity Catalog); null: no views.
    views_schema: str | None = None
    gallery: str = "warehouse/gallery"  # the geotagged gallery table (Delta or Parquet)
    gallery_embeddings: str = "warehouse/gallery_embeddings"  # the index build's embeddings of the gallery (Delta)
    gallery_errors: str = "warehouse/gallery_errors"  # gallery rows the index build could not use, with reasons (Delta, by run_date)
    eval_results: str = "warehouse/eval_results"  # evaluate job: accuracy per run, benchmark, method and radius
    # One row per run of every job (georank.runs: status and reason, counts, seconds, versions), appended
    # when the run ends, failed runs included; null: no runs table.
    runs: str | None = "warehouse/runs"


class WriteConfig(_Section):
    """How a run stages its results and commits them (georank.spark.commit)."""

    # A staging folder left by a crashed run is removed by a later run's start only when the run
    # id's own start time is older than this AND its lease is stale (file times are never used).
    staging_ttl_hours: float = Field(6.0, ge=0)
    lease_refresh_s: float = Field(30.0, gt=0)  # the running driver rewrites its staging lease this often
    lease_timeout_s: float = Field(600.0, gt=0)  # a lease not rewritten for this long belongs to no live run
    # Guards before every commit (georank.guards): a run whose photos failed more than this
    # fraction (errors / read, strictly above) fails and commits nothing; 1.0 turns it off.
    max_error_fraction: float = Field(0.5, ge=0, le=1)
    # Per-stage circuit breaker on executors (georank.isolation.Breaker): this many photos in a
    # row in one task failing with a run-level cause (access denied, credentials, unreachable
    # endpoint, CUDA errors) stop the run with that cause instead of one error row per photo.
    breaker_consecutive: int = Field(8, ge=1)
    # The table's commit lock (georank.storage.lock), held around a Delta commit and its history
    # check so that two drivers never commit to one table at once: Delta 4.4.0's default log stores
    # keep writers apart within ONE JVM only (s3a: S3SingleDriverLogStore; local: HDFSLogStore).
    # auto: on for every table unless spark.conf names a multi-driver log store for its scheme
    # (spark.delta.logStore.<scheme>.impl = io.delta.storage.S3DynamoDBLogStore); off: no lock.
    commit_lock: Literal["auto", "on", "off"] = "auto"
    commit_lock_ttl_s: float = Field(60.0, gt=2)  # a lock not renewed for this long (S3 server's clock) may be broken; renewed every ttl/3
    commit_lock_wait_s: float = Field(900.0, ge=0)  # a driver waits this long for another's commit, then fails naming the holder


class S3Config(_Section):
    """S3 access for s3:// inputs and artifacts (boto3). Credentials come from the
    standard AWS chain (env, profile, instance role), never from this file."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for an S3-protocol server
    region: str = "us-east-1"  # S3 region (signing)
    path_style: bool = False  # path-style addressing (needed by most S3-protocol servers)


