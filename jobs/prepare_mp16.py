"""Prepare the MP16-Pro gallery as the publisher ships it: index the image tar once (no pickle) and
write the gallery table whose image URIs are tar:// members, ready for jobs/build_index.py.

    ./spark-submit.sh jobs/prepare_mp16.py --conf conf/reproduce_georanker.yaml \
        --metadata /data/georanker/mp16/MP16_Pro_filtered.csv --tar /data/georanker/mp16/mp-16-images.tar \
        [--member-prefix ""] [--reindex]

Writes ``<tar>.index.parquet`` with ``<tar>.index.parquet.source.json`` (the archive's size and
S3 ETag or local mtime_ns it was built from) and the Parquet table at ``tables.gallery``. A rerun
reuses the index while the archive is unchanged and scans it again (the log says why) when it
changed or with --reindex. Each image URI is ``tar://<tar>#<member-prefix><IMG_ID>``.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metadata", required=True, help="MP16-Pro metadata CSV (IMG_ID,LAT,LON,neighbourhood,...)")
    p.add_argument("--tar", required=True, help="the image archive, local path or s3:// URI")
    p.add_argument("--member-prefix", default="", help="prefix of the members' names inside the tar, before IMG_ID")
    p.add_argument("--reindex", action="store_true", help="scan the archive again even when its index matches it")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.eval.benchmarks import prepare_mp16_gallery

    summary.update(prepare_mp16_gallery(cfg, metadata_uri=args.metadata, tar_uri=args.tar,
                                        member_prefix=args.member_prefix, reindex=args.reindex))


if __name__ == "__main__":
    sys.exit(run_job("prepare_mp16", main, add_args=add_args))
