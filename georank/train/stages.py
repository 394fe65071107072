"""The training stages, driver or TorchDistributor-process side.

- :func:`train_lora`: what ``jobs/train_ranker.py`` runs: LoRA (``train.lora``) on a base model +
  the score head, on the groups at ``train.data`` (or a GeoRanking file), writing the PEFT
  adapter to ``train.output_uri`` and resumable checkpoints to ``train.checkpoint_dir``.
- :func:`warmup_all_weights`: every weight of a (tiny) base model trained on the same loss and
  saved as a new base directory. Only the demo uses it, standing in for the pretraining a real
  Qwen2-VL has: a random tiny backbone with LoRA alone barely learns this task.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from georank.config import GeorankConfig
from georank.train.dataset import GroupStream, TrainItem
from georank.train.loop import LoopResult, run_loop

log = logging.getLogger(__name__)


def make_stream(
    cfg: GeorankConfig, *, base_dir: Path, data_uri: str, processor: Any = None, rank: int = 0, world: int = 1,
    same_text: bool = False,
) -> Callable[[int], Iterator[TrainItem]]:
    """``stream(start)``: this rank's encoded groups from position ``start`` (DataLoader workers
    from ``train.num_workers``; items come back in stream order either way). ``same_text``: see
    :func:`georank.train.dataset.row_to_query`."""

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
            same_text=same_text,
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


def warmup_all_weights(
    cfg: GeorankConfig, *, base_dir: Path, data_uri: str, out_base_dir: Path, steps: int
) -> LoopResult:
    """Train every weight of ``base_dir``'s model + a fresh head for ``steps`` steps to tell a
    group's candidate IMAGES apart: every candidate of a group carries the first one's text
    (``same_text``: only the images differ; the one demo warm-up seen to leave the chance plateau
    had it, README Evaluate). All weights, head included, at ``train.warmup_lr`` (the head is
    dropped afterwards); save the backbone as a new base directory ``out_base_dir``
    (``from_pretrained`` layout, processor files copied); returns the loop's result."""
    from transformers import Qwen2VLForConditionalGeneration

    from georank.rank.tokenizer import load_processor
    from georank.train.batch import GroupScorer
    from georank.train.model import load_base_ranker

    t = cfg.train
    torch.manual_seed(t.seed)
    ranker = load_base_ranker(Path(base_dir), seed=t.seed)
    ranker.requires_grad_(True)
    processor = load_processor(Path(base_dir), min_pixels=cfg.rank.min_pixels, max_pixels=cfg.rank.max_pixels)
    groups = [{"params": list(ranker.parameters()), "lr": t.warmup_lr}]
    result = run_loop(
        module=ranker,
        param_groups=groups,
        trainable=dict(ranker.named_parameters()),
        score=GroupScorer(ranker, processor, cfg.rank),
        stream=make_stream(cfg, base_dir=Path(base_dir), data_uri=data_uri, processor=processor, same_text=True),
        cfg=t,
        steps=steps,
        checkpoint_dir=None,
        device=t.device,
    )
    loaded: Any = Qwen2VLForConditionalGeneration.from_pretrained(
        str(base_dir), dtype=torch.float32, use_safetensors=True, local_files_only=True
    )
    loaded.model.load_state_dict(ranker.model.state_dict())
    out_base_dir = Path(out_base_dir)
    tmp = out_base_dir.with_name(out_base_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in Path(base_dir).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy2(f, tmp / f.name)
    loaded.save_pretrained(str(tmp), safe_serialization=True)
    if out_base_dir.exists():
        shutil.rmtree(out_base_dir)
    tmp.rename(out_base_dir)
    log.info("warmed-up base model (all weights, %d steps) saved to %s", steps, out_base_dir)
    return result


__all__ = ["make_stream", "train_lora", "warmup_all_weights"]
