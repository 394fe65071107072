"""The runs table (``tables.runs``): one row per run of every job, failed runs included.

Appended by :func:`georank.cli.run_job` when a run ends (:mod:`georank.runs`), through
:func:`georank.write.commit`. What an operator queries first: did last night run, did it pass,
why not, how long did each stage take, how much is left.
"""

from __future__ import annotations

import pyarrow as pa

from georank.schema.base import _f

RUN_STATUSES = ("ok", "failed")

RUNS = pa.schema(
    [
        _f("job", pa.string(), "Job name: geotag | build_index | evaluate | ... (jobs/<job>.py)", nullable=False),
        _f("run_id", pa.string(), "Id of the run (<job>-<UTC start>-<random>); the label of its commits", nullable=False),
        _f("run_date", pa.date32(), "The run's --run-date; null for jobs without one"),
        _f("status", pa.string(), "ok | failed (the job's exit code is 0 exactly when ok)", nullable=False),
        _f("error", pa.string(), "Why the run failed, as in its summary line (never a secret); null when ok"),
        _f("exit_code", pa.int32(), "The job's exit code: 0 ok, 1 the run failed, 2 a usage or setup error"),
        _f("started_at", pa.timestamp("us", tz="UTC"), "When the run started (driver clock, UTC)"),
        _f("ended_at", pa.timestamp("us", tz="UTC"), "When the run ended, before this row was written (driver clock, UTC)"),
        _f("seconds_total", pa.float64(), "Seconds from config loading to the end of the run"),
        _f("read", pa.int64(), "Photos (rows) read; null when the run failed before counting or reads none"),
        _f("predicted", pa.int64(), "Prediction rows committed; null when not counted"),
        _f("errors", pa.int64(), "Error rows committed (photos that failed with a reason); null when not counted"),
        _f("seconds", pa.map_(pa.string(), pa.float64()), "Seconds per stage from the summary (input, compute, write, ...)"),
        _f(
            "versions",
            pa.map_(pa.string(), pa.string()),
            "Versions the run used: the summary's versions and *_version keys, and georank (the package)",
        ),
        _f(
            "backlog",
            pa.map_(pa.string(), pa.float64()),
            "The summary's backlog numbers (catalogue runs: untagged, taken, left, nights to drain); null otherwise",
        ),
        _f("summary", pa.string(), "The run's whole JSON summary line, for anything not in a column"),
    ]
)
