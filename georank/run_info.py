"""What one run carries to every partition: its id, its date, the index version and the model
versions the driver pinned at start-up. Below both :mod:`georank.pipeline` and
:mod:`georank.ranking` (and the evaluation), so none of them imports another for it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    """Plain values every output row carries (shipped to executors as is). ``index_manifest`` is the
    index manifest the driver read at start-up (``Manifest.to_dict()``): every partition of the run
    searches that one index version, even if a new index is committed meanwhile. ``artifacts`` is
    ``{uri: version}`` of every model artifact, pinned by the driver at start-up
    (:func:`georank.storage.pin_artifacts`); inside ``georank.storage.pinned(run.artifacts)`` an
    executor loads exactly those versions or fails naming the artifact."""

    run_id: str
    run_date: dt.date
    index_manifest: dict[str, Any] | None = None
    artifacts: dict[str, str] | None = None


__all__ = ["RunInfo"]
