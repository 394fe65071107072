"""The geotag job's input on the driver: the night's photos as a PHOTOS frame, and the split
of unusable ids (null, repeated) into error rows, without moving the photos' bytes.

Runs on the driver (builds lazy DataFrames); nothing here ships to executors.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

from georank import schema as S
from georank.config import GeorankConfig
from georank.errors import InputError
from georank.io import list_images, photo_ids
from georank.uris import local_of

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession


def _is_table(uri: str) -> Literal["delta", "parquet", ""]:
    if uri.startswith(("s3://", "s3a://")):
        return ""  # an s3:// prefix of images; tables on S3 are given as s3a://
    p = local_of(uri)
    if (p / "_delta_log").is_dir():
        return "delta"
    if p.suffix == ".parquet" or (p.is_dir() and any(p.glob("*.parquet"))):
        return "parquet"
    return ""


def read_photos(spark: "SparkSession", uri: str, cfg: GeorankConfig) -> "DataFrame":
    """The night's photos as a PHOTOS frame (photo_id, uri, image_bytes) from a Delta or Parquet
    table, a local folder of images or an ``s3://`` prefix; a local one as a path or a ``file:``
    URI (read as its path, :meth:`GeorankConfig.resolve`)."""
    from pyspark.sql import functions as F

    uri = cfg.resolve(uri)
    if uri.startswith("s3a://") or _is_table(uri):
        fmt = "delta" if (uri.startswith("s3a://") or _is_table(uri) == "delta") else "parquet"
        df = spark.read.format(fmt).load(uri)
        if "photo_id" not in df.columns or not ({"uri", "image_bytes"} & set(df.columns)):
            raise InputError(
                f"photos table {uri}: expected columns photo_id and uri or image_bytes, got {df.columns}"
            )
        for col, typ in (("uri", "string"), ("image_bytes", "binary")):
            if col not in df.columns:
                df = df.withColumn(col, F.lit(None).cast(typ))
        return df.select(F.col("photo_id").cast("string"), "uri", "image_bytes")
    if not uri.startswith(("s3://", "s3a://")) and not local_of(uri).is_dir():
        raise InputError(f"photos not found: expected a Delta/Parquet table, a folder of images or an s3:// prefix at {uri}")
    uris = list_images(uri, cfg.s3)
    rows = [(pid, u, None) for pid, u in zip(photo_ids(uris, uri), uris)]
    return spark.createDataFrame(rows, S.spark_schema(S.PHOTOS))


def split_bad_ids(photos: "DataFrame", cfg: GeorankConfig) -> tuple["DataFrame", "DataFrame"]:
    """(usable photos, input error rows): a null id is an error row; a repeated id keeps its
    first row (by uri) and turns the others into error rows naming the kept one.

    Only ids, uris and a row number (``_row``: pass ``photos`` with it, cached, so that both
    sides see the same numbers; added here otherwise) cross the window's shuffle; the photos'
    inline bytes stay where they were read and lose the rejected rows by a broadcast anti-join,
    so the bytes are shuffled once, by the repartition into tasks (:func:`results_frame`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = photos if "_row" in photos.columns else photos.withColumn("_row", F.monotonically_increasing_id())
    w = Window.partitionBy("photo_id").orderBy(F.col("uri").asc_nulls_last(), F.col("_row"))
    ranked = (
        rows.select("photo_id", "uri", "_row")
        .withColumn("_n", F.row_number().over(w))
        .withColumn("_first_uri", F.first("uri").over(w))
    )
    null_id = F.col("photo_id").isNull() | (F.trim(F.col("photo_id")) == "")
    if cfg.input.duplicate_ids == "fail":
        dups = ranked.where(~null_id & (F.col("_n") > 1)).select("photo_id").limit(5).collect()
        if dups:
            raise InputError(
                f"photo ids repeat in the input (input.duplicate_ids=fail): expected unique ids, got repeats of "
                f"{[r.photo_id for r in dups]}"
            )
    rejected = ranked.where(null_id | (F.col("_n") > 1))
    errors = rejected.select(
        F.when(null_id, F.lit(None)).otherwise(F.col("photo_id")).alias("photo_id"),
        "uri",
        F.lit("input").alias("error_stage"),
        F.when(null_id, F.lit("the input row has no photo id"))
        .otherwise(
            F.concat(
                F.lit("duplicate photo id: the row with uri "),
                F.coalesce(F.col("_first_uri"), F.lit("(inline bytes)")),
                F.lit(" is processed instead"),
            )
        )
        .alias("error_reason"),
    )
    good = rows.join(F.broadcast(rejected.select("_row")), "_row", "left_anti").select("photo_id", "uri", "image_bytes")
    return good, errors


def as_error_results(df: "DataFrame", run_id: str, run_date: dt.date) -> "DataFrame":
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
