"""Write stage (driver side): every Delta table georank writes goes through :func:`commit`.

One way for every table (results, gallery embeddings and errors, evaluation results, training
groups): ::

    txn = begin(spark, uri, app_id)      # at the run's start: the table's version + 1
    ... compute ...
    commit(df, uri, table=..., mode=..., txn=txn, label=run_id, cfg=cfg)
        under the table's commit lock (georank.storage.lock; several drivers, one table)
          ensure_table          create once with the declared schema (two creators both succeed)
          one Delta commit      txnAppId/txnVersion = txn, userMetadata = label
          history check         the label's commit must be in the table's history, else
                                SkippedCommitError: Delta skipped it (a run of the same key committed first)

Transaction versions come from the table, never from a clock: a run reads the table's version
when it starts and commits with that + 1 under its key's app id (one per run date for the
nightly job, one per table for whole-table builds). Runs of one key are thus ordered by the table
version they started at: a run is skipped by Delta (and fails loudly) when a run of its key that
started at the same or a later table version committed first, so an older run never undoes a
newer one; of two runs that started between the same two commits of the table, the first to
commit wins. A run that started after any later commit of the table counts as the newer one and
replaces the other's rows, as a rerun does. Drivers whose clocks differ order nothing here.

Modes: ``replace`` swaps one ``run_date``'s rows (``replaceWhere``), ``error`` appends one
``run_date`` only if it has no rows yet (checked under the lock), ``append`` appends,
``overwrite`` replaces the whole table. :func:`merge` (jobs/publish.py) follows the same rules.
Reading the results table (its filters, the latest answer per photo, the views) is
:mod:`georank.results`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from georank import schema as S
from georank.errors import SchemaError, SkippedCommitError, WriteError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from georank.config import GeorankConfig

log = logging.getLogger(__name__)

# Table properties set on every georank table (documented in docs/tables.md).
TABLE_PROPERTIES = {
    "delta.appendOnly": "false",
    "delta.enableChangeDataFeed": "false",
    "delta.minReaderVersion": "1",
    "delta.minWriterVersion": "2",
}

Mode = Literal["replace", "error", "append", "overwrite"]
MODES: tuple[str, ...] = ("replace", "error", "append", "overwrite")


def is_delta(spark: "SparkSession", uri: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, uri))


def table_version(spark: "SparkSession", uri: str) -> int | None:
    """The Delta table's current version, or None when there is no Delta table at ``uri``."""
    from delta.tables import DeltaTable

    if not is_delta(spark, uri):
        return None
    return int(DeltaTable.forPath(spark, uri).history(1).select("version").collect()[0]["version"])


@dataclass(frozen=True)
class Txn:
    """A Delta transaction id: ``app_id`` names what the version orders (a run date, an evaluate
    run, a whole table); ``version`` is the table's version when the run started, + 1."""

    app_id: str
    version: int


def begin(spark: "SparkSession", uri: str, app_id: str) -> Txn:
    """The transaction a run will commit with, decided from the table at the run's START (its
    version + 1): a commit of ``app_id`` from a run that started at the same or a later table
    version makes this run's commit be skipped (see the module docstring)."""
    version = table_version(spark, uri)
    return Txn(app_id, 0 if version is None else version + 1)


def date_has_rows(spark: "SparkSession", uri: str, run_date: str) -> bool:
    """Whether the Delta table at ``uri`` exists and holds rows of ``run_date`` (YYYY-MM-DD): the one
    "date already has rows" check (``mode='error'`` writes, the geotag job's ``--mode error``)."""
    return is_delta(spark, uri) and bool(
        spark.read.format("delta").load(uri).where(f"run_date = DATE'{run_date}'").limit(1).count()
    )


def _check_columns(spark: "SparkSession", uri: str, table: str) -> None:
    """The table's columns must be the declared ones. A table written by an older georank whose
    columns are the declared ones minus some added since (in order, same types) is migrated: the
    new columns are added in place (``ALTER TABLE ... ADD COLUMNS ... AFTER``), null on old rows."""
    got = [(f.name, f.dataType.simpleString()) for f in spark.read.format("delta").load(uri).schema]
    declared = S.spark_schema(S.TABLES[table])
    want = [(f.name, f.dataType.simpleString()) for f in declared]
    if got == want:
        return
    if [c for c in want if c[0] in {n for n, _ in got}] == got:  # only new columns missing
        have = {n for n, _ in got}
        added = []
        for i, f in enumerate(declared):
            if f.name not in have:
                comment = str(f.metadata.get("comment", "")).replace("\\", "\\\\").replace("'", "\\'")
                where = f"AFTER `{declared[i - 1].name}`" if i else "FIRST"
                added.append(f"`{f.name}` {f.dataType.simpleString()} COMMENT '{comment}' {where}")
        try:  # ONE commit adds them all: a crash never leaves a half-migrated table
            spark.sql(f"ALTER TABLE delta.`{uri.replace('`', '``')}` ADD COLUMNS ({', '.join(added)})")
            log.warning("table %s at %s: added the columns %s that this georank declares (null on older rows)",
                        table, uri, [n for n, _ in want if n not in have])
        except Exception as exc:  # noqa: BLE001 - another driver migrated it at the same moment: checked below
            log.info("table %s at %s: adding columns failed (%s); checking the table as it is now", table, uri,
                     exc.__class__.__name__)
        got = [(f.name, f.dataType.simpleString()) for f in spark.read.format("delta").load(uri).schema]
    if got != want:
        raise SchemaError(f"table {table} at {uri}: expected columns {want}, got {got}")


