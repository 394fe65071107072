"""scripts/convert_g3_heads.py: a G3-style PyTorch checkpoint (nested, prefixed, with other
tensors) becomes the safetensors heads file the embedder loads, with the same weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from georank.embed import HEAD_TENSORS, load_heads

ROOT = Path(__file__).resolve().parents[2]


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("convert_g3_heads", ROOT / "scripts" / "convert_g3_heads.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_converts_a_nested_prefixed_checkpoint(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    dim = 8
    state = {f"module.{name}": torch.randn((dim, dim) if name.endswith("weight") else (dim,), generator=g)
             for name in HEAD_TENSORS}
    state["module.location_encoder.weight"] = torch.randn(3, 3, generator=g)  # not a head: left out
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "G3.pth")
    names = _script().convert(tmp_path / "G3.pth", tmp_path / "heads.safetensors")
    assert names == sorted(HEAD_TENSORS)
    heads = load_heads(tmp_path / "heads.safetensors", dim)
    x = torch.randn(2, dim, generator=g)
    w0, b0 = state[f"module.{HEAD_TENSORS[0]}"], state[f"module.{HEAD_TENSORS[1]}"]
    w2, b2 = state[f"module.{HEAD_TENSORS[2]}"], state[f"module.{HEAD_TENSORS[3]}"]
    want = torch.relu(x @ w0.T + b0) @ w2.T + b2
    assert torch.allclose(heads[0](x), want, atol=1e-6)


def test_a_checkpoint_without_the_heads_is_refused(tmp_path: Path) -> None:
    torch.save({"other.weight": torch.zeros(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(SystemExit, match="expected exactly one tensor named like 'vision_projection_else_1.0.weight', got"):
        _script().convert(tmp_path / "x.pth", tmp_path / "out.safetensors")
