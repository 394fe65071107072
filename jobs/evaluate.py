"""The evaluate job: accuracy of every method (NN, [L]kNN, the ranker, the full method) on a benchmark.

    ./spark-submit.sh jobs/evaluate.py --conf conf/local.yaml [--benchmark CSV --images DIR_OR_URI] \
        [--candidates georank] [--set k=v ...]

Without --benchmark on the embedded default (demo.ensure), the demo world's query photos are the
benchmark (their truth is known). Prints the accuracy table, then the JSON summary line; writes
the tables.eval_results Delta table and the report folder (evaluate.report_dir/<run id>/).
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default=None, help="benchmark CSV (IM2GPS3K, id/lat/lon CSV, or the reference's file)")
    p.add_argument("--images", default=None, help="folder or s3:// prefix holding the benchmark's images")
    p.add_argument("--candidates", choices=["georank", "reference"], default="georank",
                   help="georank: retrieve candidates here; reference: rank the reference file's precomputed candidates")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.demo.setup import ensure_demo
    from georank.errors import ConfigError
    from georank.spark.evaluate import demo_benchmark, run_evaluate
    from georank.spark.session import get_spark

    if cfg.demo.ensure:
        summary["demo"] = ensure_demo(cfg)
    benchmark, images = args.benchmark, args.images
    if benchmark is None:
        if not cfg.demo.ensure:
            raise ConfigError("no --benchmark given: expected --benchmark CSV --images DIR, or demo.ensure: true for the demo world")
        benchmark, demo_images = demo_benchmark(cfg)
        images = images or demo_images
    if images is None:
        raise ConfigError("no --images given: expected the folder or s3:// prefix that holds the benchmark's images")
    spark = get_spark(cfg)
    result = run_evaluate(spark, cfg, benchmark_uri=benchmark, images_uri=images, run_id=summary["run_id"],
                          candidates=args.candidates)
    table = result.pop("table_markdown")
    sys.stdout.write(table + "\n")  # the accuracy table for every method, above the JSON summary line
    summary.update(result)


if __name__ == "__main__":
    sys.exit(run_job("evaluate", main, add_args=add_args))
