"""Load a GeoRanker: a Qwen2-VL base directory + a PEFT LoRA adapter directory, loudly.

- Base: a ``from_pretrained`` directory (``config.json`` + safetensors) of a
  ``Qwen2VLForConditionalGeneration``, in either key layout (``model.layers.N`` /
  ``visual.*`` as older transformers saved it, ``model.language_model.layers.N`` /
  ``model.visual.*`` as newer ones do). Every weight must load; only the backbone is kept
  (``lm_head`` is dropped: vocabulary logits are never computed).
- Adapter: ``adapter_config.json`` (LoRA r, alpha, dropout, target modules: read, never
  hard-coded) + ``adapter_model.safetensors`` with the score head inside
  (``base_model.model.value_head.weight``, a PEFT module to save). Keys in either layout are
  mapped onto the model; unless EVERY LoRA tensor the config implies and the head loaded with
  the right shapes, :class:`~georank.errors.CheckpointError` names the missing, unexpected and
  wrongly-shaped keys. A loader that silently dropped them would run untrained adapters and
  give random scores.

safetensors only: no pickle, no ``torch.load``. Artifacts are local paths or ``s3://`` URIs
(:func:`georank.storage.local_path`). Runs on executors, once per Python worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from georank.errors import CheckpointError
from georank.rank.model import GeoRankerModel

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
HEAD_NAME = "value_head"  # the released checkpoint's score head (modules_to_save=["value_head"])
ADAPTER_NAME = "default"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SHOW = 12  # keys listed per category in an error message


def normalize_key(key: str) -> str:
    """An adapter key in the model's own naming (new layout, PEFT prefix and adapter name removed).

    >>> normalize_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight")
    'model.language_model.layers.3.self_attn.q_proj.lora_A.weight'
    >>> normalize_key("base_model.model.model.language_model.layers.3.self_attn.q_proj.lora_A.weight")
    'model.language_model.layers.3.self_attn.q_proj.lora_A.weight'
    >>> normalize_key("base_model.model.visual.blocks.0.attn.qkv.lora_A.weight")
    'model.visual.blocks.0.attn.qkv.lora_A.weight'
    """
    key = key.removeprefix(PEFT_PREFIX)
    if key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
        key = "model.language_model." + key[len("model.") :]
    elif key.startswith("visual."):
        key = "model." + key
    return key


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _safetensors_files(base_dir: Path) -> list[Path]:
    files = sorted(base_dir.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in base_dir.glob("*.bin")) + sorted(p.name for p in base_dir.glob("*.pt"))
        raise CheckpointError(
            f"base model {base_dir}: expected *.safetensors weights, got "
            + (f"only pickle files {pickles} (not loaded: safetensors only)" if pickles else "none")
        )
    return files


def load_backbone(base_dir: Path, *, device: str, dtype: str, attn_implementation: str) -> Any:  # Qwen2VLModel
    """The Qwen2-VL backbone of a base directory; every checkpoint weight must match the model."""
    from transformers import Qwen2VLForConditionalGeneration

    if not (base_dir / "config.json").is_file():
        raise CheckpointError(f"base model {base_dir}: expected a from_pretrained directory with config.json, got none")
    _safetensors_files(base_dir)
    kwargs: dict[str, Any] = {}
    if device != "cpu":
        kwargs["device_map"] = {"": device}
    loaded: Any = Qwen2VLForConditionalGeneration.from_pretrained(
        str(base_dir),
        dtype=_DTYPES[dtype],
        attn_implementation=attn_implementation,
        use_safetensors=True,
        local_files_only=True,
        output_loading_info=True,
        **kwargs,
    )
    full, info = loaded
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing keys: {_listing(list(info['missing_keys']))}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected keys: {_listing(list(info['unexpected_keys']))}")
    if info.get("mismatched_keys"):
        problems.append(f"wrong shapes: {_listing([str(k) for k in info['mismatched_keys']])}")
    if info.get("error_msgs"):
        problems.append(f"errors: {info['error_msgs']}")
    if problems:
        raise CheckpointError(f"base model {base_dir} does not match Qwen2-VL: " + "; ".join(problems))
    backbone = full.model
    del full  # drops lm_head: vocabulary logits are never computed
    return backbone


def _read_lora_config(adapter_dir: Path) -> Any:  # peft.LoraConfig
    from peft import LoraConfig, PeftType

    cfg_path = adapter_dir / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"adapter {adapter_dir}: expected {ADAPTER_CONFIG}, got none")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"adapter {cfg_path}: expected JSON, got {exc}") from exc
    if raw.get("peft_type") != PeftType.LORA.value:
        raise CheckpointError(f"adapter {cfg_path}: expected peft_type 'LORA', got {raw.get('peft_type')!r}")
    lora_cfg = LoraConfig.from_pretrained(str(adapter_dir))
    heads = list(lora_cfg.modules_to_save or [])
    if heads and HEAD_NAME not in heads:
        raise CheckpointError(
            f"adapter {cfg_path}: expected modules_to_save to hold the score head {HEAD_NAME!r}, got {heads}"
        )
    lora_cfg.modules_to_save = None  # the head is loaded below, as a plain Linear
    lora_cfg.inference_mode = True
    return lora_cfg


def attach_adapter(ranker: GeoRankerModel, adapter_dir: Path) -> GeoRankerModel:
    """Inject LoRA (from ``adapter_config.json``) into ``ranker`` and load every adapter tensor
    and the score head from ``adapter_model.safetensors``, strictly (see the module docstring)."""
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import cast_adapter_dtype
    from safetensors.torch import load_file

    lora_cfg = _read_lora_config(adapter_dir)
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        pickles = sorted(p.name for p in adapter_dir.glob("*.bin"))
        raise CheckpointError(
            f"adapter {adapter_dir}: expected {ADAPTER_WEIGHTS}, got "
            + (f"only {pickles} (pickle, not loaded: safetensors only)" if pickles else "none")
        )
    try:
        inject_adapter_in_model(lora_cfg, ranker, adapter_name=ADAPTER_NAME)
    except ValueError as exc:
        raise CheckpointError(f"adapter {adapter_dir}: its LoRA config does not fit the base model: {exc}") from exc
    # As PeftModel.from_pretrained does: bf16/fp16 adapters are kept in float32.
    cast_adapter_dtype(ranker, ADAPTER_NAME, autocast_adapter_dtype=True)

    # Expected tensors, in the saved form (PEFT drops the adapter name from saved keys).
    params = dict(ranker.named_parameters())
    expected: dict[str, str] = {}
    for name in params:
        if f".{ADAPTER_NAME}" in name:
            expected[name.replace(f".{ADAPTER_NAME}", "")] = name
    n_lora = len(expected)
    expected[f"{HEAD_NAME}.weight"] = f"{HEAD_NAME}.weight"

    on_disk = load_file(str(weights_path))
    got: dict[str, tuple[str, torch.Tensor]] = {}
    for key, tensor in on_disk.items():
        got[normalize_key(key)] = (key, tensor)

    missing = [PEFT_PREFIX + k for k in expected if k not in got]
    unexpected = [orig for k, (orig, _) in got.items() if k not in expected]
    wrong_shape = [
        f"{orig}: expected {tuple(params[expected[k]].shape)}, got {tuple(t.shape)}"
        for k, (orig, t) in got.items()
        if k in expected and tuple(t.shape) != tuple(params[expected[k]].shape)
    ]
    if missing or unexpected or wrong_shape:
        targets = lora_cfg.target_modules
        targets = targets if isinstance(targets, str) else sorted(targets or [])
        parts = [
            (
                f"adapter {weights_path} does not fit the model: expected {n_lora} LoRA tensors "
                f"(r={lora_cfg.r}, targets {targets}) and the score head {PEFT_PREFIX}{HEAD_NAME}.weight, "
                f"got {len(on_disk)} tensors"
            )
        ]
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes: {_listing(wrong_shape)}")
        raise CheckpointError("; ".join(parts))

    with torch.no_grad():
        for k, name in expected.items():
            p = params[name]
            p.copy_(got[k][1].to(device=p.device, dtype=p.dtype))
    log.info("adapter %s: %d LoRA tensors and the score head loaded", adapter_dir, n_lora)
    return ranker


def load_ranker(
    base_dir: Path,
    adapter_dir: Path,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
) -> GeoRankerModel:
    """A ready-to-score GeoRanker (eval mode, no gradients) from local directories."""
    from georank.resources import require_device

    require_device("rank.device", device)
    backbone = load_backbone(Path(base_dir), device=device, dtype=dtype, attn_implementation=attn_implementation)
    ranker = GeoRankerModel(backbone)
    attach_adapter(ranker, Path(adapter_dir))
    ranker.eval()
    ranker.requires_grad_(False)
    return ranker


# --- versions -----------------------------------------------------------------------------


# Files of a base directory that decide its scores, besides the weights (*.safetensors and
# model.safetensors.index.json): the architecture, and what the processor reads to build the
# prompt's tokens and pixels. generation_config.json is left out: no text is generated.
MODEL_FILES = (
    "config.json",
    "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "preprocessor_config.json", "processor_config.json",
    "chat_template.json", "chat_template.jinja",
)


def _model_files(base_dir: Path) -> list[Path]:
    weights = _safetensors_files(base_dir) + sorted(base_dir.glob("*.safetensors.index.json"))
    return sorted([p for p in (base_dir / n for n in MODEL_FILES) if p.is_file()] + weights, key=lambda p: p.name)


def adapter_version(adapter_dir: Path) -> str:
    """Content hash (16 hex) of ``adapter_model.safetensors`` + ``adapter_config.json``; each file
    read once per host (:func:`georank.storage.file_digest`)."""
    from georank.storage import file_digest

    h = hashlib.sha256()
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        p = adapter_dir / name
        if not p.is_file():
            raise CheckpointError(f"adapter {adapter_dir}: expected {name}, got none")
        h.update(name.encode() + file_digest(p).encode())
    return h.hexdigest()[:16]


def model_version(base_dir: Path) -> str:
    """Content hash (16 hex) of a base directory: every weight file (``*.safetensors``, shards
    included, and the shard index), ``config.json`` and the tokenizer, processor and chat
    template files (:data:`MODEL_FILES`), by name and sha256. Each file is read once per host
    (:func:`georank.storage.file_digest`): the first worker hashes a 15 GB model (~15-30 s), the
    others read the stored digest."""
    from georank.storage import file_digest

    if not (base_dir / "config.json").is_file():
        raise CheckpointError(f"base model {base_dir}: expected a from_pretrained directory with config.json, got none")
    h = hashlib.sha256()
    for p in _model_files(base_dir):
        h.update(p.name.encode() + b"\0" + file_digest(p).encode() + b"\0")
    return h.hexdigest()[:16]
