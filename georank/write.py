"""Write stage (driver side): Delta tables created from the schema module, runs replaced atomically.

- :func:`ensure_table` creates a table once with its declared columns, column
  comments, partitioning and documented table properties.
- :func:`write_partition` writes rows for one partition value (``run_date``):
  ``mode="replace"`` swaps that date's rows in ONE Delta commit (``replaceWhere``),
  so a rerun of the same night never duplicates and a crash before the commit
  leaves the previous state; ``mode="error"`` refuses when the date already has
  rows; ``mode="append"`` appends. An optional Delta transaction id makes the
  commit happen at most once, and ``user_metadata`` labels it in the table's
  history, where :func:`commit_version` finds it afterwards.
- :func:`overwrite_table` replaces a whole table in one commit (gallery tables).
- :func:`read_predictions` / :func:`read_errors`: the two documented filters of the
  nightly ``results`` table, read with the second engine (delta-rs);
  :func:`create_views` declares them as catalog views where a catalog is configured.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import pyarrow as pa

from georank import schema as S
from georank.errors import SchemaError, WriteError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# Table properties set on every georank table (documented in the README).
TABLE_PROPERTIES = {
    "delta.appendOnly": "false",
    "delta.enableChangeDataFeed": "false",
    "delta.minReaderVersion": "1",
    "delta.minWriterVersion": "2",
}


def is_delta(spark: "SparkSession", uri: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, uri))


def date_has_rows(spark: "SparkSession", uri: str, run_date: str) -> bool:
    """Whether the Delta table at ``uri`` exists and holds rows of ``run_date`` (YYYY-MM-DD): the one
    "date already has rows" check (``mode='error'`` writes, the geotag job's ``--mode error``)."""
    return is_delta(spark, uri) and bool(
        spark.read.format("delta").load(uri).where(f"run_date = DATE'{run_date}'").limit(1).count()
    )


def ensure_table(spark: "SparkSession", uri: str, *, table: str, description: str = "") -> None:
    """Create the Delta table ``table`` (a key of :data:`georank.schema.TABLES`) at ``uri`` if it
    does not exist; if it does, check its columns match the declared schema."""
    from delta.tables import DeltaTable

    if table not in S.TABLES:
        raise SchemaError(f"unknown table {table!r}; expected one of {sorted(S.TABLES)}")
    arrow = S.TABLES[table]
    if is_delta(spark, uri):
        got = [(f.name, f.dataType.simpleString()) for f in spark.read.format("delta").load(uri).schema]
        want = [(f.name, f.dataType.simpleString()) for f in S.spark_schema(arrow)]
        if got != want:
            raise SchemaError(f"table {table} at {uri}: expected columns {want}, got {got}")
        return
    builder = DeltaTable.createIfNotExists(spark).location(uri).addColumns(S.spark_schema(arrow))
    parts = S.PARTITION_BY[table]
    if parts:
        builder = builder.partitionedBy(*parts)
    for key, value in TABLE_PROPERTIES.items():
        builder = builder.property(key, value)
    if description:
        builder = builder.comment(description)
    builder.execute()
    log.info("created Delta table %s at %s", table, uri)


def _conform(df: "DataFrame", table: str) -> "DataFrame":
    """Select the declared columns in order with the declared types (nullability kept by Delta)."""
    from pyspark.sql import functions as F

    declared = S.spark_schema(S.TABLES[table])
    missing = [f.name for f in declared if f.name not in df.columns]
    if missing:
        raise SchemaError(f"cannot write {table}: expected columns {[f.name for f in declared]}, missing {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in declared])


def write_partition(
    df: "DataFrame",
    uri: str,
    *,
    table: str,
    run_date: str,
    mode: Literal["error", "append", "replace"] = "error",
    txn: tuple[str, int] | None = None,
    user_metadata: str | None = None,
) -> None:
    """Write ``df`` (rows of one ``run_date``) to the Delta table at ``uri`` in one commit.

    ``txn=(app_id, version)`` makes the commit idempotent (Delta ``txnAppId``/``txnVersion``):
    Delta SILENTLY skips it when this table already holds a commit of ``app_id`` with a version
    at least as high. The app id is recorded once per table, so it must name what the version
    orders (the nightly job uses one app id per run date); check with :func:`commit_version`
    that the commit landed. ``user_metadata`` is stored with the commit (Delta ``userMetadata``).
    """
    spark = df.sparkSession
    ensure_table(spark, uri, table=table)
    out = _conform(df, table).write.format("delta")
    if txn is not None:
        out = out.option("txnAppId", txn[0]).option("txnVersion", str(txn[1]))
    if user_metadata is not None:
        out = out.option("userMetadata", user_metadata)
    if mode == "replace":
        out.mode("overwrite").option("replaceWhere", f"run_date = DATE'{run_date}'").save(uri)
    elif mode == "append":
        out.mode("append").save(uri)
    elif mode == "error":
        if date_has_rows(spark, uri, run_date):
            raise WriteError(
                f"table {table} at {uri} already has rows for run_date {run_date}; "
                "expected none with mode='error' (use mode='replace' to rerun the date)"
            )
        out.mode("append").save(uri)
    else:
        raise WriteError(f"unknown write mode {mode!r}; expected one of ['error', 'append', 'replace']")


def overwrite_table(df: "DataFrame", uri: str, *, table: str) -> None:
    """Replace the whole table at ``uri`` in one commit (used for gallery tables)."""
    spark = df.sparkSession
    ensure_table(spark, uri, table=table)
    _conform(df, table).write.format("delta").mode("overwrite").save(uri)


def commit_version(spark: "SparkSession", uri: str, user_metadata: str, *, last: int = 100) -> int | None:
    """The Delta version of the commit labelled ``user_metadata`` among the table's ``last``
    commits, or None when there is none (e.g. Delta skipped it for its transaction id)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    rows = (
        DeltaTable.forPath(spark, uri).history(last).where(F.col("userMetadata") == user_metadata)
        .select("version").collect()
    )
    return int(rows[0]["version"]) if rows else None


# The nightly results table holds one row per photo per run date: a prediction (error_stage null)
# or an error. These filters are its two documented views.
PREDICTIONS_FILTER = "error_stage IS NULL"
ERRORS_FILTER = "error_stage IS NOT NULL"
_ERROR_COLUMNS = {"photo_id": "photo_id", "uri": "uri", "stage": "error_stage", "reason": "error_reason",
                  "run_id": "run_id", "run_date": "run_date"}


def read_predictions(uri: str) -> pa.Table:
    """The predictions of the results table at ``uri`` (columns of ``schema.PREDICTIONS``), via delta-rs."""
    import pyarrow.compute as pc

    results = read_arrow(uri)
    return results.filter(pc.is_null(results.column("error_stage"))).select(S.PREDICTIONS.names)


def read_errors(uri: str) -> pa.Table:
    """The error rows of the results table at ``uri`` (columns of ``schema.ERRORS``), via delta-rs."""
    import pyarrow.compute as pc

    results = read_arrow(uri)
    rows = results.filter(pc.is_valid(results.column("error_stage")))
    return pa.Table.from_arrays([rows.column(c) for c in _ERROR_COLUMNS.values()], schema=S.ERRORS)


def view_sql(uri: str, schema_name: str) -> dict[str, str]:
    """``CREATE OR REPLACE VIEW`` statements for ``<schema_name>.predictions`` and ``.errors``
    over the results table at ``uri`` (same filters and columns as :func:`read_predictions`
    and :func:`read_errors`)."""
    src = "delta.`" + uri.replace("`", "``") + "`"
    errors = ", ".join(f"{src_col} AS {name}" for name, src_col in _ERROR_COLUMNS.items())
    return {
        "predictions": f"CREATE OR REPLACE VIEW {schema_name}.predictions AS SELECT {', '.join(S.PREDICTIONS.names)} "
        f"FROM {src} WHERE {PREDICTIONS_FILTER}",
        "errors": f"CREATE OR REPLACE VIEW {schema_name}.errors AS SELECT {errors} FROM {src} WHERE {ERRORS_FILTER}",
    }


def create_views(spark: "SparkSession", uri: str, *, schema_name: str) -> list[str]:
    """Declare the predictions and errors views of the results table in the session's catalog
    (Hive metastore or Unity Catalog; with Spark's in-memory catalog they last for the session)."""
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema_name}")
    names = []
    for name, sql in view_sql(uri, schema_name).items():
        spark.sql(sql)
        names.append(f"{schema_name}.{name}")
    return names


def read_arrow(uri: str) -> pa.Table:
    """Read a Delta table with the second engine (delta-rs), e.g. for checks and notebooks."""
    from deltalake import DeltaTable

    return DeltaTable(uri).to_pyarrow_table()
