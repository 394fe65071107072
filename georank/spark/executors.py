"""Executor plumbing shared by the Spark jobs: the ``mapInArrow`` wrapper, logging, threads,
GPU binding, the accelerator stage's ResourceProfile, fault injection and the driver-side
translation of executor errors.

Runs on executors: :func:`on_executors` (the function it returns), :func:`executor_logging`,
:func:`fit_threads`, :func:`bind_gpu`. Runs on the driver: :func:`gpu_profile`,
:func:`executor_errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from georank.config import GeorankConfig, validate_config
from georank.errors import RunError
from georank.isolation import reset_breaker

log = logging.getLogger(__name__)

# Environment variables read by OpenMP (torch's and faiss's intra-op pools), MKL, OpenBLAS and
# Apple's Accelerate when their library first starts its pool.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

_threads_set_to: int | None = None  # per Python worker: the thread count fit_threads applied
_gpu_logged: set[str] = set()  # per Python worker: GPUs whose binding was logged


def on_executors(
    cfg_dict: dict[str, Any],
    step: Callable[[pa.Table, GeorankConfig], pa.Table],
    *,
    accelerator: bool,
    whole_partition: bool = False,
    progress: Any = None,
    prepare: Callable[[Iterator[pa.Table], GeorankConfig], Iterator[pa.Table]] | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function of one stage: rebuild the config from plain values, fit the
    worker's threads to the task's CPU allowance, bind the task's GPU in accelerator stages, and
    run ``step`` (a core function) on each Arrow batch, or once on the whole partition.

    ``progress``: an optional pair of Spark accumulators ``(done, errors)`` (see
    :mod:`georank.spark.progress`); after each batch, its output rows are added to ``done`` and
    those with an ``error_stage`` to ``errors``. ``prepare``: an optional function from the input
    tables to the tables ``step`` sees (e.g. :func:`georank.pipeline.decode_ahead`, decoding a
    batch ahead on a thread). Captures only plain values, the accumulators and module-level
    functions. The returned function runs on executors.
    """

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        executor_logging()
        cpus = task_cpus()
        if cpus is not None:
            fit_threads(cpus)
        cfg = validate_config(cfg_dict, source="config shipped to executor")
        reset_breaker(cfg.write.breaker_consecutive)  # per task: run-level causes in a row stop the run
        if accelerator:
            bind_gpu(cfg)
        tables: Iterator[pa.Table] = (pa.Table.from_batches([b]) for b in batches)
        if whole_partition:
            parts = list(tables)
            tables = iter([pa.concat_tables(parts)] if parts else [])
        if prepare is not None:
            tables = prepare(tables, cfg)
        for table in tables:
            if table.num_rows == 0:
                continue
            started = time.monotonic()
            out = step(table, cfg)
            if accelerator:
                _maybe_kill_worker()
                # DEBUG: one line per batch would flood the console of a local run at INFO.
                log.debug("%s: %d photos in %.1f s", getattr(step, "__name__", "step"), table.num_rows, time.monotonic() - started)
            if progress is not None:
                done, errors = progress
                done.add(out.num_rows)
                if "error_stage" in out.column_names:
                    errors.add(out.num_rows - out.column("error_stage").null_count)
            yield from out.to_batches()

    return run


def passthrough(table: pa.Table, cfg: GeorankConfig) -> pa.Table:
    """On executors: the rows unchanged; as the step of :func:`on_executors` with ``progress=``,
    it counts rows made outside a counted stage (error rows built by Spark expressions)."""
    return table