def ensure_table(spark: "SparkSession", uri: str, *, table: str, description: str = "") -> None:
    """Create the Delta table ``table`` (a key of :data:`georank.schema.TABLES`) at ``uri`` if it
    does not exist; if it does, check its columns match the declared schema. Two drivers creating
    it at once both succeed: the one whose create loses the race finds the table and checks it."""
    from delta.tables import DeltaTable

    if table not in S.TABLES:
        raise SchemaError(f"unknown table {table!r}; expected one of {sorted(S.TABLES)}")
    if is_delta(spark, uri):
        _check_columns(spark, uri, table)
        return
    builder = DeltaTable.createIfNotExists(spark).location(uri).addColumns(S.spark_schema(S.TABLES[table]))
    parts = S.PARTITION_BY[table]
    if parts:
        builder = builder.partitionedBy(*parts)
    for key, value in TABLE_PROPERTIES.items():
        builder = builder.property(key, value)
    if description or table in S.TABLE_COMMENTS:
        builder = builder.comment(description or S.TABLE_COMMENTS[table])
    try:
        builder.execute()
    except Exception as exc:  # noqa: BLE001 - a concurrent creator won (ProtocolChanged/MetadataChanged/exists)
        if not _appears(spark, uri):
            raise
        log.info("table %s at %s was created by another run at the same moment (%s)", table, uri,
                 exc.__class__.__name__)
    else:
        log.info("created Delta table %s at %s (or found it, created by another run meanwhile)", table, uri)
    # createIfNotExists is a no-op on a table another run created since the check above: whoever
    # created it, the table now here must have the declared columns.
    _check_columns(spark, uri, table)


def _appears(spark: "SparkSession", uri: str, *, wait_s: float = 5.0) -> bool:
    """Whether a Delta table is at ``uri``, or appears within ``wait_s`` (a concurrent creator whose
    create beat this one may not have its first commit visible yet)."""
    deadline = time.monotonic() + wait_s
    while not is_delta(spark, uri):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)
    return True


