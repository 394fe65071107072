"""The nightly geotag job: photos in, predictions and errors out (one Delta commit per table).

    ./spark-submit.sh jobs/geotag.py --conf conf/local.yaml --run-date 2026-11-23 \
        [--photos URI] [--mode overwrite|error] [--set k=v ...]

--photos defaults to the config's input.photos; a rerun of the same --run-date overwrites that
date's rows in one commit (--mode overwrite, the default; other dates are never touched) or
refuses (--mode error). The words are the other jobs' (build_index, build_cells,
build_training_data: error | overwrite); --mode replace is still accepted as overwrite, for
launch scripts written before.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_date_arg, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-date", required=True, type=run_date_arg, help="YYYY-MM-DD")
    p.add_argument("--photos", default=None, help="table, folder of images or s3:// prefix")
    p.add_argument("--mode", choices=["overwrite", "error", "replace"], default="overwrite",
                   help="overwrite: replace this run date's rows (replace: the same, older word); error: refuse if it has rows")
    p.add_argument("--allow-empty", action="store_true",
                   help="commit the night even when no photo was read (by default an empty input fails the run)")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.demo_setup import ensure_demo
    from georank.spark.geotag import run_geotag
    from georank.spark.session import get_spark

    if cfg.demo.ensure:
        summary["demo"] = ensure_demo(cfg)
    spark = get_spark(cfg)
    summary.update(
        run_geotag(
            spark,
            cfg,
            photos_uri=args.photos or cfg.input.photos,
            run_date=args.run_date,
            run_id=summary["run_id"],
            mode="error" if args.mode == "error" else "overwrite",
            allow_empty=args.allow_empty,
        )
    )


if __name__ == "__main__":
    sys.exit(run_job("geotag", main, add_args=add_args))
