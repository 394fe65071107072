"""The one Spark session factory (driver side).

Points ``spark.jars`` at the project's own jar folder (filled by
``scripts/setup.sh``), enables Delta, and applies ``spark.conf`` from the config.
Nothing resolves jars at run time (no ``spark.jars.packages``); a missing jar
folder stops the job at start-up saying which command makes it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from georank.config import GeorankConfig
from georank.errors import SetupError

log = logging.getLogger(__name__)

SETUP_HINT = "run ./scripts/setup.sh (it resolves them from Maven Central with mvn)"


def _uses_s3a(cfg: GeorankConfig) -> bool:
    """True when a table URI in the config is ``s3a://`` (then the S3A jars are needed)."""
    return any(isinstance(u, str) and u.startswith("s3a://") for u in cfg.tables.model_dump().values())


def jar_paths(cfg: GeorankConfig) -> list[str]:
    """The jars the session needs: Delta always, S3A when a table URI is ``s3a://``."""
    dirs = [("Delta", cfg.resolve(cfg.spark.jars_dir), SETUP_HINT)]
    if _uses_s3a(cfg):
        dirs.append(("S3A", cfg.resolve(cfg.spark.s3a_jars_dir), "run ./scripts/setup.sh --s3a"))
    jars: list[str] = []
    for what, d, hint in dirs:
        folder = Path(d)
        found = sorted(str(p) for p in folder.glob("*.jar")) if (folder / ".complete").exists() else []
        if not found:
            raise SetupError(f"{what} jars not found in {folder}: expected the jar folder made by setup; {hint}")
        jars.extend(found)
    return jars


def spark_conf(cfg: GeorankConfig) -> dict[str, str]:
    """Every setting the session gets, as plain strings (also used by spark-submit.sh tests)."""
    conf = {
        "spark.app.name": cfg.spark.app_name,
        "spark.jars": ",".join(jar_paths(cfg)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.python.worker.reuse": "true",  # models are cached per Python worker
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
    }
    if _uses_s3a(cfg):
        if cfg.s3.endpoint_url:
            conf["spark.hadoop.fs.s3a.endpoint"] = cfg.s3.endpoint_url
        conf["spark.hadoop.fs.s3a.path.style.access"] = str(cfg.s3.path_style).lower()
        conf["spark.hadoop.fs.s3a.endpoint.region"] = cfg.s3.region
        # Credentials: the default AWS chain (env, profile, instance role); never in config.
    if cfg.spark.gpu.enabled:
        # Executors offer GPUs; the accelerator stage's ResourceProfile asks each task for one.
        # On standalone the worker's own discovery (spark.worker.resource.gpu.*) assigns them.
        conf["spark.executor.resource.gpu.amount"] = str(cfg.spark.gpu.executor_amount)
        conf["spark.executor.resource.gpu.discoveryScript"] = cfg.resolve(cfg.spark.gpu.discovery_script)
    conf.update(cfg.spark.conf)
    return conf


def get_spark(cfg: GeorankConfig):  # type: ignore[no-untyped-def]
    """The SparkSession for ``cfg`` (reused if one is active).

    Under ``spark-submit`` the master, jars and ``--conf`` settings given on the command line win; run
    directly (tests, notebooks) the config's ``spark.master`` is used.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Under spark-submit: connect to its JVM first, or SparkConf() below is an empty
        # Python-side dict and the config's master would silently replace --master.
        SparkContext._ensure_initialized()  # type: ignore[attr-defined]
    submitted = SparkConf()  # holds what spark-submit set (spark.master, spark.jars)
    builder = SparkSession.builder
    for key, value in spark_conf(cfg).items():
        if submitted.contains(key):  # spark-submit's --conf/--jars/--name win over the config
            continue
        builder = builder.config(key, value)
    if not submitted.contains("spark.master"):
        builder = builder.master(cfg.spark.master)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors use the same interpreter
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("GEORANK_SPARK_LOG_LEVEL", "WARN"))
    log.info("spark session on %s", spark.sparkContext.master)
    return spark
