"""The night's commit (driver side): stage by run id, check the counts, ONE Delta commit, verify.

A run's output for its date lands in one commit of the results table, or not at all::

    <results parent>/_staging/<results name>/<run id>/
        _lease       JSON {run_id, started_ms, heartbeat_ms}, rewritten by the running driver
        results/     the staged RESULTS rows (Parquet): all compute ends here

    counts checked (read = predicted + errors, one prediction per photo)
      -> one Delta commit: replaceWhere run_date = D (mode overwrite) or a first write (mode error),
         transaction id per date (txnAppId georank-geotag:D, txnVersion = the table's version when
         the run started + 1: no clock), labelled with the run id (userMetadata), under the
         table's commit lock (georank.storage.lock: several drivers, one table)
      -> the table's history must show the run id's commit: a skipped commit fails the run
      -> the run removes its own staging (success or failure)

A crash before the commit leaves the table as it was; a crash after it leaves the date complete.
There is no second table to keep in step, so nothing is rolled forward: a crashed run is rerun.
Leftover staging folders of crashed runs are removed by a later run's start only when the run's
own start time is older than ``write.staging_ttl_hours`` AND its lease is stale
(``write.lease_timeout_s``): times come from the files' contents, never from file system times
(S3A reports 0 for directories).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from georank import results, write
from georank.config import GeorankConfig
from georank.errors import RunError, SkippedCommitError, WriteError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

TXN_APP_PREFIX = "georank-geotag"  # Delta txnAppId of the nightly job's commits: one per run date
_RUN_ID_TIME = re.compile(r"(\d{8}T\d{6}Z)")  # georank.cli run ids carry their start time (UTC)


def txn_app_id(run_date: dt.date) -> str:
    """The Delta transaction app id of a date's commits. Delta keeps ONE version per app id and per
    table and skips a commit whose version is not above it, so the id names the date: runs of
    other dates never shadow each other. The version is the table's at the run's start + 1
    (:func:`begin`): an older run never undoes a newer one (:mod:`georank.write`)."""
    return f"{TXN_APP_PREFIX}:{run_date.isoformat()}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def staging_root(cfg: GeorankConfig) -> str:
    """``<results parent>/_staging/<results name>``: where runs stage, one folder per run id."""
    table = cfg.resolve(cfg.tables.results).rstrip("/")
    parent, _, name = table.rpartition("/")
    return f"{parent}/_staging/{name}"


def _fs(spark: "SparkSession", uri: str) -> tuple[Any, Any]:
    """(Hadoop FileSystem, Path) for ``uri``: the same code serves local folders and s3a://."""
    jvm: Any = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path  # type: ignore[attr-defined]


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file:")


def _write_text(spark: "SparkSession", uri: str, text: str) -> None:
    """Replace the file at ``uri`` whole: a reader sees the old text or the new one, never a
    truncated file (locally :func:`georank.storage.put_bytes`' rename; on an object store one PUT
    at close, through the same Hadoop file system the table uses)."""
    if _is_local(uri):
        from georank.config import S3Config
        from georank.storage import put_bytes

        put_bytes(text.encode(), uri, S3Config())  # a local path: no S3 settings are read
        return
    fs, path = _fs(spark, uri)
    out = fs.create(path, True)
    try:
        out.write(bytearray(text.encode()))
    finally:
        out.close()


def _read_text(spark: "SparkSession", uri: str) -> str | None:
    fs, path = _fs(spark, uri)
    if not fs.exists(path):
        return None
    jvm: Any = spark.sparkContext._jvm
    stream = fs.open(path)
    try:
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


