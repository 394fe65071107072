"""Tiny GeoRankers of the real architecture, saved as real checkpoint directories.

For tests, benchmarks and the embedded demo: a Qwen2-VL (vision tower + merger + Qwen2 decoder
with M-RoPE) with few layers and a small hidden size but the real vocabulary size (152,064, so
the real tokenizer's ids fit), a LoRA adapter on q/k/v and a score head, saved exactly as the
published pipeline saves them:

- ``base/``: a ``from_pretrained`` directory: ``config.json``, ``model.safetensors`` (with
  ``lm_head.weight``, as a ``Qwen2VLForConditionalGeneration`` checkpoint) and the processor's
  tokenizer/preprocessor files (the offline Qwen2-VL tokenizer);
- ``adapter/``: ``adapter_config.json`` + ``adapter_model.safetensors`` written by PEFT's own
  ``save_pretrained``, the score head inside it as a module to save.

``layout="new"`` keeps the key names of transformers >= 4.52 / 5.x (``model.language_model.layers.N``,
``model.visual``); ``layout="old"`` rewrites both files to the older names (``model.layers.N``,
``visual``), as the released GeoRanker checkpoint was saved. The weights are identical for the
same seed, whatever the layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

Layout = Literal["old", "new"]

# Defaults for a tiny ranker: every size is a keyword of build_tiny_ranker.
TINY_SIZES: dict[str, Any] = {
    "hidden_size": 64,  # decoder width (real: 3584)
    "num_hidden_layers": 2,  # decoder layers (real: 28)
    "num_attention_heads": 4,  # query heads (real: 28); head_dim = hidden_size / heads
    "num_key_value_heads": 2,  # kv heads (real: 4)
    "intermediate_size": 128,  # decoder MLP (real: 18944)
    "vocab_size": 152_064,  # real: every Qwen2-VL token id fits
    "vision_depth": 2,  # vision blocks (real: 32)
    "vision_embed_dim": 32,  # vision width (real: 1280)
    "vision_num_heads": 2,  # (real: 16)
    "lora_r": 16,  # as the paper
    "lora_alpha": 32,
    "lora_dropout": 0.05,
}


def mrope_section_for(head_dim: int) -> list[int]:
    """M-RoPE split of head_dim / 2 frequencies into (temporal, height, width): [16, 24, 24] for 128."""
    half = head_dim // 2
    hw = (3 * half) // 8
    return [half - 2 * hw, hw, hw]


def tiny_qwen2vl_config(**sizes: Any) -> Any:  # transformers.Qwen2VLConfig
    """A Qwen2-VL config of the real architecture with tiny sizes (see :data:`TINY_SIZES`)."""
    from transformers import Qwen2VLConfig

    s = {**TINY_SIZES, **sizes}
    head_dim = s["hidden_size"] // s["num_attention_heads"]
    return Qwen2VLConfig(
        text_config={
            "vocab_size": s["vocab_size"],
            "hidden_size": s["hidden_size"],
            "intermediate_size": s["intermediate_size"],
            "num_hidden_layers": s["num_hidden_layers"],
            "num_attention_heads": s["num_attention_heads"],
            "num_key_value_heads": s["num_key_value_heads"],
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": mrope_section_for(head_dim),
            },
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        vision_config={
            "depth": s["vision_depth"],
            "embed_dim": s["vision_embed_dim"],
            "hidden_size": s["hidden_size"],  # the merger projects to the decoder width
            "num_heads": s["vision_num_heads"],
            "mlp_ratio": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def _to_old_key(key: str) -> str:
    """``model.language_model.X`` -> ``model.X``; ``model.visual.X`` -> ``visual.X`` (any prefix kept)."""
    for new, old in ((".model.language_model.", ".model."), (".model.visual.", ".visual.")):
        key = key.replace(new, old)
    for new, old in (("model.language_model.", "model."), ("model.visual.", "visual.")):
        if key.startswith(new):
            key = old + key[len(new) :]
    return key


def _rewrite_layout(path: Path, layout: Layout) -> None:
    tensors = load_file(str(path))
    if layout == "old":
        tensors = {_to_old_key(k): v for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def build_tiny_ranker(out_dir: Path, *, seed: int = 0, layout: Layout = "new", **sizes: Any) -> tuple[Path, Path]:
    """Build and save a tiny GeoRanker; returns ``(base_dir, adapter_dir)`` under ``out_dir``.

    Deterministic for a seed: the same seed gives the same weights in either layout. LoRA A and
    B are both random (not PEFT's B = 0), so a missing LoRA tensor changes the scores.
    Runs on the driver (demo setup) or in tests; CPU only, a few seconds.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    from georank.rank.model import GeoRankerModel
    from georank.rank.tokenizer import build_qwen2vl_processor

    if layout not in ("old", "new"):
        raise ValueError(f"layout: expected 'old' or 'new', got {layout!r}")
    unknown = set(sizes) - set(TINY_SIZES)
    if unknown:
        raise ValueError(f"unknown tiny sizes {sorted(unknown)}; valid: {sorted(TINY_SIZES)}")
    s = {**TINY_SIZES, **sizes}
    out_dir = Path(out_dir)
    base_dir, adapter_dir = out_dir / "base", out_dir / "adapter"
    base_dir.mkdir(parents=True, exist_ok=True)
    adapter_dir.mkdir(parents=True, exist_ok=True)

    config = tiny_qwen2vl_config(**sizes)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        full = Qwen2VLForConditionalGeneration(config).eval()
        # base checkpoint: the whole ForConditionalGeneration (with lm_head), as released
        state = {k: v.detach().contiguous() for k, v in full.state_dict().items()}
        save_file(state, str(base_dir / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(str(base_dir))
        if (base_dir / "model.safetensors").exists():
            _rewrite_layout(base_dir / "model.safetensors", layout)
        build_qwen2vl_processor(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28).save_pretrained(str(base_dir))

        ranker = GeoRankerModel(full.model)
        hidden = config.text_config.hidden_size
        torch.nn.init.normal_(ranker.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
        lora = LoraConfig(
            r=s["lora_r"],
            lora_alpha=s["lora_alpha"],
            lora_dropout=s["lora_dropout"],
            target_modules=["q_proj", "k_proj", "v_proj"],
            modules_to_save=["value_head"],
            bias="none",
            init_lora_weights=False,  # random A and B: the adapter changes the scores
        )
        peft_model = get_peft_model(ranker, lora)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.mul_(0.5)
        peft_model.save_pretrained(str(adapter_dir), safe_serialization=True)
    finally:
        torch.random.set_rng_state(generator_state)
    _rewrite_layout(adapter_dir / "adapter_model.safetensors", layout)
    cfg_path = adapter_dir / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    adapter_cfg["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True))
    log.info("tiny GeoRanker (%s layout, seed %d) saved to %s", layout, seed, out_dir)
    return base_dir, adapter_dir
