"""Ready for the GPU (issue 25): the real shapes on one CUDA device, in one command, one JSON line.

A GPU host is lent for minutes, not hours; this script turns such a window into numbers without
any weights: every model is its real architecture built from its config with random weights, and
everything is measured through georank's own code (the same functions the nightly job runs).

    .venv/bin/python benchmarks/bench_gpu.py                     # CUDA host: every part (sized for <= 8 min on one H100 80 GB; not yet run on one)
    .venv/bin/python benchmarks/bench_gpu.py --parts ranker loop # some parts
    .venv/bin/python benchmarks/bench_gpu.py --smoke             # CPU, tiny models, < 1 min (the test suite runs it)
    .venv/bin/python benchmarks/bench_gpu.py --paper             # the FLOP model's photos/hour only (any host; no weights)

Without ``--smoke`` or ``--paper`` it needs a CUDA device: on a host without one it says so and
exits 2 before building any model. Each part prints a table; a part that fails is reported (the
traceback on stderr, ``status: failed`` and the error in the JSON) and the others still run. The
last line of stdout is ONE JSON object: ``{"bench": "bench_gpu", "parts": {name: {"status": ...,
...}}, ...}``. Exit status 0 when every chosen part is ok, 1 otherwise.

Parts (``--parts``, default all):

ranker
    Qwen2-VL-7B's shape (hidden 3584, 28 layers, 28 query / 4 key-value heads, MLP 18944; vision
    tower 32 x 1280) and the 2B's (1536, 28, 12 / 2, 8960; same tower), random weights built in
    ``rank.dtype`` on the GPU (:func:`georank.rank.tiny.tiny_qwen2vl_config` at the real sizes),
    LoRA r=16 on q/k/v and the score head attached by the job's strict loader
    (:func:`georank.rank.checkpoint.attach_adapter`, from a random adapter file: 168 LoRA tensors at
    7B), scored by the job's :class:`georank.rank.scorer.Scorer`: 15 candidates per photo at the
    reference prompt (query and candidate images 640x480, descriptions, five negatives). Three paths
    on the same photos: per pair (the oracle), shared prefix, shared prefix + the feature cache
    (candidate images repeating at ``--repeat-share``, default 0.34: the demo night's share,
    bench_feature_cache.py). Then a sweep of ``rank.photos_per_batch`` x ``rank.candidates_per_batch``
    on the job's path (shared prefix + a fresh feature cache per point); a point that runs out of
    memory is reported as OOM. Per row: seconds, seconds/photo, photos/hour, decoder tokens/s, MFU,
    peak GPU memory (``torch.cuda.max_memory_allocated`` since the row started: weights included).
    Also the CPU's prompt building per photo (``encode_query``), which every path pays in the
    scorer's own thread before the GPU sees the photo.
precision
    The 2B shape in fp32 and in bf16 with the SAME weights (fp32 drawn with ``--seed``, copied into
    the bf16 model), the same adapter and the same ``--precision-photos`` photos (default 20), the
    job's path: largest and median |score difference|, how often the winner agrees, and the median
    spread of one photo's 15 scores (random weights: the candidates' scores are close, so read the
    difference against that spread).
embedder
    CLIP ViT-L/14's vision tower + projection (24 x 1024, 224 px, 768-d: ``embed.kind: clip``) and
    G3's 2304-d key (+ two 768->768->768 heads: ``g3``) through :class:`georank.embed.Embedder` (the
    job's preprocessing: resize, centre crop, normalise) at ``embed.batch_size`` 32 and 128 in
    ``embed.dtype`` float16 (conf/cluster.yaml): images/s, and the CPU preprocessing's share.
index
    ``flat`` and ``ivfflat`` (``index.nlist`` 1024, ``index.nprobe`` 32) over 1M x 768 vectors (the
    clustered stand-in of bench_index.py), built by :func:`georank.index.empty_index`, searched on
    the CPU and on the GPU through :func:`georank.retrieve.to_gpu` (what ``index.device: cuda``
    does; needs ``faiss-gpu``, the [gpu] extra): ms per query at ``retrieve.k`` = 20 for a batch of
    ``--index-queries``, and recall@k of the GPU path against the CPU path. Without
    ``faiss.StandardGpuResources`` it says plainly that faiss-gpu is missing and measures the CPU only.
loop
    64 synthetic 640x480 photos through the core loop on cuda, in ``input.photos_per_batch``
    batches: :func:`georank.pipeline.decode_photos` then :func:`georank.pipeline.geotag_partition`
    (embed, retrieve, candidates, rank, decide), against a 256-photo gallery embedded by the same
    embedder and indexed by :func:`georank.index.build_index` (``index.device: cuda`` when faiss-gpu
    is there), skip rule off (every photo ranked), 12 retrieved candidates per photo. Its models are
    built as above (the first ``--shapes`` ranker in rank.dtype, the G3 embedder fp16) and handed to
    the job's code in place of its per-worker factories (``get_scorer`` / ``get_embedder``: nothing is loaded from disk); the
    stage functions are wrapped with timers. Per stage: seconds; photos/s, photos/hour. Decode is
    timed on its own here; the job overlaps it with the GPU stage (``decode_ahead``).

The FLOP model (MFU). For a path that runs ``T`` decoder tokens (real tokens, padding left out)
and ``N`` vision patches (14x14, counted by a hook on the vision tower, so feature-cache hits are
left out)::

    FLOPs = 2 * P_dec * T  +  2 * P_vit * N  +  2 * P_merge * N / 4

``P_dec``: the decoder's parameters without the token embedding (LoRA and the score head
included; 6.53e9 at 7B), ``P_vit``: the vision tower's blocks and patch embedding (631e6),
``P_merge``: its 2x2 patch merger (44.6e6; it runs once per 4 patches). That is the usual
"2 x parameters x tokens" of a forward pass; the attention products (QK^T and AV, 4 x width x
context per token and layer) are left out, so MFU is an undercount (at the 7B reference prompt:
~1.5% for the decoder's ~1,000-token prompts, ~20% for the tower's 1,564-patch images).
``MFU = FLOPs / seconds / PEAK`` with ``PEAK`` = 989e12 FLOP/s, the H100 SXM5's dense BF16
Tensor Core peak (NVIDIA H100 Tensor Core GPU datasheet: 1,979 TFLOPS "with sparsity", half of
it dense); ``--peak-tflops`` for another GPU (H100 PCIe: 756). Tokens/s counts decoder tokens.
``--paper`` prints what this model predicts per photo (photos/hour per GPU at 100% and at
``--assumed-mfu``), on a ``meta``-device model (parameter counts only, nothing allocated) and the
prompt's real token counts, so the forecast and the measurement sit side by side.

One run's numbers on whatever machine runs it; never asserted anywhere. docs/performance.md
holds the cost of a night on paper and is where the measured rows go.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "benchmarks"), str(ROOT)):  # georank, and bench_index's vectors
    if _p not in sys.path:
        sys.path.insert(0, _p)
log = logging.getLogger("bench_gpu")

PARTS = ("ranker", "precision", "embedder", "index", "loop")
PEAK_TFLOPS_H100_BF16 = 989.0  # H100 SXM5 dense BF16 Tensor Core (datasheet: 1,979 with 2:4 sparsity)

# Real shapes, as keywords of georank.rank.tiny.tiny_qwen2vl_config (the config builder the tests use).
SHAPES: dict[str, dict[str, int]] = {
    "7b": {  # Qwen2-VL-7B-Instruct (reference/GEORANKER.md)
        "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "intermediate_size": 18944, "vocab_size": 152_064,
        "vision_depth": 32, "vision_embed_dim": 1280, "vision_num_heads": 16,
    },
    "2b": {  # Qwen2-VL-2B-Instruct
        "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "intermediate_size": 8960, "vocab_size": 151_936,
        "vision_depth": 32, "vision_embed_dim": 1280, "vision_num_heads": 16,
    },
    "tiny": {},  # georank.rank.tiny.TINY_SIZES: the smoke run's stand-in for both
}
CLIP_L14 = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
            "image_size": 224, "patch_size": 14, "projection_dim": 768}
CLIP_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "image_size": 224, "patch_size": 32, "projection_dim": 16}
DESCRIPTIONS = ("Rio de Janeiro Rio de Janeiro Brazil", "Springfield Illinois United States", "Kyoto Kyoto Japan",
                "Lyon Auvergne-Rhone-Alpes France", "Cape Town Western Cape South Africa")


@dataclass
class Plan:
    """What one run measures: the GPU run's sizes, or the smoke run's tiny ones."""

    smoke: bool
    device: str  # "cuda" or "cpu" (smoke)
    dtype: str  # the ranker's rank.dtype
    shapes: list[str]  # ranker part
    precision_shape: str
    loop_shape: str
    image_px: tuple[int, int]  # (width, height) of query, candidate and gallery photos
    photos: int  # ranker part: photos per measured row
    candidates: int
    precision_photos: int
    sweep_photos: list[int]
    sweep_candidates: list[int]
    clip: dict[str, int]
    embed_images: int
    embed_batches: list[int]
    embed_dtype: str
    index_n: int
    index_dim: int
    index_queries: int
    index_nlist: int
    index_nprobe: int
    loop_photos: int
    loop_gallery: int


def make_plan(a: argparse.Namespace) -> Plan:
    if a.smoke:
        return Plan(
            smoke=True, device="cpu", dtype="float32", shapes=["tiny"], precision_shape="tiny", loop_shape="tiny",
            image_px=(112, 84), photos=2, candidates=5, precision_photos=3,
            sweep_photos=[1, 2], sweep_candidates=[2, 5], clip=CLIP_TINY, embed_images=8, embed_batches=[4, 8],
            embed_dtype="float32", index_n=20_000, index_dim=64, index_queries=64, index_nlist=64, index_nprobe=8,
            loop_photos=4, loop_gallery=24,
        )
    return Plan(
        smoke=False, device="cuda", dtype=a.dtype, shapes=a.shapes, precision_shape="2b", loop_shape=a.shapes[0],
        image_px=(640, 480), photos=a.photos, candidates=a.candidates, precision_photos=a.precision_photos,
        sweep_photos=a.sweep_photos, sweep_candidates=a.sweep_candidates, clip=CLIP_L14, embed_images=a.embed_images,
        embed_batches=[32, 128], embed_dtype="float16", index_n=a.index_n, index_dim=768, index_queries=a.index_queries,
        index_nlist=1024, index_nprobe=32, loop_photos=a.loop_photos, loop_gallery=256,
    )


# ----------------------------------------------------------------------------- small helpers


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e9, 2)


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def photo(width: int, height: int, seed: int) -> Any:
    """A smooth random RGB image (photo-like under JPEG, unlike noise)."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    return PIL.Image.fromarray(small).resize((width, height), PIL.Image.Resampling.BILINEAR)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` as an aligned text table of ``columns``."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


