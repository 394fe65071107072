"""The results table as its readers see it (driver side or notebooks): its documented filters
(predictions, errors), the latest answer per photo, their catalog views, and the second engine
(delta-rs) that reads them. Writing is :mod:`georank.write`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from georank import schema as S

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession


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
    """``CREATE OR REPLACE VIEW`` statements for ``<schema_name>.predictions``, ``.errors`` and
    ``.predictions_latest`` over the results table at ``uri`` (same filters, columns and order as
    :func:`read_predictions`, :func:`read_errors` and :func:`read_latest`)."""
    src = "delta.`" + uri.replace("`", "``") + "`"
    errors = ", ".join(f"{src_col} AS {name}" for name, src_col in _ERROR_COLUMNS.items())
    return {
        "predictions": f"CREATE OR REPLACE VIEW {schema_name}.predictions AS SELECT {', '.join(S.PREDICTIONS.names)} "
        f"FROM {src} WHERE {PREDICTIONS_FILTER}",
        "errors": f"CREATE OR REPLACE VIEW {schema_name}.errors AS SELECT {errors} FROM {src} WHERE {ERRORS_FILTER}",
        "predictions_latest": f"CREATE OR REPLACE VIEW {schema_name}.predictions_latest AS {latest_sql(src)}",
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


# --- The latest answer per photo (issue 23) ---------------------------------------------------------

# "Newest" of a photo's predictions: the latest run_date, then (a tie: two rows of one photo and one
# date, which a results table written by georank never holds, since a run replaces its date whole)
# the greatest run_id (run ids start with the job and its UTC start time, geotag-YYYYMMDDTHHMMSSZ-...,
# so the later-started run), then the greatest uri: a total order, the same in SQL and in Python.
LATEST_ORDER: tuple[tuple[str, str], ...] = (("run_date", "descending"), ("run_id", "descending"),
                                             ("uri", "descending"))


def latest_sql(src: str) -> str:
    """``SELECT`` of the newest prediction per photo (columns of ``schema.PREDICTIONS``, order
    :data:`LATEST_ORDER`) from ``src``, a results table (``delta.`uri``` or a table name)."""
    cols = ", ".join(S.PREDICTIONS.names)
    order = ", ".join(f"{c} {'DESC' if d == 'descending' else 'ASC'} NULLS LAST" for c, d in LATEST_ORDER)
    return (f"SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY photo_id ORDER BY {order}) "
            f"AS _georank_newest FROM {src} WHERE {PREDICTIONS_FILTER}) WHERE _georank_newest = 1")


def read_latest(uri: str) -> pa.Table:
    """One row per photo of the results table at ``uri``: its newest prediction across nights and
    versions (columns of ``schema.PREDICTIONS``; newest by :data:`LATEST_ORDER`), via delta-rs.

    Error rows are not answers: a photo whose newest row is an error keeps its newest prediction;
    a photo that only ever failed has no row. Same rows as the ``predictions_latest`` view."""
    import pyarrow.compute as pc

    preds = read_predictions(uri)
    if preds.num_rows == 0:
        return preds
    order = [("photo_id", "ascending", "at_end")] + [(c, d, "at_end") for c, d in LATEST_ORDER]
    ranked = preds.sort_by(order)  # type: ignore[arg-type]
    ids = ranked.column("photo_id").combine_chunks()
    later = pc.fill_null(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)), True)  # a new photo starts
    return ranked.filter(pa.concat_arrays([pa.array([True]), later]))


__all__ = ["ERRORS_FILTER", "LATEST_ORDER", "PREDICTIONS_FILTER", "create_views", "latest_sql", "read_arrow",
           "read_errors", "read_latest", "read_predictions", "view_sql"]
