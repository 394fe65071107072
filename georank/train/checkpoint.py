"""Training checkpoints: safetensors for tensors, JSON for the rest (no pickle, no torch.load).

A checkpoint is a folder ``<checkpoint_dir>/step-00000100/`` holding

- ``trainable.safetensors``: every trainable parameter by name;
- ``optimizer.safetensors``: the optimiser's per-parameter tensors (``<param index>.<key>``) and
  the torch RNG state (``rng.torch``, ``rng.cuda.<i>``);
- ``state.json``: step, data position, optimiser hyper-parameters and non-tensor state, the
  scheduler's state, Python's RNG state; written last, so a folder without it is unfinished.

Folders are written under a ``.tmp`` name and renamed when complete; the newest
``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from georank.errors import CheckpointError

log = logging.getLogger(__name__)

STATE = "state.json"


@dataclass(frozen=True)
class Resumed:
    step: int  # optimiser steps done
    position: int  # data items consumed (this rank's stream)
    path: Path


def _step_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE).is_file()),
                  key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or None."""
    dirs = _step_dirs(Path(root))
    return dirs[-1] if dirs else None


def save_checkpoint(
    root: Path,
    *,
    step: int,
    position: int,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    keep: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint folder (atomically) and drop the older ones beyond ``keep``."""
    root = Path(root)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(str(idx), {})[key] = value
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    py_state = random.getstate()
    state = {
        "step": step,
        "position": position,
        "param_groups": opt["param_groups"],
        "optimizer_plain_state": plain_state,
        "optimizer_state_keys": {str(i): sorted(st) for i, st in opt["state"].items()},
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "python_random": [py_state[0], list(py_state[1]), py_state[2]],
        "extra": extra or {},
    }
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in _step_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s (step %d, data position %d)", final, step, position)
    return final


def load_checkpoint(
    path: Path, *, trainable: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, scheduler: Any
) -> Resumed:
    """Restore parameters, optimiser, scheduler and RNG from ``path``; strict about names and shapes."""
    path = Path(path)
    state = json.loads((path / STATE).read_text())
    weights = load_file(str(path / "trainable.safetensors"))
    missing = sorted(set(trainable) - set(weights))
    unexpected = sorted(set(weights) - set(trainable))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: expected the {len(trainable)} trainable tensors of this model, "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name, p in trainable.items():
            if tuple(weights[name].shape) != tuple(p.shape):
                raise CheckpointError(f"checkpoint {path}: {name} expected shape {tuple(p.shape)}, got {tuple(weights[name].shape)}")
            p.copy_(weights[name])
    tensors = load_file(str(path / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for idx, keys in state["optimizer_state_keys"].items():
        st: dict[str, Any] = dict(state["optimizer_plain_state"].get(idx, {}))
        for key in keys:
            if f"{idx}.{key}" in tensors:
                st[key] = tensors[f"{idx}.{key}"]
        opt_state[int(idx)] = st
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    sched = scheduler.state_dict()
    sched.update(state["scheduler"])
    scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, internal, gauss = state["python_random"]
    random.setstate((v, tuple(internal), gauss))
    log.info("resumed from %s: step %d, data position %d", path, state["step"], state["position"])
    return Resumed(step=int(state["step"]), position=int(state["position"]), path=path)


__all__ = ["Resumed", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]