# ----------------------------------------------------------------------------- the ranker, built from its config


def rank_config(plan: Plan, a: argparse.Namespace, *, dtype: str | None = None) -> Any:
    """The rank section these rows run with (the job's RankConfig; cluster.yaml's batch sizes)."""
    from georank.config import RankConfig

    return RankConfig(
        device=plan.device, dtype=dtype or plan.dtype, attn_implementation=a.attn if not plan.smoke else "sdpa",
        max_pixels=a.max_pixels, photos_per_batch=a.photos_per_batch, candidates_per_batch=a.candidates_per_batch,
        feature_cache_mb=a.feature_cache_mb,
    )


_processors: dict[tuple[int, int], Any] = {}


def processor_for(rank_cfg: Any) -> Any:
    """The offline Qwen2-VL processor at the rank config's pixel bounds (what get_scorer loads when a
    base directory has no tokenizer of its own), built once per bounds."""
    from georank.rank.tokenizer import load_processor

    key = (rank_cfg.min_pixels, rank_cfg.max_pixels)
    if key not in _processors:
        _processors[key] = load_processor(None, min_pixels=key[0], max_pixels=key[1])
    return _processors[key]


def qwen_config(shape: str) -> Any:
    from georank.rank.tiny import tiny_qwen2vl_config

    return tiny_qwen2vl_config(**SHAPES[shape])


