"""Build the ranker's training groups (schema.TRAINING_GROUPS) as a Delta table.

    ./spark-submit.sh jobs/build_training_data.py --conf conf/local.yaml \
        [--queries N] [--mode error|overwrite] [--georanking FILE --images ROOT] [--set k=v ...]

From the gallery (tables.gallery) and its index (index.uri): N sampled gallery photos (default
train.queries, else all), each with its retrieved neighbours, itself removed by id, and the group
train.grouping picks. With --georanking (or train.georanking): the published GeoRanking parquet
instead (position 0 of each ref list skipped, as the reference). Written to train.data; the
summary gives the Delta version.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", type=int, default=None, help="gallery photos sampled as queries (default train.queries)")
    p.add_argument("--mode", choices=["error", "overwrite"], default="error")
    p.add_argument("--georanking", default=None, help="GeoRanking parquet (default train.georanking)")
    p.add_argument("--images", default=None, help="folder of the GeoRanking images (default train.georanking_images)")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.train.build import build_georanking_data, build_training_data

    georanking = args.georanking or cfg.train.georanking
    if georanking:
        summary.update(build_georanking_data(cfg, uri=georanking, images_root=args.images, mode=args.mode,
                                             label=summary["run_id"]))
        return
    if cfg.demo.ensure:
        from georank.demo.setup import ensure_demo

        summary["demo"] = ensure_demo(cfg)
    summary.update(build_training_data(cfg, mode=args.mode, n_queries=args.queries, label=summary["run_id"]))


if __name__ == "__main__":
    sys.exit(run_job("build_training_data", main, add_args=add_args))
