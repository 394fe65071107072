"""Build the gallery index: embed the gallery, write its embeddings and errors, build FAISS shards.

    ./spark-submit.sh jobs/build_index.py --conf conf/local.yaml \
        [--gallery URI] [--mode error|overwrite] [--run-date YYYY-MM-DD] [--set k=v ...]

--gallery defaults to tables.gallery (Delta or Parquet, schema.GALLERY); shards and manifest.json
go to index.uri (folder or s3://). --mode error (the default) refuses when an index exists there;
overwrite commits a new version beside it. Prints one JSON line: read = embedded + errors.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_date_arg, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", default=None, help="gallery table URI (default: tables.gallery)")
    p.add_argument("--mode", choices=["error", "overwrite"], default="error")
    p.add_argument("--run-date", type=run_date_arg, default=None, help="date of the gallery_errors rows (YYYY-MM-DD)")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.spark.index_job import run_build_index
    from georank.spark.session import get_spark

    gallery_version = None
    if cfg.demo.ensure:  # the embedded demo: its gallery photos and tiny CLIP are made if missing
        from georank.demo.setup import ensure_demo_inputs

        world, summary["demo"] = ensure_demo_inputs(cfg)
        if (args.gallery or cfg.resolve(cfg.tables.gallery)) == str(world.gallery_table):
            gallery_version = world.world_id
    spark = get_spark(cfg)
    summary.update(
        run_build_index(
            spark, cfg, gallery_uri=args.gallery, mode=args.mode, run_date=args.run_date, run_id=summary["run_id"],
            gallery_version=gallery_version,
        )
    )


if __name__ == "__main__":
    sys.exit(run_job("build_index", main, add_args=add_args))
