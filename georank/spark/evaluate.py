"""The evaluate job's Spark layer: benchmark photos in, every method's accuracy out.

Driver side: :func:`run_evaluate` reads the benchmark file, partitions its photos, runs
:func:`georank.eval.core.evaluate_partition` in ONE ``mapInArrow`` stage (decode, embed,
retrieve, then NN, [L]kNN, the ranker and the full method on the same neighbours), collects
the EVAL_PREDICTIONS rows (a benchmark is thousands of rows), checks that every benchmark
row has exactly one row per method, and computes the metrics over EVERY row on the driver.
Outputs: the EVAL_RESULTS Delta table (``tables.eval_results``, one append per run labelled with
the run id and checked in the history, :func:`georank.write.commit`) and the report folder ``<evaluate.report_dir>/<run id>/``.

It reads no nightly table: its predictions are its own. The closure shipped to executors
captures only the config as a dict and the run info.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from georank import schema as S
from georank import write
from georank.config import GeorankConfig
from georank.errors import InputError, RunError
from georank.eval.benchmarks import Benchmark, read_benchmark
from georank.run_info import RunInfo
from georank.spark.executors import executor_errors, gpu_profile, on_executors
from georank.storage import pin_artifacts

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

def _evaluate_step(run: RunInfo, *, reference: bool) -> Callable[[pa.Table, GeorankConfig], pa.Table]:
    """The core function of the evaluate stage (PHOTOS, or REFERENCE_FRAME rows with ``reference``
    -> EVAL_PREDICTIONS), for :func:`georank.spark.executors.on_executors`. Runs on executors."""

    def evaluate(table: pa.Table, cfg: GeorankConfig) -> pa.Table:
        from georank.eval.core import evaluate_partition
        from georank.eval.reference import reference_partition
        from georank.storage import pinned

        with pinned(run.artifacts):  # exactly the models the driver pinned, or a RunError naming one
            return (reference_partition if reference else evaluate_partition)(table, cfg, run)

    return evaluate


def photos_of(bench: Benchmark, images_uri: str) -> pa.Table:
    """PHOTOS rows of a benchmark: ``uri = <images>/<image>`` (a local folder or an s3:// prefix)."""
    root = images_uri.rstrip("/")
    names = bench.truth.column("image").to_pylist()
    return pa.table(
        {"photo_id": bench.truth.column("photo_id"), "uri": [f"{root}/{n}" for n in names],
         "image_bytes": pa.nulls(len(names), pa.binary())},
        schema=S.PHOTOS,
    )


def demo_benchmark(cfg: GeorankConfig) -> tuple[str, str]:
    """The demo world's benchmark: ``<demo.root>/queries_benchmark.csv`` (IMG_ID,LAT,LON) written
    from the known truth of its query photos (queries_truth.parquet), and the images folder."""
    import csv

    import pyarrow.parquet as pq

    root = Path(cfg.resolve(cfg.demo.root))
    truth = pq.read_table(root / "queries_truth.parquet", columns=["photo_id", "lat_deg", "lon_deg"])
    out = root / "queries_benchmark.csv"
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["IMG_ID", "LAT", "LON"])
        for r in truth.to_pylist():
            w.writerow([f"{r['photo_id']}.jpg", repr(r["lat_deg"]), repr(r["lon_deg"])])
    return str(out), str(root / "queries")


def _check_complete(preds: pa.Table, truth: pa.Table, methods: tuple[str, ...]) -> None:
    want = len(methods) * truth.num_rows
    ids = set(truth.column("photo_id").to_pylist())
    pairs = list(zip(preds.column("photo_id").to_pylist(), preds.column("method").to_pylist()))
    if preds.num_rows != want or len(set(pairs)) != want or not {p for p, _ in pairs} <= ids:
        raise RunError(
            f"evaluate: expected one prediction row per benchmark photo and method ({truth.num_rows} x "
            f"{len(methods)} = {want}), got {preds.num_rows} rows ({len(set(pairs))} distinct)"
        )


