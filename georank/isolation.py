"""Per-photo failure isolation: one photo's exception is one error row, never a failed task.

The steps after decoding (embed, retrieve, rank, decide) call their models on batches of
photos. When a batch call raises, :func:`per_item` calls the step again one photo at a time,
so only the culprit becomes an error row; the others go on. Exceptions that mean the run
itself is wrong (:func:`is_run_level`: a checkpoint, an index, the setup or the config, i.e.
any :class:`~georank.errors.GeorankError` but :class:`~georank.errors.PhotoError`) are
re-raised at once: they would fail every photo alike and must stop the run.

Which failures are per-photo and which stop the run is decided here, in one place:

- **per-photo** (an error row, the others go on): a file that is missing, too large, empty,
  not an image or corrupt; a NaN embedding or score; an image the ranker cannot size; any
  other exception of one photo's call.
- **run-level at once** (:func:`is_run_level`): every GeorankError but PhotoError (a wrong
  checkpoint, index, config or setup; an artifact that cannot load), and CUDA errors (a device
  assert or an illegal access poisons the worker's GPU context: no later photo can succeed).
- **run-level by nature, through the circuit breaker** (:func:`run_level_cause`, :class:`Breaker`):
  access denied, missing or expired credentials, an unreachable endpoint, the GPU out of memory.
  One such photo among good ones is an error row (an object with another ACL); but
  ``write.breaker_consecutive`` photos in a row in one task failing so stop the run with that
  cause instead of writing one error row per photo.

Spark-free; runs on executors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from georank.errors import GeorankError, PhotoError, RunError

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
    if _is_cuda_error(exc):
        return True
    return isinstance(exc, GeorankError) and not isinstance(exc, PhotoError)


# Messages of CUDA failures that leave the worker's GPU context unusable (torch / cuBLAS / cuDNN).
_CUDA_FATAL = ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "CUDNN_STATUS", "device-side assert", "NCCL error")


def _is_gpu_oom(exc: BaseException) -> bool:
    return type(exc).__name__ in ("OutOfMemoryError", "AcceleratorError") and "out of memory" in str(exc)


def _is_cuda_error(exc: BaseException) -> bool:
    if _is_gpu_oom(exc):
        return False  # counted by the breaker: one huge photo may not fit, the next may
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _CUDA_FATAL)


# StorageError kinds (carried by PhotoError.kind) that say the run cannot read, not the photo.
RUN_LEVEL_KINDS = {"denied": "access denied", "credentials": "credentials missing or expired",
                   "unreachable": "endpoint unreachable"}


def run_level_cause(exc: BaseException) -> str | None:
    """The run-level cause behind one photo's failure (``"access denied"``, ``"credentials missing
    or expired"``, ``"endpoint unreachable"``, ``"GPU out of memory"``), or None when the failure
    is the photo's own (missing, corrupt, not an image, ...)."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str) and kind in RUN_LEVEL_KINDS:
        return RUN_LEVEL_KINDS[kind]
    if _is_gpu_oom(exc):
        return "GPU out of memory"
    return None


class Breaker:
    """Per task and stage: counts photos in a row whose failure has a run-level cause
    (:func:`run_level_cause`); at ``limit`` it raises :class:`RunError` with that cause. A success,
    or a failure of the photo's own, starts the count again. Thread-safe (decoding runs ahead on
    a thread of its own)."""

    def __init__(self, limit: int) -> None:
        import threading

        self.limit = limit
        self._lock = threading.Lock()
        self._streak: dict[str, int] = {}  # stage -> photos in a row failed with a run-level cause

    def ok(self, stage: str) -> None:
        with self._lock:
            self._streak.pop(stage, None)

    def failed(self, stage: str, exc: BaseException) -> None:
        cause = run_level_cause(exc)
        with self._lock:
            if cause is None:
                self._streak.pop(stage, None)
                return
            n = self._streak[stage] = self._streak.get(stage, 0) + 1
        if n >= self.limit:
            raise RunError(
                f"stage {stage}: {n} photos in a row failed with a run-level cause ({cause}); expected "
                f"per-photo failures, got a systemic one (the last: {reason_of(exc, stage)}). The run stops "
                f"here instead of writing one error row per photo (write.breaker_consecutive={self.limit})"
            )


_breaker = Breaker(8)


def reset_breaker(limit: int) -> Breaker:
    """At the start of each task (:func:`georank.spark.executors.on_executors`): a fresh breaker."""
    global _breaker
    _breaker = Breaker(limit)
    return _breaker


def breaker() -> Breaker:
    """This worker's current breaker (the running task's)."""
    return _breaker


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
        out: list[R | Failure] = list(_checked(batch_call(items), len(items)))
        _breaker.ok(stage)
        return out
    except BaseException as exc:
        if is_run_level(exc):
            raise
        if len(items) == 1:
            log.warning("%s failed on one photo: %s", what, reason_of(exc, what), exc_info=True)
            _breaker.failed(stage, exc)
            return [Failure.of(exc, stage=stage, what=what)]
        log.warning("%s failed on a batch of %d photos (%s): retrying one photo at a time",
                    what, len(items), reason_of(exc, what), exc_info=True)
    results: list[R | Failure] = []
    for item in items:
        try:
            results.extend(_checked(batch_call([item]), 1))
            _breaker.ok(stage)
        except BaseException as exc:
            if is_run_level(exc):
                raise
            log.warning("%s failed on one photo: %s", what, reason_of(exc, what), exc_info=True)
            _breaker.failed(stage, exc)
            results.append(Failure.of(exc, stage=stage, what=what))
    return results


__all__ = ["MAX_REASON_CHARS", "RUN_LEVEL_KINDS", "Breaker", "Failure", "breaker", "is_run_level", "per_item",
           "reason_of", "reset_breaker", "run_level_cause", "stage_of"]
