"""Per-photo failure isolation: one photo's exception is one error row, never a failed task.

The steps after decoding (embed, retrieve, rank, decide) call their models on batches of
photos. When a batch call raises, :func:`per_item` calls the step again one photo at a time,
so only the culprit becomes an error row; the others go on. Exceptions that mean the run
itself is wrong (:func:`is_run_level`: a checkpoint, an index, the setup or the config, i.e.
any :class:`~georank.errors.GeorankError` but :class:`~georank.errors.PhotoError`) are
re-raised at once: they would fail every photo alike and must stop the run.

Spark-free; runs on executors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from georank.errors import GeorankError, PhotoError

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 280  # error_reason is read by people: one line, bounded

T = TypeVar("T")
R = TypeVar("R")


def is_run_level(exc: BaseException) -> bool:
    """True for an exception that is the run's problem, not one photo's (it must stop the run):
    every GeorankError except PhotoError (CheckpointError, GalleryIndexError, SetupError,
    ConfigError, SchemaError, InputError, WriteError, RunError), and anything that is not an
    ``Exception`` (KeyboardInterrupt, SystemExit)."""
    if not isinstance(exc, Exception):
        return True
    return isinstance(exc, GeorankError) and not isinstance(exc, PhotoError)


def reason_of(exc: BaseException, what: str) -> str:
    """A one-line reason for an error row: a PhotoError's own reason, otherwise
    ``"<what> failed: <ExceptionType>: <first line of its message>"``, at most MAX_REASON_CHARS."""
    if isinstance(exc, PhotoError):
        text = exc.reason
    else:
        lines = str(exc).strip().splitlines()
        text = f"{what} failed: {type(exc).__name__}" + (f": {lines[0].strip()}" if lines else "")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def stage_of(exc: BaseException, default: str) -> str:
    """The stage an error row names: a PhotoError's own stage, else ``default``."""
    return exc.stage if isinstance(exc, PhotoError) else default


@dataclass(frozen=True)
class Failure:
    """What :func:`per_item` puts in place of an item whose call failed: an error row's stage and reason."""

    stage: str
    reason: str

    @classmethod
    def of(cls, exc: BaseException, *, stage: str, what: str) -> Failure:
        return cls(stage_of(exc, stage), reason_of(exc, what))


def _checked(out: Sequence[R], n: int) -> list[R]:
    got = list(out)
    if len(got) != n:
        raise RuntimeError(f"expected {n} results, got {len(got)}")
    return got


def per_item(
    items: Sequence[T],
    batch_call: Callable[[Sequence[T]], Sequence[R]],
    *,
    what: str,
    stage: str,
) -> list[R | Failure]:
    """``batch_call(items)``; if it raises (not run-level) or returns the wrong number of results,
    ``batch_call([item])`` for each item. Returns, per item, its result or a :class:`Failure`.

    ``what`` names the call in reasons and logs ("the ranker", "the image encoder").
    """
    if not items:
        return []
    try:
        return list(_checked(batch_call(items), len(items)))
    except BaseException as exc:
        if is_run_level(exc):
            raise
        if len(items) == 1:
            log.warning("%s failed on one photo: %s", what, reason_of(exc, what), exc_info=True)
            return [Failure.of(exc, stage=stage, what=what)]
        log.warning("%s failed on a batch of %d photos (%s): retrying one photo at a time",
                    what, len(items), reason_of(exc, what), exc_info=True)
    results: list[R | Failure] = []
    for item in items:
        try:
            results.extend(_checked(batch_call([item]), 1))
        except BaseException as exc:
            if is_run_level(exc):
                raise
            log.warning("%s failed on one photo: %s", what, reason_of(exc, what), exc_info=True)
            results.append(Failure.of(exc, stage=stage, what=what))
    return results


__all__ = ["MAX_REASON_CHARS", "Failure", "is_run_level", "reason_of", "stage_of", "per_item"]
