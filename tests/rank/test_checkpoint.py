"""The loader: both key layouts load to PEFT's own scores; anything incomplete fails naming the key."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from rank_helpers import noise_image
from safetensors.torch import load_file, save_file

from georank.config import RankConfig
from georank.errors import CheckpointError, SetupError
from georank.rank.checkpoint import load_ranker, normalize_key
from georank.rank.model import GeoRankerModel
from georank.rank.prompts import RankCandidate, RankQuery, encode_query
from georank.rank.scorer import Scorer

CFG = RankConfig(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)
Q_PROJ_A = "base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_A.weight"
HEAD = "base_model.model.value_head.weight"


def _query() -> RankQuery:
    negatives = [RankCandidate(-5.0 - i, 100.0 + i, f"Place {i}", None) for i in range(5)]
    return RankQuery(
        noise_image(112, 84, seed=10),
        [
            RankCandidate(48.8566, 2.3522, "Paris France", noise_image(56, 84, seed=11)),
            RankCandidate(-33.8688, 151.2093, None, None),
            RankCandidate(0.5, -0.5, "", noise_image(84, 56, seed=12)),
        ],
        negatives,
    )


def _batch(scorer: Scorer):
    enc = encode_query(scorer.processor, _query(), CFG)
    return scorer._full_batch([p.input_ids for p in enc.pairs], [list(p.images) for p in enc.pairs])


def _peft_scores(base_dir: Path, adapter_dir: Path, inputs) -> tuple[torch.Tensor, list[str]]:
    """Scores through PEFT's own PeftModel.from_pretrained (+ the warnings it raised)."""
    from peft import PeftModel
    from transformers import Qwen2VLForConditionalGeneration

    backbone = Qwen2VLForConditionalGeneration.from_pretrained(str(base_dir), dtype=torch.float32).model
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(GeoRankerModel(backbone), str(adapter_dir)).eval()
    with torch.no_grad():
        scores = peft_model(**inputs.as_kwargs())
    return scores, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def ours_new(tiny_new, processor) -> Scorer:
    return Scorer(load_ranker(*tiny_new), processor, CFG)


def test_normalize_key_maps_both_layouts() -> None:
    new = "base_model.model.model.language_model.layers.7.self_attn.v_proj.lora_B.weight"
    old = "base_model.model.model.layers.7.self_attn.v_proj.lora_B.weight"
    assert normalize_key(new) == normalize_key(old) == "model.language_model.layers.7.self_attn.v_proj.lora_B.weight"
    assert normalize_key(HEAD) == "value_head.weight"


def test_new_layout_equals_peft(tiny_new, ours_new) -> None:
    inputs = _batch(ours_new)
    ours = ours_new.model.score(inputs)
    theirs, _ = _peft_scores(*tiny_new, inputs)
    assert ours.shape == (3,)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)


def test_old_layout_equals_peft(tiny_new, tiny_old, ours_new, processor) -> None:
    """The old layout (as the released checkpoint) loads to the same scores as PEFT on the same
    weights; PEFT itself, given the old-layout file under transformers 5, only warns and runs an
    untrained adapter (the silent failure this loader exists to prevent)."""
    ours_old = Scorer(load_ranker(*tiny_old), processor, CFG)
    inputs = _batch(ours_old)
    ours = ours_old.model.score(inputs)
    theirs, _ = _peft_scores(*tiny_new, inputs)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    silently_wrong, caught = _peft_scores(*tiny_old, inputs)
    assert any("missing adapter keys" in m for m in caught)
    assert not torch.allclose(silently_wrong, theirs, atol=1e-3)


def test_adapter_changes_scores(tiny_new, ours_new) -> None:
    """The tiny adapter is not a no-op: without LoRA the scores differ (so a dropped tensor shows)."""
    from transformers import Qwen2VLForConditionalGeneration

    inputs = _batch(ours_new)
    bare = GeoRankerModel(Qwen2VLForConditionalGeneration.from_pretrained(str(tiny_new[0])).model)
    bare.value_head.weight.data.copy_(ours_new.model.value_head.weight.data)
    with torch.no_grad():
        assert not torch.allclose(bare.score(inputs), ours_new.model.score(inputs), atol=1e-3)