def _conform(df: "DataFrame", table: str) -> "DataFrame":
    """Select the declared columns in order with the declared types (nullability kept by Delta)."""
    from pyspark.sql import functions as F

    declared = S.spark_schema(S.TABLES[table])
    missing = [f.name for f in declared if f.name not in df.columns]
    if missing:
        raise SchemaError(f"cannot write {table}: expected columns {[f.name for f in declared]}, missing {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in declared])


@contextlib.contextmanager
def _table_lock(uri: str, cfg: "GeorankConfig | None", owner: str) -> Iterator[Callable[[], None]]:
    """The table's commit lock (:mod:`georank.storage.lock`) when the config asks for one; yields a
    check to call right before the commit (raises if another driver broke the lease meanwhile)."""
    from georank.storage.lock import commit_lock, lock_wanted

    if cfg is None or not lock_wanted(cfg.write.commit_lock, uri, cfg.spark.conf):
        yield lambda: None
        return
    with commit_lock(uri, cfg.s3, owner=owner, ttl_s=cfg.write.commit_lock_ttl_s,
                     wait_s=cfg.write.commit_lock_wait_s) as held:
        yield held.ensure_held


def commit(
    df: "DataFrame",
    uri: str,
    *,
    table: str,
    mode: Mode,
    label: str,
    txn: Txn | None = None,
    run_date: str | None = None,
    cfg: "GeorankConfig | None" = None,
) -> int:
    """Write ``df`` to the Delta table ``table`` at ``uri`` in ONE commit; returns its version.

    ``label`` (a run id) is stored with the commit (Delta ``userMetadata``) and looked up in the
    history afterwards: a commit Delta skipped for its transaction id (``txn``, see :func:`begin`)
    raises :class:`WriteError`, so a run never reports a write that did not happen. ``run_date``
    (YYYY-MM-DD) is required by ``replace`` and ``error``. ``cfg``: the run's config, for the
    table's commit lock (``write.commit_lock``); without it no lock is taken.
    """
    if mode not in MODES:
        raise WriteError(f"unknown write mode {mode!r}; expected one of {list(MODES)}")
    if mode in ("replace", "error") and not run_date:
        raise WriteError(f"write mode {mode!r} of table {table}: expected a run_date, got none")
    spark = df.sparkSession
    out = _conform(df, table).write.format("delta").option("userMetadata", label)
    if txn is not None:
        out = out.option("txnAppId", txn.app_id).option("txnVersion", str(txn.version))
    with _table_lock(uri, cfg, owner=label) as still_held:
        ensure_table(spark, uri, table=table)
        if mode == "error" and date_has_rows(spark, uri, str(run_date)):
            raise WriteError(
                f"table {table} at {uri} already has rows for run_date {run_date}; "
                "expected none with mode 'error' (use mode 'replace' / --mode overwrite to rerun the date)"
            )
        still_held()
        if mode == "replace":
            out.mode("overwrite").option("replaceWhere", f"run_date = DATE'{run_date}'").save(uri)
        elif mode == "overwrite":
            out.mode("overwrite").save(uri)
        else:
            out.mode("append").save(uri)
        log.info("%s: %s written to %s, checking its history", label, table, uri)  # the crash suite kills here
        landed = commit_version(spark, uri, label)
    if landed is None:
        raise SkippedCommitError(
            f"table {table} at {uri}: expected the commit labelled {label} in the table's history, got none: "
            f"Delta skipped it (txnAppId {txn.app_id if txn else None}, txnVersion {txn.version if txn else None}): "
            "a run of the same key committed first; nothing of this write was kept"
        )
    log.info("%s: committed %s as version %d of %s", label, table, landed, uri)
    return landed


def commit_version(spark: "SparkSession", uri: str, user_metadata: str, *, last: int = 1000) -> int | None:
    """The Delta version of the commit labelled ``user_metadata`` among the table's ``last``
    commits, or None when there is none (e.g. Delta skipped it for its transaction id)."""
    found = _labelled_commit(spark, uri, user_metadata, last=last)
    return None if found is None else found[0]


def _labelled_commit(spark: "SparkSession", uri: str, user_metadata: str, *,
                     last: int = 1000) -> tuple[int, dict[str, str]] | None:
    """``(version, operationMetrics)`` of the commit labelled ``user_metadata``, from one read of
    the table's history, or None."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    rows = (
        DeltaTable.forPath(spark, uri).history(last).where(F.col("userMetadata") == user_metadata)
        .select("version", "operationMetrics").collect()
    )
    return (int(rows[0]["version"]), dict(rows[0]["operationMetrics"] or {})) if rows else None


# --- MERGE (issue 23: jobs/publish.py) -------------------------------------------------------------


@dataclass(frozen=True)
class Merged:
    """What :func:`merge` did: ``version`` of its commit (None: nothing to change, so no commit)
    and ``updated``, the target rows it updated (Delta's ``numTargetRowsUpdated``)."""

    version: int | None
    updated: int


def merge(
    source: "DataFrame",
    uri: str,
    *,
    on: str,
    when: str,
    set_columns: dict[str, str],
    label: str,
    cfg: "GeorankConfig | None" = None,
) -> Merged:
    """ONE Delta MERGE of ``source`` (alias ``s``) into the Delta table at ``uri`` (alias ``t``):
    the target rows matched by ``on`` for which ``when`` holds AT MERGE TIME get ``set_columns``
    (target column -> SQL expression); nothing is inserted or deleted. The rules of :func:`commit`:
    under the table's commit lock (``cfg``), labelled ``label`` (Delta ``userMetadata``), the
    label's commit looked up in the history afterwards (missing: :class:`WriteError`).

    Idempotent: when no target row matches ``on`` and ``when`` (a rerun whose rows already
    landed), nothing is committed and no table version is made (``Merged(None, 0)``). A target
    that another writer changed while the MERGE ran fails it (Delta's conflict check); rerun it.
    The label travels in the session conf ``spark.databricks.delta.commitInfo.userMetadata``
    for this one MERGE (restored afterwards)."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    spark = source.sparkSession
    if not is_delta(spark, uri):
        raise WriteError(f"cannot merge into {uri}: expected a Delta table there, got none")
    with _table_lock(uri, cfg, owner=label) as still_held:
        target = spark.read.format("delta").load(uri)
        pending = target.alias("t").join(source.alias("s"), F.expr(on)).where(F.expr(when)).limit(1).count()
        if not pending:
            log.info("%s: nothing to merge into %s (every matched row already holds its answer): no commit", label, uri)
            return Merged(None, 0)
        still_held()
        key = "spark.databricks.delta.commitInfo.userMetadata"
        before = spark.conf.get(key, None)
        spark.conf.set(key, label)
        try:
            (DeltaTable.forPath(spark, uri).alias("t").merge(source.alias("s"), on)
             .whenMatchedUpdate(condition=when, set={k: F.expr(v) for k, v in set_columns.items()}).execute())
        finally:
            if before is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, before)
        log.info("%s: merged into %s, checking its history", label, uri)
        found = _labelled_commit(spark, uri, label)
    if found is None:
        raise WriteError(f"table at {uri}: expected the MERGE labelled {label} in the table's history, got none")
    landed, metrics = found
    updated = int(metrics.get("numTargetRowsUpdated", 0))
    log.info("%s: merged %d rows into %s as version %d", label, updated, uri, landed)
    return Merged(landed, updated)