def executor_logging() -> None:
    """On executors: georank's INFO lines (GPU binding, warnings) go to the Python worker's
    stderr, i.e. the executor's log; once per worker. Without it they are dropped (no handler)."""
    logger = logging.getLogger("georank")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def task_cpus() -> int | None:
    """On executors: the CPUs Spark allows this task (``spark.task.cpus``, or the stage-level
    profile's cpus), from the TaskContext; None outside a Spark task (nothing to fit)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return None
    try:
        return max(1, int(ctx.cpus()))
    except Exception:  # noqa: BLE001 - a TaskContext without cpus(): the SparkConf Spark ships to the task
        return max(1, int(ctx.getLocalProperty("spark.task.cpus") or os.environ.get("OMP_NUM_THREADS") or 1))


def fit_threads(n_threads: int) -> int:
    """On executors: give this Python worker ``n_threads`` compute threads instead of one per
    core of the machine: torch's intra-op pool and faiss's OpenMP pool (checked on every call,
    cheap, so a library that changed them is put back), and once per worker the environment
    variables (for libraries not loaded yet), torch's inter-op pool (settable only before its
    first parallel op) and BLAS pools through threadpoolctl when it is installed. Returns the
    count applied."""
    global _threads_set_to
    if "torch" in sys.modules or _importable("torch"):
        import torch

        if torch.get_num_threads() != n_threads:
            torch.set_num_threads(n_threads)
    if "faiss" in sys.modules or _importable("faiss"):
        import faiss

        if faiss.omp_get_max_threads() != n_threads:
            faiss.omp_set_num_threads(n_threads)
    if _threads_set_to == n_threads:
        return n_threads
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n_threads)
    if "torch" in sys.modules:
        with contextlib.suppress(RuntimeError):
            sys.modules["torch"].set_num_interop_threads(n_threads)
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        threadpool_limits(n_threads)
    log.debug("worker %d: %d compute threads", os.getpid(), n_threads)
    _threads_set_to = n_threads
    return n_threads


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def bind_gpu(cfg: GeorankConfig) -> None:
    """On executors: use the GPU Spark assigned to this task (stage-level scheduling)."""
    if not cfg.spark.gpu.enabled:
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is None or not gpus.addresses:
        raise RunError("the accelerator stage asked for a GPU, but Spark assigned none to this task")
    if gpus.addresses[0] not in _gpu_logged:  # once per worker and GPU, not per task
        _gpu_logged.add(gpus.addresses[0])
        log.info("task %s runs on GPU %s", ctx.taskAttemptId() if ctx else "?", gpus.addresses[0])
    if cfg.rank.device == "cuda" or cfg.embed.device == "cuda":
        import torch

        torch.cuda.set_device(int(gpus.addresses[0]))


def gpu_profile(cfg: GeorankConfig):  # type: ignore[no-untyped-def]
    """The accelerator stage's ResourceProfile (task-only: works without dynamic allocation on
    standalone and Kubernetes), or None when the config asks for no GPU."""
    if not cfg.spark.gpu.enabled:
        return None
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    treq = TaskResourceRequests().cpus(1).resource("gpu", cfg.spark.gpu.task_amount)
    return ResourceProfileBuilder().require(treq).build


# Fault injection for the reliability tests, off unless this variable is set in the Python
# workers' environment: "kill-worker-once" ends the Python worker of the accelerator task of
# partition 0 with os._exit, mid-task, on its first attempt only, so that Spark's retry can be
# shown to give the same output as an undisturbed run (tests/reliability/test_crash_and_rerun.py).
FAULT_ENV = "GEORANK_FAULT_INJECT"


def _maybe_kill_worker() -> None:
    if os.environ.get(FAULT_ENV) != "kill-worker-once":
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is not None and ctx.partitionId() == 0 and ctx.attemptNumber() == 0:
        log.warning("fault injection (%s=kill-worker-once): ending this Python worker mid-task", FAULT_ENV)
        os._exit(17)


@contextlib.contextmanager
def executor_errors() -> Iterator[None]:
    """On the driver: re-raise a georank error that an executor raised (a checkpoint that does
    not fit, an index from another embedder, ...) as itself: its class and message, not a Py4J
    stack trace. Spark forwards the Python worker's traceback in the exception text."""
    import georank.errors as E

    try:
        yield
    except E.GeorankError:
        raise
    except Exception as exc:
        for name, message in reversed(re.findall(r"georank\.errors\.(\w+Error): (.+)", str(exc))):
            cls = getattr(E, name, None)
            if isinstance(cls, type) and issubclass(cls, E.GeorankError) and cls is not E.PhotoError:
                raise cls(f"{message.strip()} (raised on an executor; the run stopped, nothing was committed)") from None
        raise


__all__ = ["FAULT_ENV", "bind_gpu", "executor_errors", "executor_logging", "fit_threads", "gpu_profile", "on_executors", "passthrough", "task_cpus"]