def _broken_adapter(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "adapter_model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "adapter_model.safetensors"), metadata={"format": "pt"})
    return dst


def test_missing_lora_tensor_fails_naming_it(tiny_new, tmp_path) -> None:
    bad = _broken_adapter(tiny_new[1], tmp_path / "a", lambda t: t.pop(Q_PROJ_A))
    with pytest.raises(CheckpointError, match=r"expected 12 LoRA tensors .*missing keys: " + re.escape(Q_PROJ_A)):
        load_ranker(tiny_new[0], bad)


def test_missing_lora_tensor_old_layout(tiny_old, tmp_path) -> None:
    old_key = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"
    bad = _broken_adapter(tiny_old[1], tmp_path / "a", lambda t: t.pop(old_key))
    with pytest.raises(CheckpointError, match=r"missing keys: .*layers\.0\.self_attn\.v_proj\.lora_B\.weight"):
        load_ranker(tiny_old[0], bad)


def test_missing_head_fails_naming_it(tiny_new, tmp_path) -> None:
    bad = _broken_adapter(tiny_new[1], tmp_path / "a", lambda t: t.pop(HEAD))
    with pytest.raises(CheckpointError, match=r"missing keys: " + re.escape(HEAD)):
        load_ranker(tiny_new[0], bad)


def test_wrong_shape_fails_naming_it(tiny_new, tmp_path) -> None:
    def edit(t: dict) -> None:
        t[Q_PROJ_A] = torch.zeros(t[Q_PROJ_A].shape[0] + 1, t[Q_PROJ_A].shape[1])

    bad = _broken_adapter(tiny_new[1], tmp_path / "a", edit)
    with pytest.raises(
        CheckpointError, match=r"wrong shapes: " + re.escape(f"{Q_PROJ_A}: expected (16, 64), got (17, 64)")
    ):
        load_ranker(tiny_new[0], bad)


def test_unexpected_key_fails_naming_it(tiny_new, tmp_path) -> None:
    extra = "base_model.model.model.language_model.layers.0.mlp.up_proj.lora_A.weight"
    bad = _broken_adapter(tiny_new[1], tmp_path / "a", lambda t: t.__setitem__(extra, torch.zeros(16, 64)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: " + re.escape(extra)):
        load_ranker(tiny_new[0], bad)


def test_lora_hyperparameters_come_from_adapter_config(tmp_path) -> None:
    from georank.rank.tiny import build_tiny_ranker

    base, adapter = build_tiny_ranker(tmp_path / "r4", seed=1, lora_r=4, lora_alpha=16, num_hidden_layers=1)
    model = load_ranker(base, adapter)
    q = model.model.language_model.layers[0].self_attn.q_proj
    assert q.r["default"] == 4 and q.scaling["default"] == 4.0
    assert not hasattr(model.model.language_model.layers[0].mlp.up_proj, "lora_A")  # not a target
    # the same tensors under a config that says r=8 do not fit: r is read, never assumed
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "r": 8}))
    with pytest.raises(CheckpointError, match=r"r=8.*wrong shapes: .*expected \(8, 64\), got \(4, 64\)"):
        load_ranker(base, adapter)


def test_pickle_only_adapter_is_refused(tiny_new, tmp_path) -> None:
    bad = tmp_path / "a"
    shutil.copytree(tiny_new[1], bad)
    (bad / "adapter_model.safetensors").rename(bad / "adapter_model.bin")
    with pytest.raises(CheckpointError, match=r"expected adapter_model.safetensors, got only \['adapter_model.bin'\]"):
        load_ranker(tiny_new[0], bad)


def test_base_with_missing_weight_fails_naming_it(tiny_new, tmp_path) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_new[0], base)
    tensors = load_file(str(base / "model.safetensors"))
    tensors.pop("model.visual.blocks.1.attn.qkv.weight")
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing keys: .*visual\.blocks\.1\.attn\.qkv\.weight"):
        load_ranker(base, tiny_new[1])