class Staging:
    """One run's staging folder with its lease. Use as a context manager on the driver: entering
    writes the lease and starts a thread that rewrites it every ``write.lease_refresh_s``;
    leaving (success or failure) stops the thread and removes the folder."""

    def __init__(self, spark: "SparkSession", cfg: GeorankConfig, run_id: str) -> None:
        self.spark, self.cfg, self.run_id = spark, cfg, run_id
        self.uri = f"{staging_root(cfg)}/{run_id}"
        self.results_uri = f"{self.uri}/results"
        self.started_ms = _now_ms()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lease(self) -> None:
        body = {"run_id": self.run_id, "started_ms": self.started_ms, "heartbeat_ms": _now_ms()}
        _write_text(self.spark, f"{self.uri}/_lease", json.dumps(body))

    def _refresh(self) -> None:
        while not self._stop.wait(self.cfg.write.lease_refresh_s):
            try:
                self._lease()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried; the run goes on
                log.warning("run %s: could not refresh the staging lease (%s)", self.run_id, exc)

    def __enter__(self) -> "Staging":
        self._lease()
        self._thread = threading.Thread(target=self._refresh, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            fs, path = _fs(self.spark, self.uri)
            fs.delete(path, True)
        except Exception as exc:  # noqa: BLE001 - after a commit, a leftover folder is not a failed night
            log.warning("run %s: could not remove its staging folder %s (%s); a later run removes it once stale",
                        self.run_id, self.uri, str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)


def _run_started_ms(run_id: str, lease: dict[str, Any] | None) -> int | None:
    """A run's start time: from its id (georank run ids carry it), else from its lease."""
    m = _RUN_ID_TIME.search(run_id)
    if m:
        return int(dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp() * 1000)
    if lease and isinstance(lease.get("started_ms"), int):
        return int(lease["started_ms"])
    return None


def _stale_run(spark: "SparkSession", cfg: GeorankConfig, run_dir: str, run_id: str, now: int) -> bool:
    """Whether the staging folder ``run_dir`` belongs to a crashed run (old AND its lease stale)."""
    text = _read_text(spark, f"{run_dir}/_lease")
    try:
        lease = json.loads(text) if text else None
    except ValueError:
        lease = None
    started = _run_started_ms(run_id, lease)
    heartbeat = lease.get("heartbeat_ms") if isinstance(lease, dict) else None
    if started is None:
        log.warning("staging of %s: no start time in its id or lease; left alone (remove it by hand)", run_id)
        return False
    old = (now - started) / 3_600_000 >= cfg.write.staging_ttl_hours
    stale = not isinstance(heartbeat, int) or (now - heartbeat) / 1000 >= cfg.write.lease_timeout_s
    if old and stale:
        log.warning("removing the staging of crashed run %s (started %.2f h ago, lease stale)", run_id,
                    (now - started) / 3_600_000)
        return True
    log.info("leaving the staging of run %s: %s", run_id, "its lease is live" if not stale else "younger than write.staging_ttl_hours")
    return False


def remove_stale_staging(spark: "SparkSession", cfg: GeorankConfig, *, now_ms: int | None = None) -> list[str]:
    """Remove the staging folders of crashed runs: a folder goes only when its run started more
    than ``write.staging_ttl_hours`` ago AND its lease was not refreshed for
    ``write.lease_timeout_s``. Returns the run ids removed. Called at the start of every run."""
    now = _now_ms() if now_ms is None else now_ms
    fs, root = _fs(spark, staging_root(cfg))
    if not fs.exists(root):
        return []
    removed = []
    try:
        statuses = list(fs.listStatus(root))
    except Exception as exc:  # noqa: BLE001 - the folder vanished between exists() and listing
        log.info("staging root %s could not be listed (%s); nothing to remove", staging_root(cfg), exc.__class__.__name__)
        return []
    for status in statuses:
        run_dir = status.getPath()
        run_id = run_dir.getName()
        if run_id.startswith("."):
            continue  # a lease being replaced, or other hidden files
        try:
            if _stale_run(spark, cfg, run_dir.toString(), run_id, now):
                fs.delete(run_dir, True)
                removed.append(run_id)
        except Exception as exc:  # noqa: BLE001 - a folder removed by its own run meanwhile, a lease being rewritten
            log.info("staging of %s changed while being checked (%s); left for a later run", run_id,
                     str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    return removed


def refuse_existing(spark: "SparkSession", cfg: GeorankConfig, run_date: dt.date) -> None:
    """``--mode error``: fail early when the date already has rows (the commit checks it again under the lock)."""
    uri = cfg.resolve(cfg.tables.results)
    if write.date_has_rows(spark, uri, run_date.isoformat()):
        raise WriteError(
            f"{uri} already has rows for run_date {run_date.isoformat()}; expected none with --mode error "
            "(use --mode overwrite to rerun the date)"
        )


def begin(spark: "SparkSession", cfg: GeorankConfig, run_date: dt.date) -> write.Txn:
    """At the run's start: the transaction its commit will carry (the date's app id, the results
    table's version + 1). Any run of the date that commits before this one makes it fail."""
    return write.begin(spark, cfg.resolve(cfg.tables.results), txn_app_id(run_date))


def commit_results(
    staged: "DataFrame",
    cfg: GeorankConfig,
    *,
    run_id: str,
    run_date: dt.date,
    txn: write.Txn,
    mode: Literal["overwrite", "error"],
) -> int:
    """Commit a run's staged RESULTS rows for ``run_date`` in ONE Delta commit; returns its version.

    ``mode="overwrite"``: ``replaceWhere run_date = D``; ``mode="error"``: only if the date has no
    rows (checked under the table's commit lock). ``txn`` comes from :func:`begin` at the run's
    start: a run whose date got a commit from a run that started at the same or a later table
    version is skipped by Delta and fails here (:class:`RunError`), never silently. Views are
    (re)declared after the commit; a failure there is a warning, never a failed run.
    """
    uri = cfg.resolve(cfg.tables.results)
    log.info("run %s: committing results", run_id)
    try:
        landed = write.commit(
            staged, uri, table="results", mode="replace" if mode == "overwrite" else "error",
            run_date=run_date.isoformat(), txn=txn, label=run_id, cfg=cfg,
        )
    except SkippedCommitError:
        raise RunError(
            f"run {run_id}: expected its commit in the history of {uri}, got none: Delta skipped it "
            f"(txnAppId {txn.app_id}, txnVersion {txn.version}): another run of {run_date.isoformat()} "
            "committed after this run started; nothing of this run was written (rerun the date if this "
            "run's rows are the ones wanted)"
        ) from None
    log.info("run %s: committed as version %d of %s", run_id, landed, uri)
    if cfg.tables.views_schema:
        try:
            results.create_views(staged.sparkSession, uri, schema_name=cfg.tables.views_schema)
        except Exception as exc:  # noqa: BLE001 - the night is committed; the views are a convenience
            log.warning("run %s: committed, but declaring the views in %s failed: %s", run_id,
                        cfg.tables.views_schema, str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    return landed
