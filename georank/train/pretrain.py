"""The demo's stand-in for pretraining: teach a random tiny backbone to COMPARE two images.

A released Qwen2-VL comes pretrained: it already sees what is in an image and can relate two
images of one prompt, and GeoRanker's LoRA stage builds on that. A random tiny Qwen2-VL cannot,
and does not learn it from the ranking loss in CPU minutes: every ranking-loss warm-up and every
recipe tried stayed at chance on the retrieved look-alikes (docs/development.md, "The demo world"), because the score
must compare the query image with the candidate image, a circuit the ranking loss gives almost
no gradient towards until it exists. :func:`warmup_compare` gives it a dense, self-supervised
signal instead (no coordinates, no distances: images only, as pretraining has):

for every query-candidate prompt of the demo's training groups (the ranker's own prompt, built by
the job's prompt builder), an auxiliary linear head on the last token's hidden state (the state
the score head reads) regresses 36 numbers: the query image's colour layout, the candidate
image's, and their squared difference (:func:`compare_targets`), each standardised. Every weight
of the backbone is trained except the token embedding (9.7M rows the prompt barely uses; frozen,
the step is faster), at ``train.warmup_lr``, constant. The auxiliary head is dropped afterwards,
the backbone saved as a new base directory; the LoRA stage then starts from it with a FRESH score
head, so the untrained adapter is this backbone with a random head.

Only the demo uses it (``demo.train_warmup_steps``); real training starts from a real pretrained
model. Runs on the driver, one process.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from georank.config import GeorankConfig
from georank.errors import ConfigError, InputError
from georank.rank.model import GeoRankerModel
from georank.rank.prompts import EncodedImage, EncodedPair
from georank.train.dataset import TrainItem

log = logging.getLogger(__name__)

LAYOUT_CELLS = 4  # 2 x 2 image quarters
LAYOUT_DIM = 3 * LAYOUT_CELLS  # mean R, G, B (as the vision tower sees them) of each quarter
TARGET_DIM = 3 * LAYOUT_DIM  # query layout, candidate layout, their squared difference
STAT_GROUPS = 32  # groups read before training to standardise the targets


def colour_layout(image: EncodedImage) -> torch.Tensor:
    """Mean colour ``(12,)`` (channel-major per quarter: top-left, top-right, bottom-left,
    bottom-right) of an image's patches, in the processor's normalised units.

    ``pixel_values`` rows are 14x14 patches laid out as Qwen2-VL's processor orders them: per
    frame, 2x2 merge windows in raster order, the window's 4 patches in raster order inside it;
    each row is (3 channels, 2 frames, 14, 14).
    """
    if image.pixel_values is None:
        raise ValueError("colour_layout needs pixel values, got an image served from the feature cache")
    t, h, w = image.grid_thw
    pv = image.pixel_values.float()
    if pv.shape[0] != t * h * w or h % 2 or w % 2:
        raise ValueError(f"pixel values of grid {image.grid_thw}: expected {t * h * w} patches, got {pv.shape[0]}")
    idx = torch.arange(t * h * w).view(t, h // 2, w // 2, 2, 2)
    row = (torch.arange(h // 2).view(1, -1, 1, 1, 1) * 2 + torch.arange(2).view(1, 1, 1, -1, 1)).expand_as(idx)
    col = (torch.arange(w // 2).view(1, 1, -1, 1, 1) * 2 + torch.arange(2).view(1, 1, 1, 1, -1)).expand_as(idx)
    cell = ((row >= h // 2).long() * 2 + (col >= w // 2).long()).reshape(-1)  # (patches,) in idx order
    per_patch = pv.view(pv.shape[0], 3, -1).mean(-1)[idx.reshape(-1)]  # (patches, 3)
    out = torch.zeros(LAYOUT_CELLS, 3).index_add_(0, cell, per_patch)
    out /= torch.bincount(cell, minlength=LAYOUT_CELLS).clamp(min=1).unsqueeze(1)
    return out.reshape(-1)


def compare_targets(pairs: Sequence[EncodedPair]) -> torch.Tensor:
    """``(n, 36)``: query layout, candidate layout, (query - candidate)**2 of each prompt (the
    query image is a prompt's first image, the candidate's its last)."""
    q = torch.stack([colour_layout(p.images[0]) for p in pairs])
    c = torch.stack([colour_layout(p.images[-1]) for p in pairs])
    return torch.cat([q, c, (q - c) ** 2], dim=1)


def _pairs(items: Iterator[TrainItem], groups: int) -> list[EncodedPair]:
    """The prompts of the next ``groups`` usable groups."""
    out: list[EncodedPair] = []
    taken = 0
    for item in items:
        if item.encoded is None:
            continue
        out.extend(item.encoded.pairs)
        taken += 1
        if taken == groups:
            break
    if not out:
        raise InputError("demo warm-up: expected training groups whose images decode, got none")
    return out


def warmup_compare(cfg: GeorankConfig, *, base_dir: Path, data_uri: str, out_base_dir: Path, steps: int) -> dict[str, Any]:
    """Train ``base_dir``'s backbone for ``steps`` steps of ``train.queries_per_step`` groups on
    the comparison task (module docstring) and save it as ``out_base_dir``; returns a summary."""
    from georank.rank.tokenizer import load_processor
    from georank.train.batch import GroupScorer
    from georank.train.model import load_base_ranker
    from georank.train.stages import make_stream

    if not cfg.rank.prompt_candidate_image:
        raise ConfigError(
            "config key 'rank.prompt_candidate_image': the demo warm-up compares the query image with the "
            "candidate's; expected true, got false"
        )
    t = cfg.train
    torch.manual_seed(t.seed)
    ranker = load_base_ranker(Path(base_dir), seed=t.seed, device=t.device)  # train.device, as the LoRA stage
    device = ranker.value_head.weight.device
    ranker.train()
    ranker.requires_grad_(True)
    ranker.value_head.requires_grad_(False)  # not used here: the LoRA stage draws a fresh one
    ranker.model.get_input_embeddings().weight.requires_grad_(False)
    processor = load_processor(Path(base_dir), min_pixels=cfg.rank.min_pixels, max_pixels=cfg.rank.max_pixels)
    scorer = GroupScorer(ranker, processor, cfg.rank)
    aux = torch.nn.Linear(ranker.value_head.in_features, TARGET_DIM).to(device)
    params = [p for p in ranker.model.parameters() if p.requires_grad] + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=t.warmup_lr, weight_decay=t.weight_decay)
    stream = make_stream(cfg, base_dir=Path(base_dir), data_uri=data_uri, processor=processor)

    stats = compare_targets(_pairs(stream(0), STAT_GROUPS)).to(device)
    mean, var = stats.mean(0), stats.var(0) + 1e-6
    items = stream(0)
    t0, window_t, window_loss, window_n, loss_value = time.monotonic(), time.monotonic(), 0.0, 0, math.nan
    for step in range(1, steps + 1):
        pairs = _pairs(items, t.queries_per_step)
        h_last = ranker.last_hidden(**scorer.inputs(pairs).as_kwargs())  # (n, hidden): what the score head reads
        loss = (((aux(h_last) - (compare_targets(pairs).to(device) - mean)) ** 2) / var).mean()  # 1.0: predicting the mean
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        opt.step()
        loss_value = float(loss.detach())
        window_loss, window_n = window_loss + loss_value, window_n + 1
        if step % t.log_every == 0 or step == steps:
            now = time.monotonic()
            log.info("warm-up (compare) step %d/%d: loss %.4f (1.0 = the mean), %.1f steps/s",
                     step, steps, window_loss / window_n, window_n / max(now - window_t, 1e-9))
            window_t, window_loss, window_n = now, 0.0, 0
    save_backbone(ranker, base_dir=Path(base_dir), out_base_dir=Path(out_base_dir))
    log.info("warmed-up base model (compare task, %d steps) saved to %s", steps, out_base_dir)
    return {"steps": steps, "last_loss": loss_value, "seconds": time.monotonic() - t0}


def save_backbone(ranker: GeoRankerModel, *, base_dir: Path, out_base_dir: Path) -> None:
    """``ranker``'s backbone as a ``from_pretrained`` directory (``base_dir``'s config and
    processor files), swapped in by a rename."""
    from transformers import Qwen2VLForConditionalGeneration

    loaded: Any = Qwen2VLForConditionalGeneration.from_pretrained(
        str(base_dir), dtype=torch.float32, use_safetensors=True, local_files_only=True
    )
    loaded.model.load_state_dict(ranker.model.state_dict())
    tmp = out_base_dir.with_name(out_base_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in base_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "config.json":
            shutil.copy2(f, tmp / f.name)
    loaded.save_pretrained(str(tmp), safe_serialization=True)
    if out_base_dir.exists():
        shutil.rmtree(out_base_dir)
    tmp.rename(out_base_dir)


__all__ = ["colour_layout", "compare_targets", "save_backbone", "warmup_compare"]
