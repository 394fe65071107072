"""The nightly geotag job: photos in, predictions and errors out (one Delta commit per table).

    ./spark-submit.sh jobs/geotag.py --conf conf/local.yaml --run-date 2026-11-23 \
        [--photos URI | --catalogue URI [--max-photos N] [--regeotag off|older]] [--mode overwrite|error] [--set k=v ...]

--photos defaults to the config's input.photos; either may hold {run_date} (s3://bucket/untagged/{run_date}/).
--catalogue (default: input.catalogue.uri, when --photos is not given) takes the night's photos from the
catalogue: those without a location and without a prediction or a lasting error from the current versions,
oldest first, at most --max-photos (input.catalogue.max_photos_per_night); --regeotag older then takes the
photos whose newest prediction came from older versions. A catalogue night with nothing due exits 0 and
commits nothing (the summary says so). A rerun of the same --run-date overwrites that
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


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of photos, at least 1, got {text!r}")
    return int(text)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-date", required=True, type=run_date_arg, help="YYYY-MM-DD")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--photos", default=None, help="table, folder of images or s3:// prefix; may hold {run_date}")
    source.add_argument("--catalogue", default=None,
                        help="the catalogue (Delta/Parquet table or table name): geotag its photos that are due (input.catalogue.*)")
    p.add_argument("--max-photos", type=_positive, default=None,
                   help="at most this many catalogue photos tonight, oldest first (input.catalogue.max_photos_per_night)")
    p.add_argument("--regeotag", choices=["off", "older"], default=None,
                   help="older: also retake catalogue photos predicted by older versions (input.catalogue.regeotag)")
    p.add_argument("--mode", choices=["overwrite", "error", "replace"], default="overwrite",
                   help="overwrite: replace this run date's rows (replace: the same, older word); error: refuse if it has rows")
    p.add_argument("--allow-empty", action="store_true",
                   help="commit the night even when no photo was read (by default an empty input fails the run)")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.demo.setup import ensure_demo
    from georank.spark.geotag import run_geotag
    from georank.spark.session import get_spark

    if args.max_photos is not None:
        cfg.input.catalogue.max_photos_per_night = args.max_photos  # validated: at least 1
    if args.regeotag is not None:
        cfg.input.catalogue.regeotag = args.regeotag
    catalogue = args.catalogue or (None if args.photos else cfg.input.catalogue.uri)
    if catalogue is None and (args.max_photos is not None or args.regeotag is not None):
        from georank.errors import ConfigError

        raise ConfigError("--max-photos and --regeotag apply to catalogue nights: expected --catalogue or "
                          "input.catalogue.uri, got --photos or neither")
    if cfg.demo.ensure:
        summary["demo"] = ensure_demo(cfg)
    spark = get_spark(cfg)
    summary.update(
        run_geotag(
            spark,
            cfg,
            photos_uri=None if catalogue else args.photos or cfg.input.photos,
            catalogue_uri=catalogue,
            run_date=args.run_date,
            run_id=summary["run_id"],
            mode="error" if args.mode == "error" else "overwrite",
            allow_empty=args.allow_empty,
        )
    )


if __name__ == "__main__":
    sys.exit(run_job("geotag", main, add_args=add_args))