def write_random_adapter(qcfg: Any, out_dir: Path, *, seed: int) -> Path:
    """A PEFT adapter directory as the released one is laid out (adapter_config.json: r=16, alpha 32,
    q/k/v, the score head as a module to save; adapter_model.safetensors with every LoRA tensor and
    ``base_model.model.value_head.weight``), random values: what attach_adapter loads strictly."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    r = 16
    LoraConfig(r=r, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj"],
               modules_to_save=["value_head"], bias="none").save_pretrained(str(out_dir))
    t = qcfg.text_config
    hidden = t.hidden_size
    kv = t.num_key_value_heads * (hidden // t.num_attention_heads)
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(t.num_hidden_layers):
        for proj, width in (("q", hidden), ("k", kv), ("v", kv)):
            key = f"base_model.model.model.language_model.layers.{layer}.self_attn.{proj}_proj"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, hidden, generator=gen) / hidden**0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(width, r, generator=gen) * 0.02
    tensors["base_model.model.value_head.weight"] = torch.randn(1, hidden, generator=gen) / hidden**0.5
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


def random_backbone(shape: str, *, device: str, dtype: str, attn: str, seed: int) -> Any:
    """Qwen2VLModel of ``shape`` with random weights, built directly on ``device`` in ``dtype``
    (the 7B and 2B shapes only on CUDA: never instantiated on a CPU)."""
    import torch
    from transformers import Qwen2VLModel

    if shape != "tiny" and device != "cuda":
        raise RuntimeError(f"the {shape} shape is built on a CUDA device only, got device {device!r}")
    log.info("bench_gpu: building the %s ranker backbone (%s, %s) on %s", shape, dtype, attn, device)
    torch.manual_seed(seed)
    with torch.device(device):
        backbone = Qwen2VLModel._from_config(qwen_config(shape), dtype=getattr(torch, dtype), attn_implementation=attn)
    return backbone.eval()


def scorer_from_backbone(backbone: Any, rank_cfg: Any, adapter_dir: Path, *, version: str) -> Any:
    """The job's Scorer over ``backbone`` + score head, LoRA and head loaded by the job's loader."""
    from georank.rank.checkpoint import attach_adapter
    from georank.rank.model import GeoRankerModel
    from georank.rank.scorer import Scorer

    ranker = GeoRankerModel(backbone)
    attach_adapter(ranker, adapter_dir)
    ranker.eval()
    ranker.requires_grad_(False)
    return Scorer(ranker, processor_for(rank_cfg), rank_cfg, model_version=version, adapter_version=version)


class Models:
    """Where the parts get their models: each part builds its own and frees it when done (no model
    outlives its part, so each row's peak memory is its own model's; a random 7B builds in seconds
    on a GPU). Only the random adapter files are shared."""

    def __init__(self, plan: Plan, a: argparse.Namespace, work: Path) -> None:
        self.plan, self.a, self.work = plan, a, work

    def adapter(self, shape: str) -> Path:
        d = self.work / f"adapter-{shape}"
        if not (d / "adapter_model.safetensors").exists():
            write_random_adapter(qwen_config(shape), d, seed=self.a.seed + 1)
        return d

    def ranker(self, shape: str, rank_cfg: Any) -> Any:
        backbone = random_backbone(shape, device=rank_cfg.device, dtype=rank_cfg.dtype,
                                   attn=rank_cfg.attn_implementation, seed=self.a.seed)
        return scorer_from_backbone(backbone, rank_cfg, self.adapter(shape), version=f"random-{shape}-{self.a.seed}")

    def embedder(self, kind: str, batch_size: int) -> Any:
        return build_embedder(self.plan, kind, batch_size, seed=self.a.seed)


# ----------------------------------------------------------------------------- the FLOP model


@dataclass(frozen=True)
class Params:
    decoder: int  # without the token embedding; LoRA and score head included
    vit: int  # vision blocks + patch embedding
    merger: int

    @classmethod
    def of(cls, ranker_or_backbone: Any) -> Params:
        backbone = getattr(ranker_or_backbone, "model", ranker_or_backbone)
        total = sum(p.numel() for p in ranker_or_backbone.parameters())
        vis = sum(p.numel() for p in backbone.visual.parameters())
        merger = sum(p.numel() for p in backbone.visual.merger.parameters())
        emb = backbone.language_model.embed_tokens.weight.numel()
        return cls(decoder=total - vis - emb, vit=vis - merger, merger=merger)

    def flops(self, tokens: float, patches: float) -> float:
        return 2.0 * self.decoder * tokens + 2.0 * self.vit * patches + 2.0 * self.merger * patches / 4


@dataclass(frozen=True)
class PromptShape:
    """Token and patch counts of a set of photos' prompts, per path (from the job's encode_query)."""

    photos: int
    pairs: int
    tokens_pair: int  # every pair from scratch
    tokens_shared: int  # each prefix once + every suffix
    patches_query: int  # per photo, summed
    patches_candidates: int  # every candidate image, summed
    prefix_len_mean: float
    pair_len_mean: float

    @classmethod
    def of(cls, encoded: list[Any]) -> PromptShape:
        import numpy as np

        pairs = [p for e in encoded for p in e.pairs]
        q_patches = sum(int(np.prod(e.pairs[0].images[0].grid_thw)) for e in encoded if e.pairs)
        c_patches = sum(int(np.prod(im.grid_thw)) for p in pairs for im in p.images[1:])
        t_pair = sum(len(p.input_ids) for p in pairs)
        t_shared = sum(e.prefix_len + sum(len(p.input_ids) - e.prefix_len for p in e.pairs) for e in encoded if e.pairs)
        return cls(len(encoded), len(pairs), t_pair, t_shared, q_patches, c_patches,
                   statistics.mean(e.prefix_len for e in encoded), t_pair / max(len(pairs), 1))

    def tokens(self, path: str) -> int:
        return self.tokens_pair if path == "pair" else self.tokens_shared

    def patches(self, path: str, repeat_share: float = 0.0) -> float:
        """Vision patches a path runs: per pair, the query image again for every candidate."""
        if path == "pair":
            per_photo_pairs = self.pairs / max(self.photos, 1)
            return self.patches_query * per_photo_pairs + self.patches_candidates
        if path == "cache":
            return self.patches_query + self.patches_candidates * (1 - repeat_share)
        return self.patches_query + self.patches_candidates


class PatchCounter:
    """Counts the 14x14 patches the vision tower runs (a forward pre-hook: feature-cache hits and
    the prefix's reuse are seen as they happen)."""

    def __init__(self, ranker: Any) -> None:
        self.patches = 0
        self._handle = ranker.model.visual.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.patches += int(hidden.shape[0])

    def close(self) -> None:
        self._handle.remove()


# ----------------------------------------------------------------------------- synthetic photos


def ranker_queries(plan: Plan, n_photos: int, *, repeat_share: float, seed: int) -> tuple[list[Any], float]:
    """``n_photos`` RankQuery: query photo, ``plan.candidates`` candidates with gallery images
    (distinct within a photo) and five text-only negatives; about ``repeat_share`` of all candidates
    reuse a gallery image an earlier photo had (same image, same feature-cache key). Returns the
    queries and the realised repeat share."""
    import numpy as np

    from georank.rank import RankCandidate, RankQuery

    rng = np.random.default_rng(seed)
    w, h = plan.image_px
    images: dict[int, Any] = {}
    used: list[int] = []
    c = plan.candidates
    # exactly round(share x all candidates) repeat slots, among the photos after the first
    n_repeat = min(round(repeat_share * n_photos * c), (n_photos - 1) * c)
    repeat_slots = set((c + rng.choice((n_photos - 1) * c, size=n_repeat, replace=False)).tolist()) if n_repeat else set()
    repeats = total = 0
    out = []

    def coord(lo: float, hi: float) -> float:
        return round(float(rng.uniform(lo, hi)), 6)  # gallery coordinates carry ~6 decimals

    for q in range(n_photos):
        mine: set[int] = set()
        cands = []
        for _ in range(c):
            pool = [g for g in used if g not in mine]
            if pool and total in repeat_slots:
                gid = int(rng.choice(pool))
                repeats += 1
            else:
                gid = len(images)
                images[gid] = photo(w, h, seed=10_000 + gid)
                used.append(gid)
            mine.add(gid)
            total += 1
            cands.append(RankCandidate(coord(-60, 60), coord(-180, 180), DESCRIPTIONS[gid % len(DESCRIPTIONS)],
                                       images[gid], image_key=f"bench/{gid}/{w}x{h}"))
        negs = [RankCandidate(coord(-60, 60), coord(-180, 180), DESCRIPTIONS[(q + i) % len(DESCRIPTIONS)], None)
                for i in range(5)]
        out.append(RankQuery(photo(w, h, seed=q), cands, negs))
    return out, repeats / max(total, 1)


# ----------------------------------------------------------------------------- part 1: ranker


def _score_row(scorer: Any, queries: list[Any], *, path: str, device: str, params: Params, shape: PromptShape,
               peak_tflops: float) -> dict[str, Any]:
    """Time one path on ``queries`` (after a one-photo warm-up on that path); the row's figures."""
    import numpy as np

    from georank.rank.features import FeatureCache

    def fresh_cache() -> None:
        cfg = scorer.cfg
        scorer.features = FeatureCache(max_bytes=cfg.feature_cache_mb * 2**20) if path == "cache" else None

    run = scorer.score_per_pair if path == "pair" else scorer.score_shared_prefix
    fresh_cache()
    run(queries[: 1 if path == "pair" else scorer.cfg.photos_per_batch])  # warm-up at a batch's shape: kernels, allocator
    fresh_cache()
    counter = PatchCounter(scorer.model)
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    try:
        scores = run(queries)
        _sync(device)
    finally:
        counter.close()
    seconds = time.perf_counter() - t0
    if not all(np.isfinite(s).all() for s in scores):
        raise RuntimeError(f"{path}: non-finite scores")
    tokens = shape.tokens(path)
    flops = params.flops(tokens, counter.patches)
    n = len(queries)
    hits = scorer.features.hits if scorer.features is not None else None
    return {
        "path": path, "photos": n, "s": round(seconds, 3), "s/photo": seconds / n, "photos/h": 3600 * n / seconds,
        "tok/s": tokens / seconds, "patches": counter.patches, "TFLOP": flops / 1e12,
        "MFU%": 100 * flops / seconds / (peak_tflops * 1e12), "peak_GB": _peak_gb(device), "cache_hits": hits,
        "scores": scores,
    }


def part_ranker(plan: Plan, a: argparse.Namespace, models: Models) -> dict[str, Any]:
    """Every shape of ``plan.shapes``; a shape that fails is reported and the next one still runs."""
    out: dict[str, Any] = {"shapes": {}}
    for shape_name in plan.shapes:
        try:
            out["shapes"][shape_name] = ranker_shape(plan, a, models, shape_name)
        except Exception as exc:  # noqa: BLE001 - reported; the other shape still runs
            traceback.print_exc()
            print(f"ranker {shape_name}: FAILED: {type(exc).__name__}: {exc}")
            out["shapes"][shape_name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        _free(plan.device)
    failed = [f"{n}: {r['error']}" for n, r in out["shapes"].items() if r.get("status") == "failed"]
    return {**out, "status": "failed", "error": "; ".join(failed)} if failed else out


def ranker_shape(plan: Plan, a: argparse.Namespace, models: Models, shape_name: str) -> dict[str, Any]:
    import numpy as np

    from georank.rank.prompts import encode_query

    rank_cfg = rank_config(plan, a)
    queries, share = ranker_queries(plan, plan.photos, repeat_share=a.repeat_share, seed=a.seed)
    scorer = models.ranker(shape_name, rank_cfg)
    params = Params.of(scorer.model)
    t0 = time.perf_counter()
    encoded = [encode_query(scorer.processor, q, rank_cfg) for q in queries]
    prompt_s = time.perf_counter() - t0
    shape = PromptShape.of(encoded)
    print(f"\n-- ranker {shape_name} ({rank_cfg.dtype}, {rank_cfg.attn_implementation}): decoder {params.decoder:.3g}, "
          f"vision {params.vit:.3g} + merger {params.merger:.3g} params; {plan.photos} photos x "
          f"{plan.candidates} candidates, images {plan.image_px[0]}x{plan.image_px[1]} -> "
          f"{encoded[0].pairs[0].images[0].n_tokens} tokens each; prefix {shape.prefix_len_mean:.0f} tokens, "
          f"whole pair {shape.pair_len_mean:.0f}; candidate images repeating {share:.0%}; "
          f"prompt building (CPU, encode_query) {prompt_s / plan.photos:.3f} s/photo")
    rows = [_score_row(scorer, queries, path=path, device=plan.device, params=params, shape=shape, peak_tflops=a.peak_tflops)
            for path in ("pair", "shared", "cache")]
    diff = max(float(np.abs(x - y).max()) for r in rows[1:] for x, y in zip(rows[0]["scores"], r["scores"]))
    for r in rows:
        r.pop("scores")
    table(rows, ["path", "photos", "s", "s/photo", "photos/h", "tok/s", "TFLOP", "MFU%", "peak_GB", "cache_hits"])
    print(f"max |score| difference of shared / cache vs per pair: {diff:.2e}")
    sweep = []
    sweep_queries = queries[: max(plan.sweep_photos)]
    sweep_shape = PromptShape.of(encoded[: len(sweep_queries)])
    for ppb in plan.sweep_photos:
        for cpb in plan.sweep_candidates:
            scorer.cfg = rank_cfg.model_copy(update={"photos_per_batch": ppb, "candidates_per_batch": cpb})
            try:
                r = _score_row(scorer, sweep_queries, path="cache", device=plan.device, params=params, shape=sweep_shape,
                               peak_tflops=a.peak_tflops)
                r.pop("scores")
                r.pop("path")
            except Exception as exc:  # noqa: BLE001 - one point out of memory: report it, go on
                if not _is_oom(exc):
                    raise
                r = {"status": "OOM"}
                scorer.features = None
                _free(plan.device)
            sweep.append({"photos_per_batch": ppb, "candidates_per_batch": cpb, **r})
    print(f"sweep rank.photos_per_batch x rank.candidates_per_batch (shared prefix + fresh feature cache, the first "
          f"{len(sweep_queries)} photos):")
    table(sweep, ["photos_per_batch", "candidates_per_batch", "s/photo", "photos/h", "tok/s", "MFU%", "peak_GB", "status"])
    return {"params": vars(params), "prompt": vars(shape), "prompt_s_per_photo": prompt_s / plan.photos,
            "repeat_share": share, "paths": rows, "max_score_diff": diff, "sweep": sweep}


# ----------------------------------------------------------------------------- part 2: precision


def part_precision(plan: Plan, a: argparse.Namespace, models: Models) -> dict[str, Any]:
    import numpy as np

    shape_name = plan.precision_shape
    cfg32, cfg16 = rank_config(plan, a, dtype="float32"), rank_config(plan, a, dtype="bfloat16")
    cfg32 = cfg32.model_copy(update={"feature_cache_mb": 0})
    cfg16 = cfg16.model_copy(update={"feature_cache_mb": 0})
    fp32 = random_backbone(shape_name, device=plan.device, dtype="float32", attn=cfg32.attn_implementation, seed=a.seed)
    bf16 = random_backbone(shape_name, device=plan.device, dtype="bfloat16", attn=cfg16.attn_implementation, seed=a.seed + 7)
    bf16.load_state_dict(fp32.state_dict())  # the same weights, rounded to bf16 (RoPE buffers stay fp32, as loaded)
    adapter = models.adapter(shape_name)
    s32 = scorer_from_backbone(fp32, cfg32, adapter, version="fp32")
    s16 = scorer_from_backbone(bf16, cfg16, adapter, version="bf16")
    queries, _ = ranker_queries(plan, plan.precision_photos, repeat_share=0.0, seed=a.seed + 100)
    s32.score(queries[:1])  # warm-ups
    s16.score(queries[:1])
    t0 = time.perf_counter()
    a32 = s32.score(queries)
    t32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    a16 = s16.score(queries)
    t16 = time.perf_counter() - t0
    diffs = np.concatenate([np.abs(x - y) for x, y in zip(a32, a16)])
    agree = sum(int(np.argmax(x) == np.argmax(y)) for x, y in zip(a32, a16))
    spread = statistics.median(float(x.max() - x.min()) for x in a32)
    row = {"shape": shape_name, "photos": len(queries), "max_abs_diff": float(diffs.max()),
           "median_abs_diff": float(np.median(diffs)), "winner_agrees": f"{agree}/{len(queries)}",
           "median_spread_fp32": spread, "fp32_s": round(t32, 2), "bf16_s": round(t16, 2)}
    print(f"\n-- {shape_name}: fp32 vs bf16, same weights and photos ({plan.candidates} candidates each), shared prefix")
    table([row], list(row))
    del s32, s16, fp32, bf16
    _free(plan.device)
    return {**row, "winner_agreement": agree / len(queries)}


# ----------------------------------------------------------------------------- part 3: embedder


def build_embedder(plan: Plan, kind: str, batch_size: int, *, seed: int) -> Any:
    """georank.embed.Embedder over a random CLIP vision tower of ``plan.clip``'s shape (+ the two G3
    heads for ``g3``), with the job's preprocessing (CLIPImageProcessor from georank.embed)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from georank.embed import Embedder, _image_processor

    if plan.clip is CLIP_L14 and plan.device != "cuda":
        raise RuntimeError("the ViT-L/14 shape is built on a CUDA device only")
    log.info("bench_gpu: building the %s embedder (%s) on %s", kind, plan.embed_dtype, plan.device)
    dtype = getattr(torch, plan.embed_dtype)
    torch.manual_seed(seed)
    with torch.device(plan.device):
        vision = CLIPVisionModelWithProjection._from_config(CLIPVisionConfig(**plan.clip), dtype=dtype).eval()
        p = plan.clip["projection_dim"]
        heads = [torch.nn.Sequential(torch.nn.Linear(p, p), torch.nn.ReLU(), torch.nn.Linear(p, p)).to(dtype).eval()
                 for _ in range(2 if kind == "g3" else 0)]
    return Embedder(vision=vision, heads=heads, processor=_image_processor(Path("/nonexistent"), plan.clip["image_size"]),
                    kind=kind, batch_size=batch_size, device=plan.device, dtype=dtype, version=f"bench-{kind}",
                    projection_dim=p)


def part_embedder(plan: Plan, a: argparse.Namespace, models: Models) -> dict[str, Any]:
    w, h = plan.image_px
    images = [photo(w, h, seed=50_000 + i) for i in range(plan.embed_images)]
    rows = []
    for kind in ("clip", "g3"):
        e = models.embedder(kind, plan.embed_batches[0])
        for bs in plan.embed_batches:
            e.batch_size = bs
            t0 = time.perf_counter()
            for s in range(0, len(images), bs):
                e.processor(images=images[s : s + bs], return_tensors="pt")
            pre_s = time.perf_counter() - t0
            e.embed(images[:bs])  # warm-up
            _sync(plan.device)
            _reset_peak(plan.device)
            t0 = time.perf_counter()
            emb = e.embed(images)
            seconds = time.perf_counter() - t0
            rows.append({"kind": kind, "dim": int(emb.shape[1]), "batch_size": bs, "images": len(images),
                         "s": round(seconds, 3), "images/s": len(images) / seconds,
                         "preprocess_share": pre_s / seconds, "peak_GB": _peak_gb(plan.device)})
        del e
        _free(plan.device)
    print(f"\n-- embedder: {plan.embed_images} images {w}x{h}, {plan.embed_dtype}, vision {plan.clip['num_hidden_layers']} x "
          f"{plan.clip['hidden_size']} at {plan.clip['image_size']} px (preprocess_share: the CPU resize/crop/normalise "
          "timed alone, over the whole embed time)")
    table(rows, list(rows[0]))
    return {"rows": rows}


# ----------------------------------------------------------------------------- part 4: index


def _faiss_gpu() -> tuple[bool, str]:
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return False, f"faiss-gpu is MISSING: faiss {faiss.__version__} has no StandardGpuResources (pip install -e .[gpu], then pip uninstall faiss-cpu)"
    n = faiss.get_num_gpus()
    if n < 1:
        return False, f"faiss {faiss.__version__} has GPU support but sees {n} GPUs"
    return True, f"faiss {faiss.__version__} with GPU support, {n} GPU(s)"


def part_index(plan: Plan, a: argparse.Namespace, models: Models) -> dict[str, Any]:
    import faiss
    import numpy as np
    from bench_index import recall_at_k, vectors  # benchmarks/bench_index.py: the same clustered stand-in

    from georank.config import IndexConfig, RetrieveConfig
    from georank.index import empty_index, train_size
    from georank.retrieve import set_search_params, to_gpu

    k = RetrieveConfig().k
    gpu_ok, gpu_note = _faiss_gpu()
    print(f"\n-- index: {plan.index_n:,} x {plan.index_dim} (clustered), {plan.index_queries} queries in one batch, k={k}; "
          f"{gpu_note}; CPU threads {faiss.omp_get_max_threads()}")
    t0 = time.perf_counter()
    x = vectors(plan.index_n, plan.index_dim, data="clustered", seed=a.seed)
    ids = np.arange(plan.index_n, dtype=np.int64) * 7 + 3
    q = vectors(plan.index_queries, plan.index_dim, data="clustered", seed=a.seed + 1)
    gen_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for kind in ("flat", "ivfflat"):
        cfg = IndexConfig(type=kind, nlist=plan.index_nlist, nprobe=plan.index_nprobe)
        t0 = time.perf_counter()
        train = None
        if kind == "ivfflat":
            pick = np.sort(np.random.default_rng(a.seed).choice(plan.index_n, size=train_size(cfg, plan.index_n), replace=False))
            train = x[pick]
        index = empty_index(plan.index_dim, cfg, train)
        index.add_with_ids(x, ids)
        set_search_params(index, kind, nprobe=cfg.nprobe, k_factor=None)
        build_s = time.perf_counter() - t0
        index.search(q[:8], k)
        t0 = time.perf_counter()
        _, cpu_ids = index.search(q, k)
        cpu_s = time.perf_counter() - t0
        row: dict[str, Any] = {"type": kind + (f" np={cfg.nprobe}/{cfg.nlist}" if kind != "flat" else ""),
                               "build_s": round(build_s, 1), "cpu_ms/q": 1e3 * cpu_s / len(q)}
        if gpu_ok:
            try:
                t0 = time.perf_counter()
                gpu_index = to_gpu(index, what=f"the {kind} bench index")
                row["to_gpu_s"] = round(time.perf_counter() - t0, 1)
                gpu_index.search(q[:8], k)
                t0 = time.perf_counter()
                _, gpu_ids = gpu_index.search(q, k)
                gpu_s = time.perf_counter() - t0
                row.update({"gpu_ms/q": 1e3 * gpu_s / len(q), "speedup": cpu_s / gpu_s,
                            "recall_gpu_vs_cpu": recall_at_k(gpu_ids, cpu_ids)})
                del gpu_index
            except Exception as exc:  # noqa: BLE001 - this type's GPU path fails: say so, measure the other type
                row["gpu_error"] = f"{type(exc).__name__}: {exc}"
                failures.append(f"{kind} on the GPU: {row['gpu_error']}")
        rows.append(row)
        del index
    table(rows, ["type", "build_s", "to_gpu_s", "cpu_ms/q", "gpu_ms/q", "speedup", "recall_gpu_vs_cpu"])
    if not gpu_ok:
        print(f"GPU rows not measured: {gpu_note}")
    out: dict[str, Any] = {"status": "failed", "error": "; ".join(failures)} if failures else {}
    return {**out, "faiss_gpu": gpu_ok, "faiss_note": gpu_note, "generate_s": gen_s, "rows": rows}


# ----------------------------------------------------------------------------- part 5: the core loop


def timed(stages: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding its wall seconds to ``stages[name]`` on every call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def part_loop(plan: Plan, a: argparse.Namespace, models: Models) -> dict[str, Any]:
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    import georank.embed
    import georank.pipeline as P
    import georank.rank.scorer
    from georank import schema as S
    from georank.config import validate_config
    from georank.index import build_index
    from georank.pipeline import decode_photos, geotag_partition
    from georank.run_info import RunInfo

    work = models.work / "loop"
    (work / "gallery").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("GEORANK_CACHE", str(work / "cache"))
    gpu_index, _ = _faiss_gpu() if plan.device == "cuda" else (False, "")
    w, h = plan.image_px
    cfg = validate_config({
        "embed": {"model_uri": "bench://not-loaded/clip", "heads_uri": "bench://not-loaded/heads", "kind": "g3",
                  "batch_size": 128 if not plan.smoke else 8, "device": plan.device, "dtype": plan.embed_dtype,
                  "image_size": plan.clip["image_size"]},
        "index": {"uri": str(work / "index"), "type": "flat", "shards": 2, "device": "cuda" if gpu_index else "cpu"},
        "rank": {"base_model_uri": "bench://not-loaded/ranker", "adapter_uri": "bench://not-loaded/adapter",
                 "device": plan.device, "dtype": plan.dtype, "attn_implementation": rank_config(plan, a).attn_implementation,
                 "max_pixels": min(a.max_pixels, 1024 * 1024), "photos_per_batch": a.photos_per_batch,
                 "candidates_per_batch": a.candidates_per_batch, "feature_cache_mb": a.feature_cache_mb},
        "skip": {"enabled": False},
        "candidates": {"retrieved": 12},
    }, source="bench_gpu loop")
    scorer = models.ranker(plan.loop_shape, cfg.rank)
    embedder = models.embedder("g3", cfg.embed.batch_size)
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    uris, gallery = [], []
    for i in range(plan.loop_gallery):
        p = work / "gallery" / f"g{i:05d}.jpg"
        gallery.append(photo(w, h, seed=70_000 + i))
        gallery[-1].save(p, quality=90)
        uris.append(str(p))
    gallery_vectors = embedder.embed(gallery)
    gids = np.arange(1, plan.loop_gallery + 1, dtype=np.int64)
    meta = pa.table({"gallery_id": gids, "lat_deg": rng.uniform(-60, 60, len(gids)), "lon_deg": rng.uniform(-180, 180, len(gids)),
                     "description": [DESCRIPTIONS[i % len(DESCRIPTIONS)] for i in range(len(gids))], "image_uri": uris})
    manifest = build_index(ids=gids, vectors=gallery_vectors, meta=meta, cfg=cfg.index, uri=cfg.index.uri, s3=cfg.s3,
                           embed_version=embedder.version)
    setup_s = time.perf_counter() - t0

    def photos_table(n: int, offset: int) -> pa.Table:
        blobs = []
        for i in range(n):
            buf = io.BytesIO()
            photo(w, h, seed=90_000 + offset + i).save(buf, format="JPEG", quality=90)
            blobs.append(buf.getvalue())
        return pa.table({"photo_id": [f"p{offset + i:05d}" for i in range(n)], "uri": [None] * n, "image_bytes": blobs},
                        schema=S.PHOTOS)

    run = RunInfo("bench-gpu", dt.date(2026, 12, 1), index_manifest=manifest.to_dict())
    stages: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(georank.embed, "get_embedder", lambda _cfg: embedder))
        stack.enter_context(mock.patch.object(georank.rank.scorer, "get_scorer", lambda _cfg, _s3, *, resolve: scorer))
        for name in ("embed_isolated", "retrieve_isolated", "rank_and_decide"):
            stack.enter_context(mock.patch.object(P, name, timed(stages, name, getattr(P, name))))
        stack.enter_context(mock.patch.object(scorer, "score", timed(stages, "scorer", scorer.score)))
        warm = photos_table(2, 10_000)
        geotag_partition(decode_photos(warm, cfg), cfg, run)  # warm-up: index into the worker cache, kernels
        stages.clear()
        photos = photos_table(plan.loop_photos, 0)
        _sync(plan.device)
        _reset_peak(plan.device)
        results = []
        t_all = time.perf_counter()
        for s in range(0, photos.num_rows, cfg.input.photos_per_batch):
            t0 = time.perf_counter()
            decoded = decode_photos(photos.slice(s, cfg.input.photos_per_batch), cfg)
            stages["decode"] = stages.get("decode", 0.0) + time.perf_counter() - t0
            results.append(geotag_partition(decoded, cfg, run))
        _sync(plan.device)
        total = time.perf_counter() - t_all
    result = pa.concat_tables(results)
    failed = result.filter(pc.is_valid(result.column("error_stage")))
    n = photos.num_rows
    row = {
        "photos": n, "decode_s": stages.get("decode", 0.0), "embed_s": stages.get("embed_isolated", 0.0),
        "retrieve_s": stages.get("retrieve_isolated", 0.0), "rank_s": stages.get("scorer", 0.0),
        "candidates+decide_s": stages.get("rank_and_decide", 0.0) - stages.get("scorer", 0.0),
        "total_s": total, "s/photo": total / n, "photos/h": 3600 * n / total, "errors": failed.num_rows,
        "peak_GB": _peak_gb(plan.device),
    }
    print(f"\n-- loop: {n} photos {w}x{h} in batches of {cfg.input.photos_per_batch}, ranker {plan.loop_shape} {plan.dtype}, "
          f"embedder g3 {plan.embed_dtype}, index flat x 2 shards on {cfg.index.device} ({plan.loop_gallery} gallery photos; "
          f"setup {setup_s:.1f} s), {cfg.candidates.retrieved} candidates per photo, skip rule off")
    table([row], list(row))
    if failed.num_rows:
        reason = failed.column("error_reason")[0].as_py()
        raise RuntimeError(f"{failed.num_rows} of {n} photos became error rows, e.g. {reason}")
    return row


# ----------------------------------------------------------------------------- --paper: the FLOP model alone


def paper(plan: Plan, a: argparse.Namespace) -> dict[str, Any]:
    """Photos/hour per GPU that the FLOP model predicts for each shape and path, from a meta-device
    model (parameter counts; nothing allocated) and the job's prompt token counts."""
    import torch
    from transformers import Qwen2VLModel

    from georank.rank.prompts import encode_query

    rank_cfg = rank_config(plan, a)
    queries, _ = ranker_queries(plan, 3, repeat_share=0.0, seed=a.seed)
    processor = processor_for(rank_cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core's figure (on a shared CPU, OpenMP threads waiting on each other cost 4x here)
    try:
        encode_query(processor, queries[0], rank_cfg)  # warm-up
        t0 = time.perf_counter()
        encoded = [encode_query(processor, q, rank_cfg) for q in queries[1:]]
        prompt_s = (time.perf_counter() - t0) / len(encoded)  # the CPU's share of every path, on this host
    finally:
        torch.set_num_threads(threads)
    shape = PromptShape.of(encoded)
    peak = a.peak_tflops * 1e12
    rows = []
    for name in (["7b", "2b"] if not plan.smoke else ["tiny"]):
        with torch.device("meta"):
            params = Params.of(Qwen2VLModel._from_config(qwen_config(name)))
        for path, r in (("pair", 0.0), ("shared", 0.0), ("cache", a.repeat_share)):
            flops = params.flops(shape.tokens(path), shape.patches(path, r)) / shape.photos
            rows.append({"shape": name, "path": path + (f" @{r:.0%} repeats" if path == "cache" else ""),
                         "tokens/photo": shape.tokens(path) / shape.photos,
                         "patches/photo": shape.patches(path, r) / shape.photos, "TFLOP/photo": flops / 1e12,
                         "photos/h@100%": 3600 * peak / flops,
                         f"photos/h@{a.assumed_mfu:.0%}": 3600 * peak * a.assumed_mfu / flops,
                         f"GPU-h/1M@{a.assumed_mfu:.0%}": 1e6 / (3600 * peak * a.assumed_mfu / flops)})
    print(f"\n-- the FLOP model: {plan.candidates} candidates per photo, images {plan.image_px[0]}x{plan.image_px[1]} "
          f"({encoded[0].pairs[0].images[0].n_tokens} tokens each), prefix {shape.prefix_len_mean:.0f} tokens, whole pair "
          f"{shape.pair_len_mean:.0f}; peak {a.peak_tflops:g} TFLOP/s")
    table(rows, list(rows[0]))
    print(f"prompt building (encode_query: JPEG round trip, resize, patching, tokens) on this host's CPU: {prompt_s:.3f} s "
          f"per photo, one thread: at most {3600 / prompt_s:,.0f} photos/h per Python worker, whatever the GPU")
    return {"prompt": vars(shape), "prompt_s_per_photo": prompt_s, "rows": rows}


# ----------------------------------------------------------------------------- main

RUNNERS: dict[str, Callable[[Plan, argparse.Namespace, Models], dict[str, Any]]] = {
    "ranker": part_ranker, "precision": part_precision, "embedder": part_embedder, "index": part_index, "loop": part_loop,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny models on CPU, every part, < 1 min (the test suite)")
    ap.add_argument("--paper", action="store_true", help="only the FLOP model's forecast (meta-device models; any host)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--shapes", nargs="+", choices=["7b", "2b"], default=["7b", "2b"], help="ranker part (the first: the loop's)")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16", help="rank.dtype")
    ap.add_argument("--attn", choices=["eager", "sdpa", "flash_attention_2"], default="sdpa", help="rank.attn_implementation")
    ap.add_argument("--photos", type=int, default=8, help="ranker part: photos per row")
    ap.add_argument("--candidates", type=int, default=15, help="candidates per photo (the reference README: 12 + 3)")
    ap.add_argument("--photos-per-batch", type=int, default=1, help="rank.photos_per_batch outside the sweep (cluster.yaml)")
    ap.add_argument("--candidates-per-batch", type=int, default=15, help="rank.candidates_per_batch outside the sweep (cluster.yaml)")
    ap.add_argument("--sweep-photos", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--sweep-candidates", type=int, nargs="+", default=[15, 30, 60])
    ap.add_argument("--max-pixels", type=int, default=16384 * 28 * 28,
                    help="rank.max_pixels (default the reference's: a 640x480 image goes in whole, 391 tokens; cluster.yaml: 200704)")
    ap.add_argument("--feature-cache-mb", type=int, default=512, help="rank.feature_cache_mb")
    ap.add_argument("--repeat-share", type=float, default=0.34, help="share of candidate images seen before (demo night: 34%%)")
    ap.add_argument("--precision-photos", type=int, default=20)
    ap.add_argument("--embed-images", type=int, default=256)
    ap.add_argument("--index-n", type=int, default=1_000_000)
    ap.add_argument("--index-queries", type=int, default=1000)
    ap.add_argument("--loop-photos", type=int, default=64)
    ap.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS_H100_BF16, help="the GPU's dense bf16 peak (H100 SXM5: 989)")
    ap.add_argument("--assumed-mfu", type=float, default=0.4, help="--paper: the MFU the forecast assumes")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    a.parts = [p for p in PARTS if p in a.parts]
    return a


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": device, "host": platform.node(), "cpus": os.cpu_count()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_GB=round(p.total_memory / 1e9, 1), cuda=torch.version.cuda)
    try:
        import faiss

        env["faiss"] = faiss.__version__
        env["faiss_gpu"] = hasattr(faiss, "StandardGpuResources")
    except ImportError:
        env["faiss"] = None
    return env


def run_parts(plan: Plan, a: argparse.Namespace) -> dict[str, Any]:
    """Every chosen part in order, each in its own try: {part: {"status": "ok" | "failed", ...}}."""
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        models = Models(plan, a, Path(tmp))
        for name in a.parts:
            print(f"\n== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                result = RUNNERS[name](plan, a, models)
                report[name] = {"status": "ok", **result}  # a part may report its own failure (and still its rows)
                if report[name]["status"] != "ok":
                    print(f"{name}: FAILED: {report[name].get('error')}")
            except Exception as exc:  # noqa: BLE001 - one part's failure is reported; the others still run
                traceback.print_exc()
                print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
                report[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                _free(plan.device)
            report[name]["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"({name}: {report[name]['status']}, {report[name]['seconds']} s)", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import torch  # the check below is the first thing: no model is built before it

    if not a.smoke and not a.paper and not torch.cuda.is_available():
        print(f"bench_gpu: needs a CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is "
              "False). Run it on a GPU host, or with --smoke (tiny models on CPU) or --paper (the FLOP model only).",
              file=sys.stderr)
        return 2
    plan = make_plan(a)
    wall0 = time.perf_counter()
    env = environment(plan.device if torch.cuda.is_available() or plan.smoke else "cpu")
    print(f"# bench_gpu{' --smoke' if plan.smoke else ''}: {json.dumps(env)}; load average {os.getloadavg()[0]:.1f}", flush=True)
    if a.paper:
        out = paper(plan, a)
        print(json.dumps({"bench": "bench_gpu", "mode": "paper", "env": env, "paper": out}, default=str))
        return 0
    threads = torch.get_num_threads()
    if plan.smoke:
        torch.set_num_threads(1)  # tiny ops: one thread is as fast, and robust on a shared CPU (no OpenMP spin-waits)
        print("# smoke: tiny models of the same architectures on CPU, one thread; MFU is against the H100 peak, so meaningless here")
    try:
        try:
            forecast = paper(plan, a)  # cheap: meta-device models and two photos' prompts
        except Exception as exc:  # noqa: BLE001 - the forecast is a preamble: the parts still run
            traceback.print_exc()
            forecast = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        report = run_parts(plan, a)
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - wall0
    print("\nparts: " + ", ".join(f"{n} {r['status']} ({r['seconds']} s)" for n, r in report.items()) + f"; wall {wall:.0f} s")
    print(json.dumps({"bench": "bench_gpu", "smoke": plan.smoke, "env": env, "peak_tflops": a.peak_tflops,
                      "wall_s": round(wall, 1), "paper": forecast, "parts": report}, default=str))
    return 0 if all(r["status"] == "ok" for r in report.values()) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    for noisy in ("georank", "transformers", "peft", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.exit(main())
