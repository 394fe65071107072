"""Embed stage: a CLIP-family image encoder, for queries and for the gallery.

Two kinds (``embed.kind``):

- ``clip``: the visual projection of a CLIP vision tower, L2-normalised,
  ``(n, p)`` with ``p = projection_dim`` (768 for ViT-L/14).
- ``g3``: the published retrieval key of G3/GeoRanker, ``(n, 3p)``: the visual
  projection and two trained ``p -> p -> p`` MLP heads (Linear, ReLU, Linear: an
  image-text head and an image-GPS head) applied to the raw projection, each of
  the three parts L2-normalised on its own, concatenated in that order.

Images are resized (shortest side, bicubic) and centre-cropped to
``embed.image_size`` and normalised with the checkpoint's mean/std by
transformers' ``CLIPImageProcessor`` (the reference's preprocessing).

Weights load with ``from_pretrained`` from a local directory or an ``s3://``
prefix (through :func:`georank.storage.local_path`); the heads load from a
safetensors file. Nothing is fetched from a model hub, nothing is unpickled.
A checkpoint that leaves any vision weight or head tensor unloaded is a
:class:`~georank.errors.CheckpointError`, never a silently random encoder.

:func:`get_embedder` runs on executors: one :class:`Embedder` per Python
worker, cached by (URI, heads URI, kind, size, device, dtype, the run's pinned versions); the
device names the GPU (``cuda:N``, :func:`georank.resources.device_key`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from georank.config import EmbedConfig, GeorankConfig, S3Config
from georank.errors import CheckpointError, ConfigError
from georank.resources import require_device

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

# OpenAI CLIP normalisation, used when a checkpoint has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The two G3 heads as named in the G3 checkpoint (nn.Sequential(Linear, ReLU, Linear)).
HEAD_NAMES = ("vision_projection_else_1", "vision_projection_else_2")  # image-text, image-GPS
HEAD_TENSORS = tuple(f"{h}.{layer}.{p}" for h in HEAD_NAMES for layer in (0, 2) for p in ("weight", "bias"))
TINY_HEADS_FILE = "g3_heads.safetensors"  # where build_tiny_clip puts the tiny heads


def _is_weight_file(name: str) -> bool:
    """Files that define the CLIP checkpoint's function (hashed into the version)."""
    if name in ("config.json", "preprocessor_config.json"):
        return True
    return name.startswith(("model", "pytorch_model")) and name.endswith((".safetensors", ".safetensors.index.json"))


def checkpoint_version(model_dir: Path, heads_file: Path | None, *, kind: str, image_size: int) -> str:
    """A content hash of everything that decides the vectors: the checkpoint's config and
    weights, the heads file (g3), the kind and the crop size. 16 hex chars: the sha256 of
    ``kind=..;image_size=..`` then, per file, ``\\0name\\0`` and its bytes. The files are read
    once per host (:func:`georank.storage.digest`); the value is the one indexes were built with."""
    from georank.storage import digest

    files = sorted(p for p in model_dir.iterdir() if p.is_file() and _is_weight_file(p.name))
    if heads_file is not None:
        files.append(heads_file)
    parts: list[bytes | Path] = [f"kind={kind};image_size={image_size}".encode()]
    for f in files:
        parts += [b"\0" + f.name.encode() + b"\0", f]
    return digest(parts)[:16]