def check_compare_adapters(cfg: GeorankConfig) -> None:
    """Fail at start-up, naming the key, when a local ``evaluate.compare_adapters`` entry is no
    PEFT adapter directory (an s3:// one is fetched by the executors and checked there)."""
    from georank.errors import ConfigError

    for name, uri in cfg.evaluate.compare_adapters.items():
        path = cfg.resolve(uri)
        if "://" in path and not path.startswith("file://"):
            continue
        local = Path(path.removeprefix("file://"))
        if not (local / "adapter_config.json").is_file():
            raise ConfigError(
                f"config key 'evaluate.compare_adapters.{name}': expected a PEFT adapter directory (with "
                f"adapter_config.json), got {local}" + (" (missing)" if not local.exists() else "")
            )


def _adapter_versions(preds: pa.Table) -> dict[str, str | None]:
    """Per method, the adapter version its predictions were made with (the first non-null)."""
    out: dict[str, str | None] = {}
    for r in preds.select(["method", "adapter_version"]).to_pylist():
        if out.get(r["method"]) is None:
            out[r["method"]] = r["adapter_version"]
    return out


def _append_results(spark: "SparkSession", table: pa.Table, uri: str, *, run_id: str, cfg: GeorankConfig) -> int:
    """Append the run's EVAL_RESULTS rows in one commit through the one writer (georank.write),
    labelled with the run id and checked in the history. No transaction id: every evaluate run is
    its own append, and ONE app id shared by every run (as before) made Delta silently drop the
    rows of a run that started first and committed last."""
    df = spark.createDataFrame(table.to_pylist(), S.spark_schema(S.EVAL_RESULTS))
    return write.commit(df.coalesce(1), uri, table="eval_results", mode="append", label=run_id, cfg=cfg)


