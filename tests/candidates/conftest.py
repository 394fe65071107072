"""Fixtures of the candidate-source tests: a tiny GeoRanker (base + adapter) and a tiny VLM that answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_ranker(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(base_dir, adapter_dir) of a tiny GeoRanker (a real Qwen2VLForConditionalGeneration base)."""
    from georank.rank.tiny import build_tiny_ranker

    return build_tiny_ranker(tmp_path_factory.mktemp("gen-ranker"), seed=0)


ANSWER_TEXT = "latitude: 12, lon=34"  # what the answering VLM says, whatever the photo
ANSWER_LATLON_DEG = (12.0, 34.0)


@pytest.fixture(scope="session")
def answering_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real Qwen2-VL checkpoint (``from_pretrained`` directory) whose weights are set by hand
    so that it always answers ``ANSWER_TEXT``: every decoder layer's output projections (attention
    ``o_proj``, MLP ``down_proj``) are zero, so the last hidden state is the current token's
    embedding and the model is a bigram model; the embeddings and ``lm_head`` then chain
    ``"\\n"`` (the generation prompt's last token) -> the answer's tokens -> ``<|im_end|>`` with a
    logit margin that no sampling temperature up to 10 undoes. Not trained, not a mock: the real
    architecture, loaded and sampled by georank.generate like any checkpoint."""
    from transformers import Qwen2VLForConditionalGeneration

    from georank.rank.tiny import tiny_qwen2vl_config
    from georank.rank.tokenizer import build_qwen2vl_processor

    out = tmp_path_factory.mktemp("answering-vlm")
    processor = build_qwen2vl_processor(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
    chain = [198] + processor.tokenizer(ANSWER_TEXT, add_special_tokens=False)["input_ids"] + [151645]
    assert len(set(chain)) == len(chain), "a bigram chain needs distinct tokens"
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config()).eval()
    hidden = model.config.text_config.hidden_size
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.language_model.embed_tokens.weight
        model.lm_head.weight.zero_()
        for j, (cur, nxt) in enumerate(zip(chain, chain[1:])):
            embed[cur] = torch.nn.functional.one_hot(torch.tensor(j), hidden).float()
            model.lm_head.weight[nxt, j] = 100.0  # the normalised one-hot is sqrt(hidden) long: margin 800
    model.save_pretrained(str(out), safe_serialization=True)
    processor.save_pretrained(str(out))
    return out
