"""The training loop: AdamW, a linear schedule, clipping, accumulation, checkpoints and resume.

:func:`run_loop` trains whatever parameters it is given on a stream of encoded groups with the
GeoRanker loss (:func:`georank.losses.rank_loss`): the LoRA stage (:func:`train_lora`, what
``jobs/train_ranker.py`` runs). The demo's warm-up (:mod:`georank.train.pretrain`) has its own
loop: another loss, no checkpoints.

- AdamW (``train.weight_decay``), one parameter group per learning rate (``train.lr`` for
  LoRA, ``train.head_lr`` for the score head when set);
- linear warm-up over ``train.warmup_ratio`` of the steps, then linear decay to 0;
- ``train.grad_accum`` micro-batches of ``train.queries_per_step`` groups per optimiser step,
  gradients clipped to ``train.max_grad_norm``;
- bf16 autocast where the device supports it (``train.precision``);
- a progress line every ``train.log_every`` steps (loss, groups/s, learning rate);
- a checkpoint every ``train.checkpoint_every`` steps (:mod:`georank.train.checkpoint`), resumed
  from the newest one: parameters, optimiser, scheduler, RNG and the data position.

Several processes (TorchDistributor): each rank reads its own shard of the stream and gradients
are averaged with ``all_reduce`` before clipping; rank 0 writes checkpoints and the adapter.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from georank.config import TrainConfig
from georank.losses import rank_loss
from georank.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from georank.train.dataset import TrainItem

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    steps: int  # optimiser steps done in total (after resume)
    groups: int  # groups trained on in this process
    seconds: float
    last_loss: float
    resumed_from: str | None


class StopTraining(Exception):
    """Raised by a ``on_step`` hook to stop (tests use it to simulate a crash)."""


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warm = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return factor


def autocast_for(cfg: TrainConfig, device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when asked, or on ``auto`` where the GPU supports bf16; else nothing."""
    use = cfg.precision == "bfloat16" or (
        cfg.precision == "auto" and device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    return torch.autocast(device_type=device, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def _all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def run_loop(
    *,
    module: torch.nn.Module,
    param_groups: list[dict[str, Any]],
    trainable: dict[str, torch.nn.Parameter],
    score: Callable[[list[Any]], torch.Tensor],
    stream: Callable[[int], Iterator[TrainItem]],
    cfg: TrainConfig,
    steps: int,
    checkpoint_dir: Path | None,
    device: str = "cpu",
    is_main: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> LoopResult:
    """Train ``param_groups`` for ``steps`` optimiser steps (resuming from ``checkpoint_dir``).

    ``score(list of EncodedQuery) -> (b, g)`` scores; ``stream(start)`` yields this rank's items
    from position ``start``; ``trainable`` names every trained parameter (for checkpoints).
    """
    params = [p for g in param_groups for p in g["params"]]
    optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(steps, cfg.warmup_ratio))
    step, position, resumed_from = 0, 0, None
    ckpt = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        r = load_checkpoint(ckpt, trainable=trainable, optimizer=optimizer, scheduler=scheduler)
        step, position, resumed_from = r.step, r.position, str(r.path)
    else:
        torch.manual_seed(cfg.seed)
    module.train()
    items = stream(position)
    started = time.monotonic()
    groups_done, last_loss, window_loss, window_groups, window_t = 0, math.nan, 0.0, 0, time.monotonic()
    while step < steps:
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            batch: list[TrainItem] = []
            while len(batch) < cfg.queries_per_step:
                item = next(items)
                position = item.position + 1
                if item.encoded is not None:
                    batch.append(item)
            with autocast_for(cfg, device):
                scores = score([it.encoded for it in batch])
            dist = torch.as_tensor(np.stack([it.dist_km for it in batch]), device=scores.device)
            loss = rank_loss(scores.float(), dist, top_k=cfg.top_k, lam=cfg.lam).total / cfg.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            groups_done += len(batch)
            window_groups += len(batch)
        _all_reduce_grads(params)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        last_loss = step_loss
        window_loss += step_loss
        if is_main and (step % cfg.log_every == 0 or step == steps):
            n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
            dt = max(time.monotonic() - window_t, 1e-9)
            log.info(
                "train step %d/%d (%.0f%%): loss %.4f, %.2f groups/s, lr %s",
                step, steps, 100.0 * step / steps, window_loss / n, window_groups / dt,
                ", ".join(f"{g['lr']:.2e}" for g in optimizer.param_groups),
            )
            window_loss, window_groups, window_t = 0.0, 0, time.monotonic()
        if checkpoint_dir is not None and is_main and (step % cfg.checkpoint_every == 0 or step == steps):
            save_checkpoint(checkpoint_dir, step=step, position=position, trainable=dict(trainable),
                            optimizer=optimizer, scheduler=scheduler, keep=cfg.keep_checkpoints)
        if on_step is not None:
            on_step(step)
    module.eval()
    return LoopResult(step, groups_done, time.monotonic() - started, last_loss, resumed_from)


__all__ = ["LoopResult", "StopTraining", "autocast_for", "linear_schedule", "run_loop"]