def run_evaluate(
    spark: "SparkSession",
    cfg: GeorankConfig,
    *,
    benchmark_uri: str,
    images_uri: str,
    run_id: str,
    candidates: Literal["georank", "reference"] = "georank",
) -> dict[str, Any]:
    """Evaluate every method on one benchmark; returns the summary (headline numbers, paths)."""
    from georank.candidates import check_sources
    from georank.eval.core import methods_of
    from georank.eval.metric import accuracy_from_errors, method_errors
    from georank.eval.reference import REFERENCE_FRAME, reference_frame, reference_methods
    from georank.eval.render import accuracy_lines, write_report
    from georank.eval.report import (
        EvalReport,
        confidence_calibration,
        results_table,
        skip_calibration,
        summary_numbers,
    )
    from georank.index import read_manifest

    if candidates == "georank":
        check_sources(cfg)
    check_compare_adapters(cfg)
    results_uri = cfg.resolve(cfg.tables.eval_results)
    t0 = time.monotonic()
    bench = read_benchmark(cfg.resolve(benchmark_uri), cfg.evaluate, cfg.s3)
    reference = candidates == "reference"
    if reference and bench.reference is None:
        raise InputError(
            f"--candidates reference: expected the reference's evaluation file (with candidate_gps_lis, "
            f"candidate_text_lis, ...), got a {bench.layout} file: {benchmark_uri}"
        )
    manifest = None if reference else read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    run = RunInfo(run_id=run_id, run_date=dt.date.today(), index_manifest=manifest.to_dict() if manifest else None,
                  artifacts=pin_artifacts(cfg, embed=not reference, compare_adapters=True))
    photos = photos_of(bench, cfg.resolve(images_uri))
    methods = reference_methods(cfg) if reference else methods_of(cfg)
    if reference:
        assert bench.reference is not None
        photos = reference_frame(photos, bench.reference)
    n_parts = max(1, math.ceil(photos.num_rows / cfg.input.photos_per_partition))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(cfg.input.photos_per_partition, cfg.input.photos_per_batch)))
    frame_schema = REFERENCE_FRAME if reference else S.PHOTOS
    df = spark.createDataFrame(photos.to_pylist(), S.spark_schema(frame_schema)).repartition(n_parts)
    # one accelerator stage (GPU profile when spark.gpu.enabled), the shared executor plumbing
    out = df.mapInArrow(on_executors(cfg.model_dump(), _evaluate_step(run, reference=reference), accelerator=True),
                        S.spark_schema(S.EVAL_PREDICTIONS), profile=gpu_profile(cfg))
    with executor_errors():
        preds = out.toArrow().cast(S.EVAL_PREDICTIONS)
    seconds_compute = time.monotonic() - t0
    _check_complete(preds, bench.truth, methods)

    radii = tuple(float(r) for r in cfg.evaluate.radii_km)
    errors = method_errors(preds, bench.truth, methods)
    acc = {m: accuracy_from_errors(e, radii) for m, e in errors.items()}
    for m, a in acc.items():  # honest numbers: every row counted at every radius
        if a.n != bench.truth.num_rows or any(h + mi != a.n for h, mi in zip(a.hits, a.misses)):
            raise RunError(f"evaluate: method {m}: expected n = hits + misses = {bench.truth.num_rows}, got {a}")
    full = {r["photo_id"]: r for r in preds.to_pylist() if r["method"] == "full"}
    ids = bench.truth.column("photo_id").to_pylist()
    first: dict[str, Any] = next((r for r in preds.to_pylist() if r["method"] == "ranker" and r["model_version"]), {})
    rep = EvalReport(
        benchmark=bench.name, candidates=candidates, run_id=run_id, accuracy=acc, errors_km=errors,
        calibration=confidence_calibration(preds, bench.truth, errors["full"], cfg.evaluate.calibration_radius_km),
        skip=skip_calibration(preds, bench.truth, errors, radii),
        versions={k: first.get(k) for k in ("model_version", "adapter_version", "embed_version", "index_version")},
        adapter_versions=_adapter_versions(preds),
        counts=bench.counts,
        truth_latlon_deg=np.column_stack([bench.truth.column("lat_deg").to_numpy(), bench.truth.column("lon_deg").to_numpy()]),
        full_latlon_deg=np.array([[np.nan if full[p]["lat_deg"] is None else full[p]["lat_deg"],
                                   np.nan if full[p]["lon_deg"] is None else full[p]["lon_deg"]] for p in ids], dtype=np.float64),
    )
    t1 = time.monotonic()
    version = _append_results(spark, results_table(rep, run_at=dt.datetime.now(dt.UTC)), results_uri,
                              run_id=run_id, cfg=cfg)
    t2 = time.monotonic()
    report_dir = Path(cfg.resolve(cfg.evaluate.report_dir)) / run_id
    paths = write_report(rep, report_dir, radius_km=cfg.evaluate.calibration_radius_km)
    seconds = {"compute": seconds_compute, "write": t2 - t1, "report": time.monotonic() - t2, "total": time.monotonic() - t0}
    failed = {r["error_stage"] for r in preds.to_pylist() if r["method"] == "full" and r["error_stage"]}
    return {
        "benchmark": bench.name,
        "layout": bench.layout,
        "candidates": candidates,
        "rows": bench.truth.num_rows,
        "photos_failed": int(sum(1 for r in preds.to_pylist() if r["method"] == "full" and r["error_stage"])),
        "failed_stages": sorted(failed),
        "benchmark_counts": bench.counts,
        "methods": summary_numbers(rep),
        "skip_rate": round(rep.skip["skip_rate"], 4),
        "eval_results": results_uri,
        "table_version": version,
        "report": paths["report_html"],
        "report_files": paths,
        "partitions": n_parts,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "table_markdown": "\n".join(accuracy_lines(rep)),  # printed by the job above its JSON line, then dropped
    }


__all__ = ["check_compare_adapters", "demo_benchmark", "photos_of", "run_evaluate"]
