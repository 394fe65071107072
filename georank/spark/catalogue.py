"""A catalogue night's photos: the catalogue anti-joined with the results table, in Spark.

Runs on the driver (builds lazy DataFrames; two small aggregations are collected: the backlog's
counts, two rows at most). Neither the catalogue nor the results table is ever collected or
broadcast: the results are aggregated per photo (one shuffle), the catalogue's ids, order and
location columns joined to that (a sort-merge join), and only the night's ids (at most the budget)
meet the catalogue's image columns again.

A photo is due tonight when, in the results table outside tonight's date (a rerun of a date
redoes that date's selection, since its commit replaces the date's rows):

- it has no prediction from the current versions (:class:`georank.catalogue.Versions`), and
- no error row from them that is permanent (not :data:`georank.catalogue.TRANSIENT_REASON`), and
- fewer than ``input.catalogue.max_attempts`` nights of transient error rows from them;

and either its location is null and it was never predicted ("untagged", tier 0), or, with
``regeotag: older``, its newest prediction came from older versions and its location is null or
was set by georank (``source_column = 'georank'``; tier 1). Oldest first by ``order_column``,
tier 0 before tier 1, at most ``max_photos_per_night``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from georank.catalogue import TRANSIENT_REASON, VERSION_COLUMNS, Backlog, Versions
from georank.config import GeorankConfig
from georank.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

GEORANK_SOURCE = "georank"  # the value jobs/publish.py writes in the catalogue's source column

_TABLE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*){0,2}$")


@dataclass(frozen=True)
class Night:
    """A catalogue night: its photos (a lazy PHOTOS frame) and its backlog figures."""

    uri: str
    photos: "DataFrame"
    backlog: Backlog
    versions: Versions
    cached: tuple["DataFrame", ...] = ()  # frames the selection cached: unpersist once the photos are read

    def release(self) -> None:
        """Unpersist what the selection cached (the night's photos must have been read by then)."""
        for frame in self.cached:
            frame.unpersist()

    def summary(self) -> dict[str, object]:
        """The night's part of the run summary: the catalogue, its backlog and the versions."""
        return {"uri": self.uri, **self.backlog.as_dict(), "backlog": self.backlog.describe(),
                "versions": self.versions.as_dict()}


def load_table(spark: "SparkSession", uri: str) -> "DataFrame":
    """A Delta table (path or ``s3a://``), a Parquet table, or a table name of the session's catalog."""
    from georank.spark.photos import _is_table

    if uri.startswith("s3a://"):
        return spark.read.format("delta").load(uri)
    kind = _is_table(uri)
    if kind:
        return spark.read.format(kind).load(uri)
    if _TABLE_NAME.match(uri) and spark.catalog.tableExists(uri):
        return spark.table(uri)
    raise InputError(
        f"catalogue not found: expected a Delta or Parquet table (a path or s3a:// URI) or a table name of the "
        f"session's catalog at {uri}, got none"
    )


def read_catalogue(spark: "SparkSession", uri: str, cfg: GeorankConfig) -> "DataFrame":
    """The catalogue as ``photo_id, uri, image_bytes, _located, _order, _by_georank`` (lazily); a
    column named in ``input.catalogue`` that the table lacks is an InputError listing its columns."""
    from pyspark.sql import functions as F

    c = cfg.input.catalogue
    df = load_table(spark, uri)
    named = {"id_column": c.id_column, "image_uri_column": c.image_uri_column, "image_bytes_column": c.image_bytes_column,
             "lat_column": c.lat_column, "lon_column": c.lon_column, "order_column": c.order_column}
    missing = [f"input.catalogue.{k}={v}" for k, v in named.items() if v is not None and v not in df.columns]
    if missing:
        raise InputError(f"catalogue {uri}: expected the columns {', '.join(missing)}, got {df.columns}")
    by_georank = (F.col(c.source_column) == F.lit(GEORANK_SOURCE)) if c.source_column in df.columns else F.lit(False)
    return df.select(
        F.col(c.id_column).cast("string").alias("photo_id"),
        (F.col(c.image_uri_column).cast("string") if c.image_uri_column else F.lit(None).cast("string")).alias("uri"),
        (F.col(c.image_bytes_column).cast("binary") if c.image_bytes_column else F.lit(None).cast("binary"))
        .alias("image_bytes"),
        (F.col(c.lat_column).isNotNull() & F.col(c.lon_column).isNotNull()).alias("_located"),
        F.col(c.order_column or c.id_column).alias("_order"),
        F.coalesce(by_georank, F.lit(False)).alias("_by_georank"),
    )


def _is_current(versions: Versions) -> "Column":
    from pyspark.sql import functions as F

    cond = F.lit(True)
    for col in VERSION_COLUMNS:
        cond = cond & F.coalesce(F.col(col) == F.lit(getattr(versions, col)), F.lit(False))
    return cond


def transient_error() -> "Column":
    """True on an error row whose reason is transient (:data:`georank.catalogue.TRANSIENT_REASON`: the
    run's surroundings, not the photo); False on any other row, a prediction included."""
    from pyspark.sql import functions as F

    return F.col("error_stage").isNotNull() & F.coalesce(F.col("error_reason").rlike(TRANSIENT_REASON), F.lit(False))


def photo_state(results: "DataFrame", versions: Versions, run_date: dt.date) -> "DataFrame":
    """Per photo id of the results table (tonight's date left out): ``_current`` (a prediction from
    ``versions``), ``_predicted`` (a prediction from any), ``_permanent`` (a non-transient error from
    ``versions``), ``_attempts`` (distinct nights with a transient error from ``versions``). One shuffle."""
    from pyspark.sql import functions as F

    err = F.col("error_stage").isNotNull()
    current = _is_current(versions)
    transient = transient_error()
    return (
        results.where(F.col("photo_id").isNotNull() & (F.col("run_date") != F.lit(run_date)))
        .groupBy("photo_id")
        .agg(
            F.max(~err & current).alias("_current"),
            F.max(~err).alias("_predicted"),
            F.max(err & current & ~transient).alias("_permanent"),
            # nights, not rows: a repeated id or an input error row must not use up attempts
            F.countDistinct(F.when(err & current & transient, F.col("run_date"))).alias("_attempts"),
        )
    )


def due(catalogue: "DataFrame", state: "DataFrame | None", cfg: GeorankConfig) -> "DataFrame":
    """The catalogue's photos due tonight as ``photo_id, _order, _tier`` (0 untagged, 1 older
    versions), from :func:`read_catalogue` rows and :func:`photo_state` (None: no results table yet)."""
    from pyspark.sql import functions as F

    c = cfg.input.catalogue
    rows = catalogue.select("photo_id", "_order", "_located", "_by_georank").where(F.col("photo_id").isNotNull())
    if state is None:
        return rows.where(~F.col("_located")).select("photo_id", "_order", F.lit(0).alias("_tier"))
    # both sides are as big as the catalogue and the results: a sort-merge join, never a broadcast
    joined = rows.join(state.hint("shuffle_merge"), "photo_id", "left")
    predicted = F.coalesce(F.col("_predicted"), F.lit(False))
    blocked = (F.coalesce(F.col("_current"), F.lit(False)) | F.coalesce(F.col("_permanent"), F.lit(False))
               | (F.coalesce(F.col("_attempts"), F.lit(0)) >= F.lit(c.max_attempts)))
    tier = F.when(~F.col("_located") & ~predicted, F.lit(0))
    if c.regeotag == "older":
        tier = tier.when(predicted & (~F.col("_located") | F.col("_by_georank")), F.lit(1))
    return joined.where(~blocked).select("photo_id", "_order", tier.alias("_tier")).where(F.col("_tier").isNotNull())


def prior_results(spark: "SparkSession", cfg: GeorankConfig) -> "DataFrame | None":
    """The results table, or None before its first commit."""
    from georank.write import is_delta

    uri = cfg.resolve(cfg.tables.results)
    return spark.read.format("delta").load(uri) if is_delta(spark, uri) else None


def select_night(
    spark: "SparkSession", cfg: GeorankConfig, *, catalogue_uri: str, versions: Versions, run_date: dt.date
) -> Night:
    """On the driver: tonight's photos of the catalogue at ``catalogue_uri`` (a lazy PHOTOS frame)
    and the backlog. Collects only the per-tier counts."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    c = cfg.input.catalogue
    uri = cfg.resolve(catalogue_uri) if "/" in catalogue_uri or ":" in catalogue_uri else catalogue_uri
    catalogue = read_catalogue(spark, uri, cfg)
    results = prior_results(spark, cfg)
    # cached (ids, order, tier: never the images): counted here, ordered and joined below
    todo = due(catalogue, None if results is None else photo_state(results, versions, run_date), cfg).persist(
        StorageLevel.MEMORY_AND_DISK)
    counts = {int(r["_tier"]): int(r["count"]) for r in todo.groupBy("_tier").count().collect()}
    untagged, older = counts.get(0, 0), counts.get(1, 0)
    budget = c.max_photos_per_night
    if budget is not None and untagged + older > budget:
        # the budget's ids only cross to one partition (ids and order; never the images)
        oldest = todo.orderBy("_tier", F.col("_order").asc_nulls_last(), "photo_id").limit(budget)
        ids = oldest.select("photo_id")  # at most the budget: Spark may broadcast it, the small side
    else:
        ids = todo.select("photo_id").hint("shuffle_merge")  # as big as the backlog: never broadcast
    taken = min(untagged + older, budget) if budget is not None else untagged + older
    photos = catalogue.join(ids, "photo_id", "left_semi").select("photo_id", "uri", "image_bytes")
    backlog = Backlog(untagged=untagged, older=older, taken=taken, budget=budget)
    log.info("catalogue %s: %s", uri, backlog.describe())
    return Night(uri=uri, photos=photos, backlog=backlog, versions=versions, cached=(todo,))


def idle_summary(cfg: GeorankConfig, night: Night, *, run_date: dt.date) -> dict[str, object]:
    """The summary of a catalogue night with nothing to do: nothing was asked, so nothing is
    committed and the run succeeds (unlike an empty ``--photos`` input, which fails its guard)."""
    return {
        "read": 0, "predicted": 0, "errors": 0,
        "nothing_to_do": (f"catalogue {night.uri}: no photo is due tonight (every photo without a location has a "
                          "prediction or a lasting error from the current versions); nothing was committed"),
        "catalogue": night.summary(),
        "run_date": run_date.isoformat(),
        "table": cfg.resolve(cfg.tables.results),
        "table_version": None,
    }


def with_versions(results: "DataFrame", versions: Versions) -> "DataFrame":
    """RESULTS rows whose error rows carry ``versions`` (a run's error rows hold no versions of
    their own; a catalogue night's are those of the run, so a later night knows which versions
    failed on the photo). Prediction rows are left as they are."""
    from pyspark.sql import functions as F

    err = F.col("error_stage").isNotNull()
    return results.select(*[
        F.when(err, F.coalesce(F.col(n), F.lit(getattr(versions, n)))).otherwise(F.col(n)).alias(n)
        if n in VERSION_COLUMNS else F.col(n)
        for n in results.columns
    ])


__all__ = ["GEORANK_SOURCE", "Night", "due", "idle_summary", "load_table", "photo_state", "prior_results", "read_catalogue", "transient_error",
           "select_night", "with_versions"]
