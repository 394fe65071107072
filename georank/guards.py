"""Guards before every commit (driver side, Spark-free): an empty or systemically failed run
never replaces a good night. It fails, loudly, and the table stays as it was.

- **No photo read** (:func:`check_not_empty`): a rerun on an empty folder, an ``s3://`` prefix
  with a typo or an export that has not landed yet reads 0 photos; committing that would wipe
  the date's rows. Refused unless the run says ``--allow-empty``.
- **Too many failures** (:func:`check_error_fraction`): more than ``write.max_error_fraction``
  of the photos failed (strictly above). The message names the most common stage and reason
  (paths and URIs folded, so one cause counts once) with its count.

Which failures stop a run early on the executors, rather than becoming error rows, is decided
in one place: :func:`georank.isolation.run_level_cause` and its circuit breaker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from georank.errors import RunError

# Paths and URIs inside an error reason, folded so that one cause counts once across photos.
# Java-compatible: the Spark layer folds with the same pattern (regexp_replace).
PATH_PATTERN = r"(?:[A-Za-z][A-Za-z0-9+.-]*://|/)[^\s,;()]+"
PATH_PLACEHOLDER = "<path>"


def fold_reason(reason: str | None) -> str:
    """``'object not found: s3://b/k.jpg'`` -> ``'object not found: <path>'``."""
    return re.sub(PATH_PATTERN, PATH_PLACEHOLDER, reason or "")


@dataclass(frozen=True)
class TopFailure:
    """The most common failure of a run: its stage, folded reason and how many photos had it
    (found by :func:`georank.spark.guards.top_failure`, one Spark aggregation)."""

    stage: str
    reason: str
    count: int

    def describe(self) -> str:
        return f"stage {self.stage}: {self.reason} ({self.count} photos)"


def check_not_empty(*, what: str, read: int, source: str, allow_empty: bool) -> None:
    """RunError when nothing was read and the run did not ask to commit an empty night."""
    if read == 0 and not allow_empty:
        raise RunError(
            f"{what}: expected at least one photo, got 0 read from {source} (an empty folder, a wrong "
            "prefix, or an export that has not landed yet); an empty run never replaces a committed "
            "night: nothing was committed (pass --allow-empty to commit an empty night on purpose)"
        )


def check_error_fraction(*, what: str, read: int, errors: int, max_fraction: float,
                         top: TopFailure | Callable[[], TopFailure | None] | None) -> None:
    """RunError when more than ``max_fraction`` of the ``read`` photos failed. ``top``, the most
    common failure, may be a function: it is called only when the guard trips (it may scan the run)."""
    if read == 0 or errors / read <= max_fraction:
        return
    found = top() if callable(top) else top
    cause = found.describe() if found is not None else "unknown"
    raise RunError(
        f"{what}: expected at most {max_fraction:.0%} of the photos to fail (write.max_error_fraction="
        f"{max_fraction:g}), got {errors} of {read} ({errors / read:.1%}); the most common failure: {cause}. "
        "A systemic failure never replaces a committed night: nothing was committed"
    )


__all__ = ["PATH_PATTERN", "PATH_PLACEHOLDER", "TopFailure", "check_error_fraction", "check_not_empty", "fold_reason"]
