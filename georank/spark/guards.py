"""The guards' one Spark aggregation (driver side): the most common failure of a frame of rows
with an error stage and reason, paths folded (:data:`georank.guards.PATH_PATTERN`). Only that one
row is collected. Used before the nightly commit and the index build's writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from georank.guards import PATH_PATTERN, PATH_PLACEHOLDER, TopFailure

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame


def top_failure(rows: "DataFrame", *, stage: str = "error_stage", reason: str = "error_reason") -> TopFailure | None:
    """The most common (stage, folded reason) among the rows whose ``stage`` column is set."""
    from pyspark.sql import functions as F

    top = (
        rows.where(F.col(stage).isNotNull())
        .select(F.col(stage).alias("s"),
                F.regexp_replace(F.coalesce(F.col(reason), F.lit("")), PATH_PATTERN, PATH_PLACEHOLDER).alias("r"))
        .groupBy("s", "r").count().orderBy(F.desc("count"), "s", "r").limit(1).collect()
    )
    return TopFailure(top[0]["s"], top[0]["r"], int(top[0]["count"])) if top else None


__all__ = ["top_failure"]
