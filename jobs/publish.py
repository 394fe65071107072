"""Hand the answers back: the latest predictions into the catalogue's location columns (ONE Delta MERGE).

    ./spark-submit.sh jobs/publish.py --conf conf/local.yaml --catalogue URI \
        [--min-confidence C] [--max-spread-km S] [--dry-run] [--set k=v ...]

Only rows whose location is null at MERGE time, or whose location georank published from an older
prediction, are written; a location a camera or a person set is never touched. A rerun changes
nothing. --min-confidence / --max-spread-km default to publish.min_confidence / publish.max_spread_km;
--catalogue to input.catalogue.uri when the config has it. --dry-run counts without writing.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_job
from georank.config import GeorankConfig


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _km(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a distance in km >= 0, got {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a distance in km >= 0, got {text!r}")
    return value


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalogue", default=None, help="the catalogue's Delta table (default: input.catalogue.uri)")
    p.add_argument("--min-confidence", type=_fraction, default=None,
                   help="publish predictions with confidence >= C (default: publish.min_confidence)")
    p.add_argument("--max-spread-km", type=_km, default=None,
                   help="and spread_km <= S (default: publish.max_spread_km; null: no limit)")
    p.add_argument("--dry-run", action="store_true", help="count what would be published; write nothing")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.spark.publish import catalogue_uri, run_publish
    from georank.spark.session import get_spark

    uri = catalogue_uri(cfg, args.catalogue)
    spark = get_spark(cfg)
    summary.update(
        run_publish(
            spark,
            cfg,
            catalogue=uri,
            run_id=summary["run_id"],
            min_confidence=args.min_confidence,
            max_spread_km=args.max_spread_km,
            dry_run=args.dry_run,
        )
    )


if __name__ == "__main__":
    sys.exit(run_job("publish", main, add_args=add_args))
