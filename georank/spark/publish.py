"""Hand the answers back (driver side): the latest predictions into the catalogue's location columns.

    latest predictions (results table, georank.results.latest_sql: one per photo, the newest)
      -> thresholds     confidence >= publish.min_confidence, spread_km <= publish.max_spread_km
      -> ONE Delta MERGE into the catalogue (georank.write.merge), update only, where AT MERGE TIME
                        the row's location is null (latitude and longitude both null), or it is
                        georank's (source column = 'georank') from an older prediction (earlier
                        run_date, or the same date and an earlier run id)

A location a camera or a person set (any non-null location whose source is not 'georank') is never
touched, even one set after the geotag run: the condition is evaluated by the MERGE itself. A rerun
finds nothing to change and commits nothing (no new catalogue version). The counts are taken from a
snapshot of the catalogue just before the MERGE; ``published`` is what the MERGE updated (its
``numTargetRowsUpdated``), and a row located between the snapshot and the MERGE is counted in
``already_located``. Counts are of catalogue rows matched by a latest prediction (plus
``not_in_catalogue``): with unique catalogue ids they add up to ``latest_predictions``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from georank import results, write
from georank.config import GeorankConfig
from georank.errors import ConfigError, InputError, SchemaError
from georank.spark.catalogue import GEORANK_SOURCE

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SOURCE_VALUE = GEORANK_SOURCE  # the source column's value on every location georank publishes (one definition)
# Provenance columns: config key -> (SQL type of the column, value from the source row s)
_SOURCE = ("STRING", f"'{SOURCE_VALUE}'")
_PROVENANCE = {
    "confidence_column": ("DOUBLE", "s.confidence"),
    "spread_column": ("DOUBLE", "s.spread_km"),
    "run_id_column": ("STRING", "s.run_id"),
    "run_date_column": ("DATE", "s.run_date"),
    "versions_column": (
        "STRUCT<model_version: STRING, adapter_version: STRING, embed_version: STRING, index_version: STRING>",
        "named_struct('model_version', s.model_version, 'adapter_version', s.adapter_version, "
        "'embed_version', s.embed_version, 'index_version', s.index_version)",
    ),
}
CLASSES = ("not_in_catalogue", "already_located", "already_published", "below_threshold", "published")


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@dataclass(frozen=True)
class Columns:
    """The catalogue's column names the publish reads and writes."""

    id: str
    lat: str
    lon: str
    source: str
    provenance: dict[str, str]  # publish.* key (confidence_column, ...) -> column name

    @property
    def run_date(self) -> str:
        return self.provenance["run_date_column"]

    @property
    def run_id(self) -> str:
        return self.provenance["run_id_column"]

    def written(self) -> dict[str, tuple[str, str]]:
        """Every column the MERGE sets besides the location: name -> (SQL type, value from ``s``)."""
        return {self.source: _SOURCE, **{self.provenance[k]: v for k, v in _PROVENANCE.items()}}


def catalogue_columns(cfg: GeorankConfig) -> Columns:
    """The catalogue's id, location and source columns from ``input.catalogue.*`` (shared with the
    geotag job's catalogue nights); the provenance columns from ``publish.*``."""
    c = cfg.input.catalogue
    if not c.source_column:
        raise ConfigError("publish: expected input.catalogue.source_column (the column that says who set a location; "
                          "publish writes 'georank' there), got null")
    provenance = {key: getattr(cfg.publish, key) for key in _PROVENANCE}
    every = [c.id_column, c.lat_column, c.lon_column, c.source_column, *provenance.values()]
    if len({n.lower() for n in every}) != len(every):
        raise ConfigError("publish: expected distinct catalogue column names (input.catalogue.id_column, lat_column, "
                          f"lon_column, source_column and publish.*_column), got {every}")
    return Columns(c.id_column, c.lat_column, c.lon_column, c.source_column, provenance)


