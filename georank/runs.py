"""The runs table (``tables.runs``, schema ``RUNS``): one row per run of every job (driver side).

:func:`georank.cli.run_job` calls :func:`record_run` when a run ends, whether ``main`` returned or
raised, so failed runs leave their row too (they are the ones an operator looks for). The row is
built from the run's summary (:func:`run_row`: status, the summary's error text, which is already
safe to print, counts, seconds per stage, versions, backlog, the whole summary as JSON) and
appended in ONE commit through :func:`georank.write.commit` (``mode="append"``, labelled with the
run id) on the job's active Spark session; a job that never started one leaves no row. Writing
the row never changes the run's exit code or its summary line: a failure to write it is a logged
warning. A config error (exit 2 before any config exists) writes no row: there
is no ``tables.runs`` to write to.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from georank import schema as S

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from georank.config import GeorankConfig

log = logging.getLogger(__name__)

_COUNTS = ("read", "predicted", "errors")
RUNS_LOCK_WAIT_S = 60.0  # the longest a runs row waits for the runs table's commit lock


def _long(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _numbers(value: Any) -> list[tuple[str, float]] | None:
    """A summary dict's numeric entries as map items (others left out); None when not a dict."""
    if not isinstance(value, Mapping):
        return None
    return [(str(k), n) for k, v in value.items() if (n := _number(v)) is not None]


def _catalogue(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """The catalogue night's part of a geotag summary (``catalogue``: backlog numbers and versions)."""
    part = summary.get("catalogue")
    return part if isinstance(part, Mapping) else {}


def _backlog(summary: Mapping[str, Any]) -> list[tuple[str, float]] | None:
    """``backlog`` when the summary has it as numbers, else the catalogue night's numbers."""
    if isinstance(summary.get("backlog"), Mapping):
        return _numbers(summary["backlog"])
    return _numbers(_catalogue(summary)) or None


def _versions(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    versions: dict[str, str] = {}
    for part in (_catalogue(summary).get("versions"), summary.get("versions")):
        if isinstance(part, Mapping):
            versions.update({str(k): str(v) for k, v in part.items() if v is not None})
    versions.update({k.removesuffix("_version"): v for k, v in summary.items()
                     if k.endswith("_version") and isinstance(v, str)})
    try:
        versions.setdefault("georank", metadata.version("georank"))
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        pass
    return sorted(versions.items())


def _run_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def run_row(
    summary: Mapping[str, Any],
    *,
    exit_code: int,
    started_at: dt.datetime,
    ended_at: dt.datetime,
    run_date: dt.date | str | None = None,
) -> dict[str, Any]:
    """The ``RUNS`` row of a run from its summary (``job``, ``run_id``, ``status``, ``error``, counts,
    ``seconds``, ``*_version``/``versions``, ``backlog``, ``run_date``); ``run_date`` (the job's
    ``--run-date``) wins over the summary's. Missing or non-numeric counts are null."""
    status = summary.get("status")
    if status not in S.RUN_STATUSES:
        status = "ok" if exit_code == 0 else "failed"
    return {
        "job": str(summary.get("job")),
        "run_id": str(summary.get("run_id")),
        "run_date": _run_date(run_date) or _run_date(summary.get("run_date")),
        "status": status,
        "error": None if status == "ok" else str(summary.get("error") or f"exit code {exit_code}"),
        "exit_code": exit_code,
        "started_at": started_at,
        "ended_at": ended_at,
        "seconds_total": _number(summary.get("seconds_total")),
        **{c: _long(summary.get(c)) for c in _COUNTS},
        "seconds": _numbers(summary.get("seconds")),
        "versions": _versions(summary),
        "backlog": _backlog(summary),
        "summary": json.dumps(dict(summary), sort_keys=True, default=str),
    }


def runs_table(rows: list[dict[str, Any]]) -> pa.Table:
    """``RUNS`` rows as an Arrow table."""
    return pa.Table.from_pylist(rows, schema=S.RUNS)


def append_run(spark: "SparkSession", cfg: "GeorankConfig", row: dict[str, Any]) -> int:
    """Append one ``RUNS`` row to ``tables.runs`` in one commit labelled with its run id; returns the
    Delta version. Raises what :func:`georank.write.commit` raises."""
    from georank.write import commit

    assert cfg.tables.runs is not None
    checked = runs_table([row]).to_pylist()[0]  # the declared types, or an error naming the column
    maps = [f.name for f in S.RUNS if pa.types.is_map(f.type)]
    values = [dict(checked[c]) if c in maps and checked[c] is not None else checked[c] for c in S.RUNS.names]
    df = spark.createDataFrame([tuple(values)], S.spark_schema(S.RUNS))
    # A runs row waits at most a minute for another driver's commit lock on the runs table: the
    # job's summary line and exit code wait for it.
    short = cfg.model_copy(update={"write": cfg.write.model_copy(update={"commit_lock_wait_s": min(
        cfg.write.commit_lock_wait_s, RUNS_LOCK_WAIT_S)})})
    return commit(df, cfg.resolve(cfg.tables.runs), table="runs", mode="append", label=row["run_id"], cfg=short)


def record_run(
    cfg: "GeorankConfig | None",
    summary: Mapping[str, Any],
    *,
    exit_code: int,
    started_at: dt.datetime,
    ended_at: dt.datetime,
    run_date: dt.date | str | None = None,
) -> bool:
    """Write the run's row to ``tables.runs`` (True when written). Never raises: without a config
    (a config error) or with ``tables.runs: null`` there is nothing to write; any failure (no Spark,
    the table, the commit) is a logged warning. The row is written on the job's active Spark session;
    a job without one (a driver-only job, or one that failed before starting Spark) leaves no row:
    starting a JVM only for it would delay every such job's exit."""
    if cfg is None:
        log.info("run %s: no config was loaded, so no row in the runs table", summary.get("run_id"))
        return False
    if cfg.tables.runs is None:
        return False
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:  # a driver-only job (build_cells, prepare_mp16, ...) or one that failed first
        log.info("run %s: no Spark session, so no row in the runs table (jobs that never start Spark "
                 "leave none)", summary.get("run_id"))
        return False
    try:
        row = run_row(summary, exit_code=exit_code, started_at=started_at, ended_at=ended_at, run_date=run_date)
        version = append_run(spark, cfg, row)
        log.info("run %s: its row is version %d of the runs table %s", row["run_id"], version, cfg.tables.runs)
        return True
    except Exception as exc:  # noqa: BLE001 - the run's own outcome stands whatever happens here
        text = str(exc).splitlines()[0] if str(exc) else ""
        log.warning("run %s: could not append its row to the runs table (tables.runs): %s: %s",
                    summary.get("run_id"), exc.__class__.__name__, text)
        return False
