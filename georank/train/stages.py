"""The training stages, driver or TorchDistributor-process side.

- :func:`train_lora`: what ``jobs/train_ranker.py`` runs: LoRA (``train.lora``) on a base model +
  the score head, on the groups at ``train.data`` (or a GeoRanking file), writing the PEFT
  adapter to ``train.output_uri`` and resumable checkpoints to ``train.checkpoint_dir``.

The demo's warm-up (standing in for pretraining) is :mod:`georank.train.pretrain`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from georank.config import GeorankConfig
from georank.train.dataset import GroupStream, TrainItem
from georank.train.loop import LoopResult, run_loop

log = logging.getLogger(__name__)


def make_stream(
    cfg: GeorankConfig, *, base_dir: Path, data_uri: str, processor: Any = None, rank: int = 0, world: int = 1
) -> Callable[[int], Iterator[TrainItem]]:
    """``stream(start)``: this rank's encoded groups from position ``start`` (DataLoader workers
    from ``train.num_workers``; items come back in stream order either way)."""

    def stream(start: int) -> Iterator[TrainItem]:
        ds = GroupStream(
            data_uri,
            base_dir=str(base_dir),
            rank_cfg=cfg.rank,
            decode_cfg=cfg.decode,
            s3=cfg.s3,
            negatives_from=cfg.retrieve.negatives_from,
            negatives_count=cfg.retrieve.negatives_count,
            seed=cfg.train.seed,
            rank=rank,
            world=world,
            start=start,
            processor=processor,
        )
        if cfg.train.num_workers == 0:
            return iter(ds)
        from torch.utils.data import DataLoader

        loader = DataLoader(ds, batch_size=None, num_workers=cfg.train.num_workers, collate_fn=lambda x: x)
        return iter(loader)

    return stream


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_lora(
    cfg: GeorankConfig,
    *,
    base_dir: Path,
    data_uri: str,
    out_dir: Path | None,
    checkpoint_dir: Path | None,
    steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
    processor: Any = None,
) -> tuple[LoopResult, Any]:
    """LoRA + head training; returns the loop's result and the PEFT model (adapter written to
    ``out_dir``). ``processor``: the base model's processor when already loaded."""
    from georank.rank.tokenizer import load_processor
    from georank.train.batch import GroupScorer
    from georank.train.model import build_trainable, head_parameters, lora_parameters, save_adapter

    t = cfg.train
    rank, world = _distributed()
    peft_model, ranker = build_trainable(Path(base_dir), t)
    processor = processor or load_processor(Path(base_dir), min_pixels=cfg.rank.min_pixels, max_pixels=cfg.rank.max_pixels)
    groups = [
        {"params": lora_parameters(peft_model), "lr": t.lr},
        {"params": head_parameters(peft_model), "lr": t.head_lr or t.lr},
    ]
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    result = run_loop(
        module=peft_model,
        param_groups=groups,
        trainable=trainable,
        score=GroupScorer(ranker, processor, cfg.rank),
        stream=make_stream(cfg, base_dir=Path(base_dir), data_uri=data_uri, processor=processor, rank=rank, world=world),
        cfg=t,
        steps=steps or t.steps,
        checkpoint_dir=checkpoint_dir,
        device=t.device,
        is_main=rank == 0,
        on_step=on_step,
    )
    if out_dir is not None and rank == 0:
        save_adapter(peft_model, Path(out_dir), base_dir=Path(base_dir))
    return result, peft_model


__all__ = ["make_stream", "train_lora"]
