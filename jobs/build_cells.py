"""Build the cell prototypes' index: adaptive S2 cells over the gallery, a proxy classifier whose
l2-normalised weights are the cells' prototypes, optional aerial keys, all as a sharded FAISS index.

    ./spark-submit.sh jobs/build_cells.py --conf conf/local.yaml [--mode error|overwrite] [--set k=v ...]

The gallery's embeddings and coordinates are read back from the gallery index (index.uri, a flat
index), so the prototypes live in the index's embedding space; the result goes to
candidates.prototypes.uri (manifest.json written last). With candidates.prototypes.aerial_uri set,
each aerial tile's level-16 cell also gets a key z_aerial + kappa * z_prototype. Runs on the driver
(no Spark session is started). Prints one JSON line: cells, aerial keys, the classifier's top-1.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["error", "overwrite"], default="error")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from georank.cells import build_cells

    if cfg.demo.ensure:  # the embedded demo: its gallery index (and what it needs) is made if missing
        from georank.demo.setup import ensure_demo

        demo_cfg = cfg.model_copy(deep=True)
        demo_cfg.candidates.prototypes.enabled = False  # this job builds the prototypes' index itself, below
        summary["demo"] = ensure_demo(demo_cfg)
    summary.update(build_cells(cfg, mode=args.mode))


if __name__ == "__main__":
    sys.exit(run_job("build_cells", main, add_args=add_args))
