"""Progress a person can follow: one line on the driver at a steady interval.

    geotag: 1200/10000 photos (12.0%), 38.5 photos/s, ETA 3 min 48 s, 3 errors

and, on a catalogue night (:mod:`georank.spark.catalogue`), the night's backlog after it:

    geotag: 60/120 photos (50.0%), 2.1 photos/s, ETA 29 s, 0 errors; backlog 180 (older 0), 120 tonight, 60 left (1 night at this rate)

Counts come from two Spark accumulators (done, errors) that the executor function of the
stage producing the final rows adds to after each batch (:func:`georank.spark.executors.on_executors`
takes them as ``progress=``); Spark merges a task's additions when the task ends, so the
driver's figures move task by task, and a failed attempt's additions are dropped (the
accumulated stage is the write's result stage: each task counts once). Rows decided on the
driver (input errors) are added with :meth:`Progress.add`. The line is logged at INFO by a
daemon thread every ``input.progress_interval_s``; executors log nothing per task at INFO.

Runs on the driver.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from georank.catalogue import Backlog

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Progress:
    """Driver side: the accumulators executors add to, and the reporter thread.

    Use as a context manager around the Spark action that computes the rows; on exit it logs a
    last line. :meth:`snapshot` gives the same counts for the job's JSON summary.
    """

    def __init__(self, spark: SparkSession, *, job: str, total: int, interval_s: float, unit: str = "photos",
                 backlog: Backlog | None = None) -> None:
        sc = spark.sparkContext
        self.done_acc = sc.accumulator(0)
        self.errors_acc = sc.accumulator(0)
        self.job, self.total, self.interval_s, self.unit = job, total, interval_s, unit
        self.backlog = backlog  # a catalogue night's backlog, shown after the counts
        self._driver_done = 0
        self._driver_errors = 0
        self._started = time.monotonic()
        self._ended: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lines_logged = 0

    @property
    def accumulators(self) -> tuple[Any, Any]:
        """``(done, errors)``: pass to ``on_executors(..., progress=...)`` (picklable)."""
        return self.done_acc, self.errors_acc

    def add(self, *, done: int, errors: int) -> None:
        """Rows decided on the driver (e.g. input errors): ``done`` of them, ``errors`` of which are errors."""
        self._driver_done += done
        self._driver_errors += errors

    def snapshot(self) -> dict[str, Any]:
        """done / total, errors so far, rate and ETA (seconds; None while nothing is done)."""
        done = int(self.done_acc.value) + self._driver_done
        errors = int(self.errors_acc.value) + self._driver_errors
        elapsed_s = (self._ended or time.monotonic()) - self._started
        per_s = done / elapsed_s if elapsed_s > 0 else 0.0
        remaining = max(self.total - done, 0)
        eta_s = remaining / per_s if per_s > 0 else None
        return {
            "done": done,
            "total": self.total,
            "errors": errors,
            f"{self.unit}_per_s": round(per_s, 3),
            "elapsed_s": round(elapsed_s, 3),
            "eta_s": None if eta_s is None else round(eta_s, 1),
        }

    def line(self) -> str:
        snap = self.snapshot()
        pct = 100.0 * snap["done"] / self.total if self.total else 100.0
        eta = "?" if snap["eta_s"] is None else _duration(snap["eta_s"])
        return (
            f"{self.job}: {snap['done']}/{self.total} {self.unit} ({pct:.1f}%), "
            f"{snap[f'{self.unit}_per_s']:.1f} {self.unit}/s, ETA {eta}, {snap['errors']} errors"
            + (f"; {self.backlog.describe()}" if self.backlog is not None else "")
        )

    def _report(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log_line()

    def log_line(self) -> None:
        log.info("%s", self.line())
        self.lines_logged += 1

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._report, name=f"georank-progress-{self.job}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._ended = time.monotonic()
        if exc_type is None:
            self.log_line()


__all__ = ["Progress"]
