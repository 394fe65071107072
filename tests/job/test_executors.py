"""Executor plumbing: each Python worker's compute threads fit the task's CPU allowance."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pytest

from georank.spark import executors as X


def test_fit_threads_sets_torch_faiss_and_the_environment() -> None:
    """Outside Spark: fit_threads gives torch's and faiss's pools exactly n threads and sets the
    variables libraries read at start-up; a pool changed afterwards is put back on the next call."""
    import faiss
    import torch

    before = (torch.get_num_threads(), faiss.omp_get_max_threads(), {v: os.environ.get(v) for v in X.THREAD_ENV_VARS})
    try:
        X._threads_set_to = None
        want = 3 if before[0] != 3 else 2
        assert X.fit_threads(want) == want
        assert torch.get_num_threads() == want and faiss.omp_get_max_threads() == want
        assert all(os.environ[v] == str(want) for v in X.THREAD_ENV_VARS)
        torch.set_num_threads(1)  # something else in the worker changes the pool
        faiss.omp_set_num_threads(1)
        X.fit_threads(want)
        assert torch.get_num_threads() == want and faiss.omp_get_max_threads() == want
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
        for v, old in before[2].items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
        X._threads_set_to = None


def test_task_cpus_is_none_outside_a_task() -> None:
    assert X.task_cpus() is None  # the driver (or a test calling the function) is left alone


@pytest.mark.spark
def test_thread_settings_reach_the_workers(spark, local_cfg) -> None:  # type: ignore[no-untyped-def]
    """Through mapInArrow: every worker, even one whose pools were set to 3 threads before the
    task ran, computes with spark.task.cpus threads (torch, faiss/OpenMP and the environment)."""
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))

    def report(table: pa.Table, cfg) -> pa.Table:  # type: ignore[no-untyped-def]
        import faiss
        import torch
        from pyspark import TaskContext

        n = table.num_rows
        return pa.table(
            {
                "task_cpus": [TaskContext.get().cpus()] * n,
                "torch_threads": [torch.get_num_threads()] * n,
                "faiss_threads": [faiss.omp_get_max_threads()] * n,
                "omp_env": [os.environ.get("OMP_NUM_THREADS", "")] * n,
                "pid": [os.getpid()] * n,
            }
        )

    inner = X.on_executors(local_cfg.model_dump(), report, accelerator=False)

    def oversubscribed_worker(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import faiss
        import torch

        torch.set_num_threads(3)  # as a worker on a many-core host starts
        faiss.omp_set_num_threads(3)
        yield from inner(batches)

    rows = (
        spark.range(0, 8, numPartitions=4)
        .mapInArrow(oversubscribed_worker, "task_cpus bigint, torch_threads bigint, faiss_threads bigint, omp_env string, pid bigint")
        .collect()
    )
    assert len(rows) == 8
    assert {r.task_cpus for r in rows} == {task_cpus}
    assert {r.torch_threads for r in rows} == {task_cpus}, rows
    assert {r.faiss_threads for r in rows} == {task_cpus}, rows
    assert {r.omp_env for r in rows} == {str(task_cpus)}, rows
