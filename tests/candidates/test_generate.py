"""Generated candidates on a tiny real Qwen2-VL: one batched generate call, seeded, adapter off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from georank.config import GeorankConfig
from georank.generate import Generator, adapters_disabled, build_generator

torch.set_num_threads(1)


def _cfg(tiny_ranker: tuple[Path, Path], **generated: Any) -> GeorankConfig:
    base, adapter = tiny_ranker
    return GeorankConfig.model_validate(
        {
            "rank": {"base_model_uri": str(base), "adapter_uri": str(adapter), "max_pixels": 56 * 56},
            "candidates": {"generated": {"enabled": True, "samples": 3, "n": 2, "max_new_tokens": 8, **generated}},
        }
    )


def _images(n: int) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray(rng.integers(0, 255, (60 + 8 * i, 70, 3), dtype=np.uint8)) for i in range(n)]


def _count_generate(gen: Generator) -> list[int]:
    calls: list[int] = []
    real = gen.lm.generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(int(kwargs["input_ids"].shape[0]))
        return real(*args, **kwargs)

    gen.lm.generate = counted
    return calls


def test_one_generate_call_per_batch_and_deterministic(tiny_ranker: tuple[Path, Path]) -> None:
    gen = build_generator(_cfg(tiny_ranker))
    calls = _count_generate(gen)
    images = _images(3)
    first = gen.answers(images)
    assert calls == [3], f"expected ONE generate call for the batch of 3 photos, got calls with batch sizes {calls}"
    assert [len(a.texts) for a in first] == [3, 3, 3]  # samples per photo
    again = gen.answers(images)
    assert [a.texts for a in again] == [a.texts for a in first]  # same seed, same answers
    assert len(calls) == 2
    # every answer is either kept/valid or dropped with a reason: nothing silent
    for a in first:
        assert a.valid + sum(a.dropped.values()) == 3
        assert len(a.latlon_deg) <= 2
    other = build_generator(_cfg(tiny_ranker, seed=1)).answers(images)
    assert [a.texts for a in other] != [a.texts for a in first]  # another seed, other samples


def test_shares_the_rankers_backbone_with_the_adapter_off(tiny_ranker: tuple[Path, Path]) -> None:
    """Greedy answers of the shared model (adapter off) equal those of the plain base checkpoint,
    and the ranker's LoRA is on again afterwards."""
    from transformers import Qwen2VLForConditionalGeneration

    from georank.rank.scorer import get_scorer

    cfg = _cfg(tiny_ranker, temperature=0.0)
    gen = build_generator(cfg)
    scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)
    assert gen.lm.model is scorer.model.model  # one copy of the backbone weights
    assert gen.adapter_owner is scorer.model

    plain = Qwen2VLForConditionalGeneration.from_pretrained(str(tiny_ranker[0]), local_files_only=True).eval()
    reference = Generator(plain, gen.processor, gen.cfg, gen.rank_cfg)
    images = _images(2)
    shared_texts = gen.sample(images)
    assert shared_texts == reference.sample(images)
    assert [len(t) for t in shared_texts] == [1, 1]  # greedy: one answer per photo

    # with the adapter ON the shared model answers differently: the switch is what makes them equal
    adapter_on = Generator(gen.lm, gen.processor, gen.cfg, gen.rank_cfg, adapter_owner=None)
    assert adapter_on.sample(images) != shared_texts

    lora = [m for n, m in scorer.model.named_modules() if n.endswith("q_proj") and hasattr(m, "disable_adapters")]
    assert lora and not any(m.disable_adapters for m in lora)
    with adapters_disabled(scorer.model) as n_layers:
        assert n_layers == len([m for m in scorer.model.modules() if hasattr(m, "lora_A")])
        assert all(m.disable_adapters for m in lora)
    assert not any(m.disable_adapters for m in lora)
    assert not any(p.requires_grad for p in scorer.model.parameters())


@pytest.mark.parametrize("prompt", ["seed", "reference"])
def test_prompt_choice_reaches_the_model(tiny_ranker: tuple[Path, Path], prompt: str) -> None:
    from georank.generate import PROMPTS

    gen = build_generator(_cfg(tiny_ranker, prompt=prompt))
    ids, _ = gen.prompt_ids(_images(1)[0])
    text = gen.processor.tokenizer.decode(ids)
    assert PROMPTS[prompt] in text
    assert text.rstrip().endswith("assistant")