def catalogue_uri(cfg: GeorankConfig, given: str | None) -> str:
    """``--catalogue``, else ``input.catalogue.uri`` when the config has it; resolved like every config URI."""
    uri = given or cfg.input.catalogue.uri
    if not uri:
        raise ConfigError("publish: expected --catalogue URI (a Delta table) or input.catalogue.uri, got neither")
    return cfg.resolve(str(uri))


def _check_catalogue(spark: "SparkSession", uri: str, cols: Columns) -> "DataFrame":
    if not write.is_delta(spark, uri):
        raise InputError(f"catalogue {uri}: expected a Delta table (publish MERGEs into it), got none there")
    catalogue = spark.read.format("delta").load(uri)
    have = {c.lower() for c in catalogue.columns}
    missing_key = [c for c in (cols.id, cols.lat, cols.lon) if c.lower() not in have]
    if missing_key:
        raise SchemaError(f"catalogue {uri}: expected the id and location columns {[cols.id, cols.lat, cols.lon]}, "
                          f"missing {missing_key} (input.catalogue.id_column, lat_column, lon_column); "
                          f"got columns {catalogue.columns}")
    written = cols.written()
    missing = [(name, sql_type) for name, (sql_type, _) in written.items() if name.lower() not in have]
    if missing:
        ddl = ", ".join(f"{_q(n)} {t}" for n, t in missing)
        raise SchemaError(
            f"catalogue {uri}: expected the source and provenance columns {list(written)}, missing "
            f"{[n for n, _ in missing]}; add them once with: ALTER TABLE delta.`{uri}` ADD COLUMNS ({ddl}) "
            "(or name existing ones with input.catalogue.source_column and publish.*_column)"
        )
    return catalogue


def _thresholds(min_confidence: float, max_spread_km: float | None) -> str:
    cond = f"s.confidence IS NOT NULL AND s.confidence >= {float(min_confidence)!r}"
    cond += " AND s.lat_deg IS NOT NULL AND s.lon_deg IS NOT NULL"
    if max_spread_km is not None:
        cond += f" AND s.spread_km IS NOT NULL AND s.spread_km <= {float(max_spread_km)!r}"
    return cond


def _conditions(cols: Columns) -> tuple[str, str, str]:
    """(the MERGE's ``on``, "the row may take a georank answer", "s is newer than t's georank answer")."""
    on = f"t.{_q(cols.id)} = s.photo_id"
    newer = (f"(t.{_q(cols.run_date)} IS NULL OR s.run_date > t.{_q(cols.run_date)} OR "
             f"(s.run_date = t.{_q(cols.run_date)} AND (t.{_q(cols.run_id)} IS NULL OR s.run_id > t.{_q(cols.run_id)})))")
    unlocated = f"(t.{_q(cols.lat)} IS NULL AND t.{_q(cols.lon)} IS NULL)"
    georank = f"(t.{_q(cols.source)} = '{SOURCE_VALUE}')"
    return on, unlocated, f"({georank} AND {newer})"


