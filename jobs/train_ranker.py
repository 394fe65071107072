"""Train the ranker: LoRA (r=16, alpha=32, dropout 0.05 on q/k/v) + the score head on the
training groups, written as a PEFT adapter in the released checkpoint's layout.

    ./spark-submit.sh jobs/train_ranker.py --conf conf/local.yaml \
        [--data URI] [--out DIR] [--steps N] [--set train.k=v ...]

--data defaults to train.data (built by jobs/build_training_data.py), --out to train.output_uri;
the base model is rank.base_model_uri. Checkpoints go to train.checkpoint_dir every
train.checkpoint_every steps; a rerun resumes from the newest. With train.distributed.enabled the
processes are started by Spark's TorchDistributor; otherwise one local process trains.
"""

from __future__ import annotations

import argparse
import sys

from georank.cli import Summary, run_job
from georank.config import GeorankConfig


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="training groups (Delta/Parquet; default train.data)")
    p.add_argument("--out", default=None, help="adapter directory to write (default train.output_uri)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default train.steps)")


def main(args: argparse.Namespace, cfg: GeorankConfig, summary: Summary) -> None:
    from pathlib import Path

    from georank.storage import local_path

    base_dir = str(local_path(cfg.resolve(cfg.rank.base_model_uri), cfg.s3))
    data_uri = args.data or cfg.resolve(cfg.train.data)
    out_dir = args.out or cfg.resolve(cfg.train.output_uri)
    ckpt = cfg.resolve(cfg.train.checkpoint_dir)
    summary.update(base_model=base_dir, training_data=data_uri, adapter=out_dir)
    if cfg.train.distributed.enabled:
        from georank.spark.session import get_spark
        from georank.spark.train import run_distributed

        get_spark(cfg)
        summary.update(run_distributed(cfg, base_dir=base_dir, data_uri=data_uri, out_dir=out_dir,
                                       checkpoint_dir=ckpt, steps=args.steps))
        return
    from georank.train.stages import train_lora

    result, _ = train_lora(cfg, base_dir=Path(base_dir), data_uri=data_uri, out_dir=Path(out_dir),
                           checkpoint_dir=Path(ckpt), steps=args.steps)
    summary.update(steps=result.steps, groups=result.groups, last_loss=round(result.last_loss, 4),
                   train_seconds=round(result.seconds, 1), resumed_from=result.resumed_from)


if __name__ == "__main__":
    sys.exit(run_job("train_ranker", main, add_args=add_args))
