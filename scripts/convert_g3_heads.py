#!/usr/bin/env python3
"""Convert G3's released PyTorch checkpoint into the safetensors file georank's embedder loads.

Run ONCE, by hand, on a checkpoint file you trust (it is a PyTorch pickle; this script opens it
with ``torch.load(weights_only=True)``, which refuses arbitrary objects, but a pickle is still a
pickle). The geotag job itself never unpickles anything: it reads only the safetensors file this
script writes.

    .venv/bin/python scripts/convert_g3_heads.py G3.pth g3_heads.safetensors

The two heads georank needs are the image-text and image-GPS MLPs applied to the CLIP ViT-L/14
projection (``vision_projection_else_1`` / ``vision_projection_else_2``, each Linear-ReLU-Linear,
768 -> 768 -> 768). Their 8 tensors are found by suffix, whatever prefix the checkpoint uses
(``module.``, ``model.``, a nested ``state_dict``); everything else is left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Tensors of a (possibly nested) checkpoint dict, keyed by dotted path."""
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


def convert(src: Path, dst: Path) -> list[str]:
    """Write the 8 head tensors of ``src`` to ``dst`` (safetensors); returns their names."""
    import torch
    from safetensors.torch import save_file

    from georank.embed import HEAD_TENSORS, load_heads

    tensors = _flatten(torch.load(str(src), map_location="cpu", weights_only=True))
    picked: dict[str, Any] = {}
    for want in HEAD_TENSORS:
        hits = [k for k in tensors if k == want or k.endswith("." + want)]
        if len(hits) != 1:
            raise SystemExit(f"{src}: expected exactly one tensor named like {want!r}, got {hits}")
        picked[want] = tensors[hits[0]].detach().to(torch.float32).contiguous()
    dim = int(picked[HEAD_TENSORS[0]].shape[1])
    save_file(picked, str(dst), metadata={"source": src.name, "format": "georank-g3-heads/1"})
    load_heads(dst, dim)  # the embedder's own loader must accept what was written
    return sorted(picked)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="G3's released .pth (a file you trust)")
    p.add_argument("out", type=Path, help="where to write the safetensors file (embed.heads_uri)")
    args = p.parse_args(argv)
    names = convert(args.checkpoint, args.out)
    sys.stdout.write(f"wrote {len(names)} tensors to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