def run_publish(
    spark: "SparkSession",
    cfg: GeorankConfig,
    *,
    catalogue: str,
    run_id: str,
    min_confidence: float | None = None,
    max_spread_km: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Publish the latest predictions of ``tables.results`` into the Delta catalogue at
    ``catalogue`` (a resolved URI) in ONE MERGE labelled ``run_id``; returns the summary's counts.

    ``min_confidence`` / ``max_spread_km``: None takes ``publish.*`` from the config.
    ``dry_run``: count only, write nothing. Runs on the driver; the joins run on Spark (the
    catalogue is never collected)."""
    from pyspark.sql import functions as F

    min_conf = cfg.publish.min_confidence if min_confidence is None else min_confidence
    max_spread = cfg.publish.max_spread_km if max_spread_km is None else max_spread_km
    if not 0.0 <= min_conf <= 1.0:
        raise ConfigError(f"publish: expected a minimum confidence in [0, 1], got {min_conf!r}")
    if max_spread is not None and max_spread < 0:
        raise ConfigError(f"publish: expected a maximum spread_km >= 0 or none, got {max_spread!r}")
    cols = catalogue_columns(cfg)
    results_uri = cfg.resolve(cfg.tables.results)
    target = _check_catalogue(spark, catalogue, cols)
    if not write.is_delta(spark, results_uri):
        raise InputError(f"results table {results_uri}: expected a Delta table written by jobs/geotag.py, got none")

    id_type = next(f.dataType for f in target.schema.fields if f.name.lower() == cols.id.lower())
    # The results as they are now, pinned: the plan's counts and the MERGE see one version, even if a
    # night commits meanwhile, and the latest answer per photo is ranked once for both (persisted).
    version = write.table_version(spark, results_uri)
    src = "delta.`" + results_uri.replace("`", "``") + "`" + f" VERSION AS OF {int(version or 0)}"
    summary_version = {"results_version": version}
    latest = spark.sql(results.latest_sql(src))
    # The catalogue's id type (a numeric id's photo_id is its text; one that is no number matches nothing).
    latest = latest.withColumn("photo_id", F.col("photo_id").try_cast(id_type)).persist()
    try:
        return _publish(latest, target, cfg, cols, catalogue=catalogue, results_uri=results_uri, run_id=run_id,
                        min_conf=min_conf, max_spread=max_spread, dry_run=dry_run) | summary_version
    finally:
        latest.unpersist()


def _publish(latest: "DataFrame", target: "DataFrame", cfg: GeorankConfig, cols: Columns, *, catalogue: str,
             results_uri: str, run_id: str, min_conf: float, max_spread: float | None, dry_run: bool) -> dict[str, Any]:
    """The plan's counts, then (unless ``dry_run``) the MERGE, from the persisted latest predictions."""
    from pyspark.sql import functions as F

    on, unlocated, newer_georank = _conditions(cols)
    passes = _thresholds(min_conf, max_spread)
    may_take = f"coalesce({unlocated} OR {newer_georank}, false)"

    # The plan, on a snapshot of the catalogue (the MERGE re-evaluates may_take itself).
    located = f"NOT {unlocated} AND coalesce(t.{_q(cols.source)} <> '{SOURCE_VALUE}', true)"
    cls = (f"CASE WHEN t.{_q(cols.id)} IS NULL THEN 'not_in_catalogue' "
           f"WHEN {located} THEN 'already_located' "
           f"WHEN NOT {may_take} THEN 'already_published' "
           f"WHEN NOT ({passes}) THEN 'below_threshold' ELSE 'published' END")
    snapshot = target.select(cols.id, cols.lat, cols.lon, cols.source, cols.run_date, cols.run_id)
    joined = latest.alias("s").join(snapshot.alias("t"), F.expr(on), "left")
    counts = {c: 0 for c in CLASSES}
    for row in joined.select(F.expr(cls).alias("c")).groupBy("c").count().collect():
        counts[row["c"]] = int(row["count"])
    planned = counts["published"]
    summary: dict[str, Any] = {
        "catalogue": catalogue,
        "results": results_uri,
        "min_confidence": min_conf,
        "max_spread_km": max_spread,
        "dry_run": dry_run,
        "latest_predictions": sum(counts.values()),
        **counts,
    }
    if dry_run:
        summary.update(published=0, would_publish=planned, catalogue_version=None)
        log.info("publish dry run: %d of %d latest predictions would be published into %s", planned,
                 summary["latest_predictions"], catalogue)
        return summary

    source = latest.alias("s").where(F.expr(passes))
    set_columns = {_q(cols.lat): "s.lat_deg", _q(cols.lon): "s.lon_deg"}
    set_columns.update({_q(name): value for name, (_, value) in cols.written().items()})
    merged = write.merge(source, catalogue, on=on, when=may_take, set_columns=set_columns, label=run_id, cfg=cfg)
    summary.update(published=merged.updated, catalogue_version=merged.version)
    # Rows the plan counted but the MERGE found located (a camera or a person was faster) are left alone.
    summary["already_located"] = counts["already_located"] + max(planned - merged.updated, 0)
    log.info("published %d predictions into %s (version %s)", merged.updated, catalogue, merged.version)
    return summary
