"""Per-pair vs shared-prefix GeoRanker scoring: time both in one run and print the ratio.

A small Qwen2-VL of the real architecture (vision tower + merger + M-RoPE decoder, LoRA on
q/k/v, score head) scores 15 candidates per photo with realistic token counts: a ~400-token
query image, ~400-token candidate images (560x560 px -> 40x40 patches -> 400 merged tokens),
descriptions and five negatives. Both paths score the same pairs; the script checks they agree.

The expected speed-up is the FLOP ratio of the two paths (printed for this model and for the
real 7B shape): shared prefix saves the prefix (template + query image + "How far ... latitude:")
and the query image's vision pass for 14 of 15 pairs, but still pays every suffix, including
its candidate image. Measured ratios are one run's numbers on whatever machine runs this.

    .venv/bin/python benchmarks/bench_shared_prefix.py            # CPU, fp32
    .venv/bin/python benchmarks/bench_shared_prefix.py --device cuda --dtype bfloat16 --hidden-size 1024
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from georank.config import RankConfig
from georank.rank import RankCandidate, RankQuery
from georank.rank.prompts import encode_query
from georank.rank.scorer import build_scorer
from georank.rank.tiny import build_tiny_ranker


def _image(side_px: int, seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    # smooth-ish content so JPEG round trips behave like photos, not noise
    small = rng.integers(0, 256, (side_px // 8, side_px // 8, 3), dtype=np.uint8)
    return PIL.Image.fromarray(small).resize((side_px, side_px), PIL.Image.Resampling.BILINEAR)


def _queries(n_photos: int, n_candidates: int, side_px: int) -> list[RankQuery]:
    rng = np.random.default_rng(0)
    out = []
    for q in range(n_photos):
        negatives = [
            RankCandidate(
                float(rng.uniform(-60, 60)), float(rng.uniform(-180, 180)), "Springfield Illinois United States", None
            )
            for _ in range(5)
        ]
        cands = [
            RankCandidate(
                float(rng.uniform(-60, 60)),
                float(rng.uniform(-180, 180)),
                "Rio de Janeiro Rio de Janeiro Brazil",
                _image(side_px, seed=1000 * q + c),
            )
            for c in range(n_candidates)
        ]
        out.append(RankQuery(_image(side_px, seed=q), cands, negatives))
    return out


def decoder_flops(cfg, n_tokens: int, n_context: int) -> float:
    """FLOPs of ``n_tokens`` new decoder tokens after ``n_context`` cached ones (no lm_head)."""
    t = cfg.text_config
    h, kv = t.hidden_size, t.num_key_value_heads * (t.hidden_size // t.num_attention_heads)
    linear = 2 * (2 * h * h + 2 * h * kv + 3 * h * t.intermediate_size)  # per token per layer
    attn = 4 * h * (n_tokens * n_context + n_tokens * (n_tokens + 1) / 2)  # QK^T + AV, causal
    return t.num_hidden_layers * (linear * n_tokens + attn)


def vision_flops(cfg, n_patches: int) -> float:
    """FLOPs of the vision tower + merger on one image of ``n_patches`` 14x14 patches."""
    v = cfg.vision_config
    e = v.embed_dim
    block = 2 * n_patches * (4 * e * e + 2 * e * e * v.mlp_ratio) + 4 * e * n_patches * n_patches
    patch_embed = 2 * n_patches * (3 * v.temporal_patch_size * v.patch_size**2) * e
    m = e * v.spatial_merge_size**2
    merger = 2 * (n_patches // v.spatial_merge_size**2) * (m * m + m * v.hidden_size)
    return v.depth * block + patch_embed + merger


def flop_ratio(cfg, prefix_len: int, suffix_lens: list[int], query_patches: int, cand_patches: list[int]) -> float:
    per_pair = sum(
        decoder_flops(cfg, prefix_len + s, 0) + vision_flops(cfg, query_patches) + vision_flops(cfg, c)
        for s, c in zip(suffix_lens, cand_patches)
    )
    shared = decoder_flops(cfg, prefix_len, 0) + vision_flops(cfg, query_patches)
    shared += sum(decoder_flops(cfg, s, prefix_len) + vision_flops(cfg, c) for s, c in zip(suffix_lens, cand_patches))
    return per_pair / shared


def _time_once(fn, device: str) -> tuple[float, list]:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, result


def _time_alternating(fns: dict, repeats: int, device: str) -> dict[str, tuple[float, float, list]]:
    """(min, median, last result) per function, the functions run in alternation so that a
    machine shared with other work slows both alike; min is the least disturbed run."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, list] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t, results[name] = _time_once(fn, device)
            times[name].append(t)
    return {name: (min(ts), statistics.median(ts), results[name]) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=15)
    ap.add_argument("--image-side-px", type=int, default=560, help="560 px -> 400 image tokens")
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate-size", type=int, default=1024)
    ap.add_argument("--vision-depth", type=int, default=2)
    ap.add_argument("--vision-embed-dim", type=int, default=64)
    ap.add_argument("--candidates-per-batch", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--attn", default="sdpa", choices=["eager", "sdpa", "flash_attention_2"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    side = args.image_side_px
    cfg = RankConfig(
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn,
        min_pixels=4 * 28 * 28,
        max_pixels=max(side * side, 4 * 28 * 28),
        photos_per_batch=1,
        candidates_per_batch=args.candidates_per_batch,
    )
    with tempfile.TemporaryDirectory() as tmp:
        base, adapter = build_tiny_ranker(
            Path(tmp),
            hidden_size=args.hidden_size,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.kv_heads,
            intermediate_size=args.intermediate_size,
            vision_depth=args.vision_depth,
            vision_embed_dim=args.vision_embed_dim,
        )
        scorer = build_scorer(base, adapter, cfg)
    model_cfg = scorer.model.config
    queries = _queries(args.photos, args.candidates, side)

    enc = encode_query(scorer.processor, queries[0], cfg)
    prefix_len = enc.prefix_len
    suffix_lens = [len(p.input_ids) - prefix_len for p in enc.pairs]
    q_patches = int(np.prod(enc.pairs[0].images[0].grid_thw))
    c_patches = [int(np.prod(p.images[1].grid_thw)) for p in enc.pairs]
    n_params = sum(p.numel() for n, p in scorer.model.named_parameters() if "embed_tokens" not in n)
    print(
        f"model: Qwen2-VL hidden {args.hidden_size}, {args.layers} layers, vision {args.vision_embed_dim}x{args.vision_depth}, "
        f"{n_params / 1e6:.1f}M non-embedding params, {args.device} {args.dtype} {args.attn}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"prompt: {args.candidates} candidates/photo x {args.photos} photos; query image {enc.pairs[0].images[0].n_tokens} tokens, "
        f"candidate image {enc.pairs[0].images[1].n_tokens} tokens; shared prefix {prefix_len} tokens, "
        f"suffix {min(suffix_lens)}-{max(suffix_lens)} tokens, whole pair {prefix_len + suffix_lens[0]} tokens"
    )

    scorer.score_per_pair(queries[:1])  # warm-up
    scorer.score_shared_prefix(queries[:1])
    timed = _time_alternating(
        {
            "pair": lambda: scorer.score_per_pair(queries),
            "shared": lambda: scorer.score_shared_prefix(queries),
            "encode": lambda: [encode_query(scorer.processor, q, cfg) for q in queries],
        },
        args.repeats,
        args.device,
    )
    t_pair, med_pair, s_pair = timed["pair"]
    t_shared, med_shared, s_shared = timed["shared"]
    t_encode = timed["encode"][0]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(s_pair, s_shared))

    from transformers import Qwen2VLConfig

    real = Qwen2VLConfig(
        text_config={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        },
        vision_config={"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "num_heads": 16, "mlp_ratio": 4},
    )
    ratio_small = flop_ratio(model_cfg, prefix_len, suffix_lens, q_patches, c_patches)
    ratio_real = flop_ratio(real, prefix_len, suffix_lens, q_patches, c_patches)
    ratio_tokens = sum(prefix_len + s for s in suffix_lens) / (prefix_len + sum(suffix_lens))
    n_pairs = args.photos * args.candidates
    print(
        f"per-pair      : {t_pair:8.3f} s min, {med_pair:8.3f} s median of {args.repeats} ({1000 * t_pair / n_pairs:7.1f} ms/pair)"
    )
    print(
        f"shared-prefix : {t_shared:8.3f} s min, {med_shared:8.3f} s median of {args.repeats} ({1000 * t_shared / n_pairs:7.1f} ms/pair)"
    )
    print(f"  of which CPU prompt building (encode_query, both paths): {t_encode:.3f} s")
    print(
        f"measured ratio (per-pair / shared-prefix): {t_pair / t_shared:.2f}x (min), {med_pair / med_shared:.2f}x (median)"
    )
    print(f"model ratio excluding prompt building: {(t_pair - t_encode) / max(t_shared - t_encode, 1e-9):.2f}x")
    print(
        f"FLOP ratio: {ratio_small:.2f}x for this model, {ratio_real:.2f}x for Qwen2-VL-7B at this prompt shape "
        f"(decoder-token ratio {ratio_tokens:.2f}x)"
    )
    print(f"max |per-pair - shared-prefix| score difference: {diff:.2e}")


if __name__ == "__main__":
    main()