def test_bfloat16_as_the_published_checkpoint_runs(tiny_new, processor, ours_new) -> None:
    """dtype from config: bf16 backbone and head, LoRA kept in fp32 as PeftModel does; both
    scoring paths run and stay near the fp32 scores."""
    cfg = CFG.model_copy(update={"dtype": "bfloat16"})
    model = load_ranker(*tiny_new, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.value_head.weight.dtype == torch.bfloat16
    q = model.model.language_model.layers[0].self_attn.q_proj
    assert q.lora_A["default"].weight.dtype == torch.float32
    scorer = Scorer(model, processor, cfg)
    per_pair = scorer.score_per_pair([_query()])[0]
    shared = scorer.score_shared_prefix([_query()])[0]
    fp32 = ours_new.score_per_pair([_query()])[0]
    assert per_pair.dtype == shared.dtype == np.float32
    assert np.abs(per_pair - fp32).max() < 0.1 and np.abs(shared - per_pair).max() < 0.1


def test_cuda_without_a_gpu_fails_clearly(tiny_new, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SetupError, match="rank.device is 'cuda' but torch sees no CUDA device"):
        load_ranker(*tiny_new, device="cuda")


# --- versions: content hashes, each file read once per host -----------------------------


@pytest.fixture
def digest_cache(tmp_path, monkeypatch):
    """A fresh host digest cache (on disk and in this process)."""
    from georank.storage import digests as digest_mod

    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digest_mod, "_memo", {})
    reads: list[str] = []
    real = digest_mod._feed

    def counting(h, path):
        reads.append(Path(path).name)
        real(h, path)

    monkeypatch.setattr(digest_mod, "_feed", counting)
    return reads


def _sharded_base(out: Path, seed: int) -> Path:
    """A base directory as large checkpoints ship: two safetensors shards + the index json,
    tokenizer and processor files; same names, shapes and headers for every seed."""
    from safetensors.numpy import save_file as save_np

    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    (out / "config.json").write_text('{"model_type": "qwen2_vl", "hidden_size": 8}')
    shards = {"model-00001-of-00002.safetensors": ["a.weight"], "model-00002-of-00002.safetensors": ["b.weight"]}
    for fname, keys in shards.items():
        save_np({k: rng.standard_normal((4, 8)).astype(np.float32) for k in keys}, str(out / fname))
    weight_map = {k: fname for fname, keys in shards.items() for k in keys}
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (out / "tokenizer_config.json").write_text('{"padding_side": "left"}')
    (out / "preprocessor_config.json").write_text('{"patch_size": 14}')
    (out / "generation_config.json").write_text('{"temperature": 0.7}')
    return out


def test_model_version_tells_retrained_weights_apart(tmp_path, digest_cache) -> None:
    """Same architecture, shapes and headers, other weights (a retrained base): other version.
    (The old fingerprint hashed names, sizes and headers only and gave both the same.)"""
    from georank.rank.checkpoint import model_version

    a, b = _sharded_base(tmp_path / "a", seed=0), _sharded_base(tmp_path / "b", seed=1)
    shard = "model-00002-of-00002.safetensors"
    assert (a / shard).stat().st_size == (b / shard).stat().st_size
    va = model_version(a)
    assert re.fullmatch(r"[0-9a-f]{16}", va) and va != model_version(b)
    assert model_version(_sharded_base(tmp_path / "a_copy", seed=0)) == va  # content, not the path
    (a / "generation_config.json").write_text('{"temperature": 0.1}')  # no text is generated: no effect
    assert model_version(a) == va
    (a / "tokenizer_config.json").write_text('{"padding_side": "right"}')  # the prompt's tokens: counts
    assert model_version(a) != va


def test_versions_read_each_file_once(tmp_path, tiny_new, digest_cache) -> None:
    from georank.rank.checkpoint import adapter_version, model_version
    from georank.storage import digests as digest_mod

    base = _sharded_base(tmp_path / "base", seed=0)
    first = model_version(base)
    hashed = sorted(digest_cache)
    assert hashed == sorted([
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "preprocessor_config.json", "tokenizer_config.json",
    ])
    av = adapter_version(tiny_new[1])
    assert model_version(base) == first and adapter_version(tiny_new[1]) == av
    digest_mod._memo.clear()  # a new worker process on the same host: reads the stored digests
    assert model_version(base) == first and adapter_version(tiny_new[1]) == av
    assert len(digest_cache) == len(hashed) + 2  # + the adapter's config and weights, once each