class Embedder:
    """A loaded image encoder. Call :meth:`embed` with decoded RGB images.

    Attributes:
        version: content hash of the checkpoint (+ heads, kind, crop size); written on
            every embedding row and into the index manifest.
        dim: width of one embedding (``p`` for clip, ``3p`` for g3).
        kind: ``"clip"`` or ``"g3"``.
    """

    def __init__(
        self,
        *,
        vision: torch.nn.Module,
        heads: list[torch.nn.Module],
        processor: Any,
        kind: str,
        batch_size: int,
        device: str,
        dtype: torch.dtype,
        version: str,
        projection_dim: int,
    ) -> None:
        self.vision = vision
        self.heads = heads
        self.processor = processor
        self.kind = kind
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.version = version
        self.projection_dim = projection_dim
        self.dim = projection_dim * (1 + len(heads))

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of RGB images, ``(n, dim) float32``, each part L2-normalised.

        Runs on executors (and the driver in tests); batches of ``embed.batch_size``.
        """
        import torch

        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = list(images[start : start + self.batch_size])
                pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]  # (b, 3, s, s)
                pixels = pixels.to(device=self.device, dtype=self.dtype)
                proj = self.vision(pixel_values=pixels).image_embeds  # (b, p), unnormalised
                parts = [proj] + [head(proj) for head in self.heads]  # G3: heads see the raw projection
                parts = [torch.nn.functional.normalize(x.float(), p=2.0, dim=-1) for x in parts]
                out.append(torch.cat(parts, dim=-1).cpu().numpy().astype(np.float32))  # (b, dim)
        return np.concatenate(out, axis=0)


def _mlp_head(weights: dict[str, torch.Tensor], name: str, projection_dim: int) -> torch.nn.Module:
    """``nn.Sequential(Linear(p, h), ReLU, Linear(h, p))`` from the tensors ``{name}.{0,2}.{weight,bias}``."""
    import torch

    w0, b0 = weights[f"{name}.0.weight"], weights[f"{name}.0.bias"]
    w2, b2 = weights[f"{name}.2.weight"], weights[f"{name}.2.bias"]
    hidden = w0.shape[0]
    want = {
        f"{name}.0.weight": (hidden, projection_dim),
        f"{name}.0.bias": (hidden,),
        f"{name}.2.weight": (projection_dim, hidden),
        f"{name}.2.bias": (projection_dim,),
    }
    for key, shape in want.items():
        if tuple(weights[key].shape) != shape:
            raise CheckpointError(
                f"G3 head tensor {key}: expected shape {shape} (projection_dim={projection_dim}), "
                f"got {tuple(weights[key].shape)}"
            )
    head = torch.nn.Sequential(
        torch.nn.Linear(projection_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, projection_dim)
    )
    head.load_state_dict({"0.weight": w0, "0.bias": b0, "2.weight": w2, "2.bias": b2}, strict=True)
    return head


def load_heads(path: Path, projection_dim: int) -> list[torch.nn.Module]:
    """The image-text and image-GPS heads from a safetensors file.

    Keys are matched by suffix (``vision_projection_else_1.0.weight`` ...), so a whole G3
    state dict converted to safetensors works too; every one of the 8 tensors must be
    found exactly once, else :class:`CheckpointError`.
    """
    from safetensors.torch import load_file

    try:
        raw = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a broken file must say which file
        raise CheckpointError(f"G3 heads file {path} is not a readable safetensors file: {exc}") from None
    found: dict[str, torch.Tensor] = {}
    for want in HEAD_TENSORS:
        hits = [k for k in raw if k == want or k.endswith("." + want)]
        if len(hits) != 1:
            raise CheckpointError(
                f"G3 heads file {path}: expected exactly one tensor named like {want!r}, got {hits}; "
                f"required tensors: {list(HEAD_TENSORS)}"
            )
        found[want] = raw[hits[0]].float()
    ignored = len(raw) - len(found)
    if ignored:
        log.info("G3 heads file %s: ignored %d tensors that are not heads", path, ignored)
    return [_mlp_head(found, name, projection_dim) for name in HEAD_NAMES]


def _image_processor(model_dir: Path, image_size: int) -> Any:
    from transformers import CLIPImageProcessor

    mean, std = CLIP_MEAN, CLIP_STD
    pp = model_dir / "preprocessor_config.json"
    if pp.is_file():
        meta = json.loads(pp.read_text())
        mean = tuple(meta.get("image_mean", mean))
        std = tuple(meta.get("image_std", std))
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,  # PIL bicubic, as CLIP
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


def load_embedder(cfg: EmbedConfig, s3: S3Config, *, resolve: Callable[[str], str] | None = None) -> Embedder:
    """Load the encoder described by ``cfg`` (driver or executor). ``resolve`` maps a config
    URI to an absolute one (``GeorankConfig.resolve``); identity when omitted."""
    import torch
    from transformers import CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    from georank.resources import device_key
    from georank.storage import local_path

    res = resolve or (lambda u: u)
    model_dir = local_path(res(cfg.model_uri), s3)
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(
            f"embed.model_uri {cfg.model_uri}: expected a from_pretrained directory with config.json, got {model_dir}"
        )
    heads_file: Path | None = None
    if cfg.kind == "g3":
        if not cfg.heads_uri:
            raise ConfigError("embed.kind is 'g3' but embed.heads_uri is not set; expected a safetensors file URI")
        heads_file = local_path(res(cfg.heads_uri), s3)
    require_device("embed.device", cfg.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    device = device_key(cfg.device)  # "cuda:N": this task's GPU, fixed for the embedder's life

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a CLIPModel dir lists its text tower as "unexpected": checked below
    try:
        loaded: Any = CLIPVisionModelWithProjection.from_pretrained(
            str(model_dir), dtype=dtype, output_loading_info=True, use_safetensors=True, local_files_only=True
        )
        vision, info = loaded
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"could not load a CLIP vision model from {model_dir}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = list(info.get("missing_keys", [])) + list(info.get("mismatched_keys", []))
    if missing:
        raise CheckpointError(
            f"CLIP checkpoint {model_dir}: expected every vision tower and projection weight, "
            f"got {len(missing)} missing or mismatched, e.g. {missing[:5]}"
        )
    vcfg = vision.config
    if vcfg.image_size != cfg.image_size:
        raise ConfigError(
            f"embed.image_size={cfg.image_size} but the checkpoint {cfg.model_uri} was trained at "
            f"{vcfg.image_size}x{vcfg.image_size}; expected embed.image_size={vcfg.image_size}"
        )
    projection_dim = int(vcfg.projection_dim)
    heads = load_heads(heads_file, projection_dim) if heads_file is not None else []
    vision = vision.to(device).eval()
    heads = [h.to(device=device, dtype=dtype).eval() for h in heads]
    version = checkpoint_version(model_dir, heads_file, kind=cfg.kind, image_size=cfg.image_size)
    log.info(
        "loaded %s embedder %s (dim %d, version %s) on %s/%s",
        cfg.kind, cfg.model_uri, projection_dim * (1 + len(heads)), version, device, cfg.dtype,
    )
    return Embedder(
        vision=vision,
        heads=heads,
        processor=_image_processor(model_dir, cfg.image_size),
        kind=cfg.kind,
        batch_size=cfg.batch_size,
        device=device,
        dtype=dtype,
        version=version,
        projection_dim=projection_dim,
    )


def get_embedder(cfg: GeorankConfig) -> Embedder:
    """The worker's embedder for ``cfg.embed`` (built once per Python worker). Runs on executors.

    Inside :func:`georank.storage.pinned` (the run's pinned artifacts) the key holds the pinned
    versions of the model and heads: a worker reused by a later run whose pins differ loads the new
    version, and loading checks that what is there now is the pinned version (a RunError naming
    the artifact otherwise, :func:`georank.storage.local_path`)."""
    from georank.resources import cached, device_key
    from georank.storage import pinned_version

    e = cfg.embed
    model_uri, heads_uri = cfg.resolve(e.model_uri), cfg.resolve(e.heads_uri) if e.heads_uri else None
    key = (
        model_uri, heads_uri, e.kind, e.image_size, device_key(e.device), e.dtype, e.batch_size,
        pinned_version(model_uri), pinned_version(heads_uri),
    )
    return cached("embedder", key, lambda: load_embedder(e, cfg.s3, resolve=cfg.resolve))


def build_tiny_clip(out_dir: str | Path, seed: int = 0, *, image_size: int = 224, projection_dim: int = 16) -> Path:
    """Save a tiny, randomly initialised ``CLIPModel`` (the real architecture, tiny sizes) as a
    ``from_pretrained`` directory at ``out_dir``, with its ``preprocessor_config.json`` and
    tiny G3 heads in ``out_dir/g3_heads.safetensors``. Same seed, same bytes. For tests and
    the demo only: its vectors mean nothing. Returns ``out_dir``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision = {**tower, "image_size": image_size, "patch_size": 32, "projection_dim": projection_dim}
    text = {
        **tower, "vocab_size": 128, "max_position_embeddings": 32, "projection_dim": projection_dim,
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
    }
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).eval()
    model.save_pretrained(str(out))
    _image_processor(out, image_size).save_pretrained(str(out))
    gen = torch.Generator().manual_seed(seed + 1)
    heads: dict[str, torch.Tensor] = {}
    p = projection_dim
    for name in HEAD_NAMES:
        heads[f"{name}.0.weight"] = torch.randn(p, p, generator=gen) / p**0.5
        heads[f"{name}.0.bias"] = torch.randn(p, generator=gen) * 0.1
        heads[f"{name}.2.weight"] = torch.randn(p, p, generator=gen) / p**0.5
        heads[f"{name}.2.bias"] = torch.randn(p, generator=gen) * 0.1
    save_file(heads, str(out / TINY_HEADS_FILE))
    log.info("saved a tiny CLIP (projection_dim %d, %dpx) to %s", projection_dim, image_size, out)
    return out


__all__ = ["Embedder", "build_tiny_clip", "checkpoint_version", "get_embedder", "load_embedder", "load_heads"]
