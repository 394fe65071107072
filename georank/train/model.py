"""A trainable GeoRanker and the adapter it writes.

The network is :class:`georank.rank.model.GeoRankerModel` (the class the geotag job scores
with), built from a base directory by :func:`georank.rank.checkpoint.load_backbone`, wrapped by
PEFT: LoRA on the language model's q/k/v (``train.lora``) and the score head ``value_head`` as a
module to save, initialised N(0, 1/(H+1)) as the reference. The adapter is written by PEFT's own
``save_pretrained`` (``adapter_config.json`` with ``modules_to_save: ["value_head"]``, the head's
weight inside ``adapter_model.safetensors``), the released checkpoint's layout, which
:func:`georank.rank.checkpoint.load_ranker` and ``PeftModel.from_pretrained`` both load.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from georank.config import TrainConfig
from georank.rank.checkpoint import HEAD_NAME, load_backbone
from georank.rank.model import GeoRankerModel
from georank.resources import require_device

log = logging.getLogger(__name__)


def init_head(model: GeoRankerModel, *, seed: int) -> None:
    """The score head's weight (1, H) drawn from N(0, 1/(H+1)) (variance), as the reference."""
    hidden = int(model.value_head.weight.shape[1])
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(model.value_head.weight.shape, generator=gen) / (hidden + 1) ** 0.5
    with torch.no_grad():
        model.value_head.weight.copy_(w.to(model.value_head.weight))


def train_device(device: str) -> torch.device:
    """Where this training process's model lives for ``train.device``: the CPU, or on ``cuda`` this
    process's GPU: ``LOCAL_RANK`` (set by torchrun and TorchDistributor) modulo the GPUs it sees, so
    one process per GPU whether each sees every GPU of the host or only its own
    (``CUDA_VISIBLE_DEVICES``). Raises SetupError when ``cuda`` is asked and none is visible.

    >>> train_device("cpu")
    device(type='cpu')
    """
    require_device("train.device", device)
    if device == "cpu":
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def load_base_ranker(base_dir: Path, *, seed: int, device: str = "cpu") -> GeoRankerModel:
    """The float32 GeoRanker of a base directory (train mode) on ``device`` (``train.device``), its
    head freshly initialised from ``seed``; float32 weights, bf16 compute under autocast
    (``train.precision``)."""
    backbone = load_backbone(Path(base_dir), device=str(train_device(device)), dtype="float32", attn_implementation="sdpa")
    model = GeoRankerModel(backbone)
    init_head(model, seed=seed)
    return model


def lora_config(cfg: TrainConfig) -> Any:  # peft.LoraConfig
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        modules_to_save=[HEAD_NAME],
        bias="none",
    )


def build_trainable(base_dir: Path, cfg: TrainConfig) -> tuple[Any, GeoRankerModel]:
    """``(peft_model, ranker)``: LoRA injected into ``ranker`` (the same module tree the scorer
    uses), only the LoRA weights and the head's trainable copy require gradients. PEFT initialises
    LoRA B to 0, so the untrained adapter scores as the base model with the head."""
    from peft import get_peft_model

    torch.manual_seed(cfg.seed)
    ranker = load_base_ranker(base_dir, seed=cfg.seed, device=cfg.device)
    peft_model = get_peft_model(ranker, lora_config(cfg))
    if cfg.gradient_checkpointing:
        ranker.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log.info("trainable GeoRanker from %s: %d trainable parameters (LoRA r=%d + head)", base_dir, n_train, cfg.lora.r)
    return peft_model, ranker


def head_parameters(peft_model: Any) -> list[torch.nn.Parameter]:
    """The trainable copy of the score head (PEFT's modules_to_save wrapper)."""
    return [p for n, p in peft_model.named_parameters() if p.requires_grad and f"{HEAD_NAME}." in n]


def lora_parameters(peft_model: Any) -> list[torch.nn.Parameter]:
    return [p for n, p in peft_model.named_parameters() if p.requires_grad and f"{HEAD_NAME}." not in n]


def save_adapter(peft_model: Any, out_dir: Path, *, base_dir: Path | None = None) -> Path:
    """Write the adapter (PEFT ``save_pretrained``, safetensors) to ``out_dir``, atomically:
    a sibling temporary folder is renamed over ``out_dir`` when complete."""
    import shutil

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    peft_model.save_pretrained(str(tmp), safe_serialization=True)
    cfg_path = tmp / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    if adapter_cfg.get("modules_to_save") != [HEAD_NAME]:
        raise RuntimeError(f"adapter config: expected modules_to_save [{HEAD_NAME!r}], got {adapter_cfg.get('modules_to_save')}")
    if base_dir is not None:
        adapter_cfg["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True))
    old = out_dir.with_name(out_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)
    log.info("adapter written to %s", out_dir)
    return out_dir


__all__ = [
    "build_trainable", "head_parameters", "init_head", "load_base_ranker", "lora_parameters", "save_adapter", "train_device",
]
