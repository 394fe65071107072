"""The trainer on the tiny world: training data as a versioned Delta table, an adapter that the
geotag job's loader and PEFT's own loader both load with equal scores, and resume after a crash."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from support import tiny_conf

from georank.config import GeorankConfig, load_config

TRAIN = ["train.grouping=spread", "train.queries_per_step=1", "train.log_every=1", "train.head_lr=0.01", "train.lr=0.001"]


def _cfg(world: Path, tmp: Path, *extra: str) -> GeorankConfig:
    return load_config(tiny_conf(world, tmp / "train.yaml"), [*TRAIN, *extra])


@pytest.fixture(scope="module")
def groups(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    from georank.train.build import build_training_data

    tmp = tmp_path_factory.mktemp("train-groups")
    cfg = _cfg(tiny_world, tmp)
    out = str(tmp / "groups")
    summary = build_training_data(cfg, mode="error", out_uri=out, n_queries=24)
    from deltalake import DeltaTable

    assert summary["table_version"] == DeltaTable(out).version() and summary["groups"] == 24
    return out


@pytest.fixture(scope="module")
def processor(tiny_world: Path) -> Any:
    from georank.rank.tokenizer import load_processor

    return load_processor(tiny_world / "models" / "ranker" / "base", min_pixels=4 * 28 * 28, max_pixels=50176)


def test_training_data_is_a_versioned_delta_table(tiny_world: Path, groups: str, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from georank.errors import WriteError
    from georank.schema import TRAINING_GROUPS
    from georank.train.build import build_training_data

    table = DeltaTable(groups).to_pyarrow_table()
    assert table.schema.names == TRAINING_GROUPS.names
    assert table.schema.field("group_dist_km").type == TRAINING_GROUPS.field("group_dist_km").type
    for row in table.to_pylist():
        assert row["query_id"] not in row["neighbour_id"] and row["query_id"] not in row["group_id"]
        assert len(row["neighbour_id"]) == 20 and len(row["group_id"]) == 5
        assert min(row["group_dist_km"]) == row["group_dist_km"][0]  # spread: the nearest gallery photo first
    cfg = _cfg(tiny_world, tmp_path)
    with pytest.raises(WriteError, match="exists"):
        build_training_data(cfg, mode="error", out_uri=groups, n_queries=3)


def _queries(cfg: GeorankConfig, groups: str, n: int) -> list[Any]:
    from deltalake import DeltaTable

    from georank.decode import decode_image
    from georank.io import PhotoReader
    from georank.train.dataset import row_to_query

    reader = PhotoReader(cfg.s3)
    out = []
    for row in DeltaTable(groups).to_pyarrow_table().slice(0, n).to_pylist():
        images = [decode_image(reader.read(u), cfg.decode) for u in [row["query_uri"], *row["group_uri"]]]
        out.append(row_to_query(row, images, negatives_from=15, negatives_count=5))
    return out


def test_adapter_loads_in_the_geotag_job_and_through_peft_with_equal_scores(
    tiny_world: Path, groups: str, processor: Any, tmp_path: Path
) -> None:
    from peft import PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    from georank.rank.checkpoint import load_backbone
    from georank.rank.model import GeoRankerModel
    from georank.rank.scorer import Scorer, build_scorer
    from georank.train.stages import train_lora

    cfg = _cfg(tiny_world, tmp_path, "train.steps=3")
    base = tiny_world / "models" / "ranker" / "base"
    adapter = tmp_path / "adapter"
    train_lora(cfg, base_dir=base, data_uri=groups, out_dir=adapter, checkpoint_dir=None, processor=processor)
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert "base_model.model.value_head.weight" in saved
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in saved.items())  # trained: B moved off PEFT's zeros
    assert (adapter / "adapter_config.json").read_text().count('"value_head"') == 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the geotag job's loader: strict, and silent
        ours = build_scorer(base, adapter, cfg.rank)

    model = GeoRankerModel(load_backbone(base, device="cpu", dtype="float32", attn_implementation="sdpa"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    assert not [w for w in caught if "key" in str(w.message).lower()], [str(w.message) for w in caught]
    result = set_peft_model_state_dict(peft_model, load_peft_weights(str(adapter)))
    # every LoRA tensor and the head's trained copy loaded (the frozen original head is not in an adapter)
    assert not [k for k in result.missing_keys if "lora_" in k or "modules_to_save" in k], result.missing_keys
    assert not result.unexpected_keys
    head = peft_model.base_model.model.value_head.modules_to_save["default"].weight
    assert torch.equal(head.detach(), saved["base_model.model.value_head.weight"])
    peft_model.eval()
    theirs = Scorer(peft_model.base_model.model, ours.processor, cfg.rank)

    queries = _queries(cfg, groups, 2)
    a, b = ours.score_per_pair(queries), theirs.score_per_pair(queries)
    for x, y in zip(a, b):
        assert torch.allclose(torch.from_numpy(x), torch.from_numpy(y), atol=1e-5), (x, y)
    assert float(abs(a[0] - a[0].mean()).max()) > 0  # candidates score differently (not a constant head)


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    tiny_world: Path, groups: str, processor: Any, tmp_path: Path
) -> None:
    """Tolerance: 1e-6 on every adapter tensor (CPU float32 with one thread: in practice identical)."""
    from georank.train.loop import StopTraining
    from georank.train.stages import train_lora

    torch.set_num_threads(1)
    cfg = _cfg(tiny_world, tmp_path, "train.steps=4", "train.checkpoint_every=2", "train.grad_accum=2")
    base = tiny_world / "models" / "ranker" / "base"
    whole, _ = train_lora(cfg, base_dir=base, data_uri=groups, out_dir=tmp_path / "a", checkpoint_dir=tmp_path / "ca",
                          processor=processor)
    assert whole.resumed_from is None and whole.steps == 4

    def crash(step: int) -> None:
        if step == 3:  # after the checkpoint at step 2, mid-way to the next one
            raise StopTraining("simulated crash")

    with pytest.raises(StopTraining):
        train_lora(cfg, base_dir=base, data_uri=groups, out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb",
                   on_step=crash, processor=processor)
    assert not (tmp_path / "b").exists()
    again, _ = train_lora(cfg, base_dir=base, data_uri=groups, out_dir=tmp_path / "b", checkpoint_dir=tmp_path / "cb",
                          processor=processor)
    assert again.resumed_from is not None and again.resumed_from.endswith("step-00000002")
    assert again.groups == 4  # only steps 3 and 4 ran (2 micro-batches of 1 group each)
    a, b = load_file(str(tmp_path / "a" / "adapter_model.safetensors")), load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k


def test_gradient_checkpointing_gives_the_same_step_and_bf16_autocast_trains(
    tiny_world: Path, groups: str, processor: Any, tmp_path: Path
) -> None:
    from georank.train.stages import train_lora

    torch.set_num_threads(1)
    base = tiny_world / "models" / "ranker" / "base"

    def one_step(*extra: str) -> dict[str, torch.Tensor]:
        cfg = _cfg(tiny_world, tmp_path, "train.steps=1", *extra)
        _, peft_model = train_lora(cfg, base_dir=base, data_uri=groups, out_dir=None, checkpoint_dir=None, processor=processor)
        return {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}

    plain, ckpt = one_step(), one_step("train.gradient_checkpointing=true")
    for name in plain:  # recomputed activations (dropout RNG preserved) give the same update
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6, rtol=0), name
    bf16 = one_step("train.precision=bfloat16")
    assert all(torch.isfinite(t).all() for t in bf16.values())
    assert any(not torch.equal(bf16[n], plain[n]) for n in plain)  # autocast did run in bf16


def test_demo_untrained_adapter_is_step_0_and_is_added_to_a_trained_world_without_retraining(
    tiny_world: Path, tmp_path: Path
) -> None:
    """A demo ranker stamped as trained (before the untrained adapter existed) gets it on the next
    ensure, without training: LoRA B = 0 (PEFT's init), A drawn, the head N(0, 1/(H+1)) from
    train.seed; it scores as the base model with that head (1e-5), and the trained adapter is untouched."""
    import json
    import shutil

    from PIL import Image

    from georank.rank import RankCandidate, RankQuery
    from georank.rank.checkpoint import load_backbone
    from georank.rank.model import GeoRankerModel
    from georank.rank.scorer import Scorer, build_scorer
    from georank.train.demo import STAMP, _wanted, ensure_trained_ranker, untrained_adapter_dir

    ranker = tmp_path / "ranker"
    shutil.copytree(tiny_world / "models" / "ranker", ranker)
    base, adapter = ranker / "base", ranker / "adapter"
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "demo.yaml", demo={"train_ranker_steps": 5},
                                rank={"base_model_uri": str(base), "adapter_uri": str(adapter)}))
    (ranker / STAMP).write_text(json.dumps({"settings": _wanted(cfg, "world-1")}))
    trained_bytes = (adapter / "adapter_model.safetensors").read_bytes()
    untrained = untrained_adapter_dir(adapter)
    assert ensure_trained_ranker(cfg, "world-1") == {"untrained_adapter": str(untrained), "retrained": False}
    assert ensure_trained_ranker(cfg, "world-1") is None  # complete now: nothing to do
    assert (adapter / "adapter_model.safetensors").read_bytes() == trained_bytes

    saved = load_file(str(untrained / "adapter_model.safetensors"))
    lora_a = [v for k, v in saved.items() if "lora_A" in k]
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_a and len(lora_a) == len(lora_b) and all(float(b.abs().max()) == 0.0 for b in lora_b)
    assert all(float(a.abs().max()) > 0 for a in lora_a)
    head = saved["base_model.model.value_head.weight"]  # (1, H)
    hidden = head.shape[1]
    want = torch.randn(head.shape, generator=torch.Generator().manual_seed(cfg.train.seed)) / (hidden + 1) ** 0.5
    assert torch.equal(head, want)

    ours = build_scorer(base, untrained, cfg.rank)
    plain = GeoRankerModel(load_backbone(base, device="cpu", dtype="float32", attn_implementation="sdpa"))
    with torch.no_grad():
        plain.value_head.weight.copy_(want)
    plain.eval()
    theirs = Scorer(plain, ours.processor, cfg.rank)
    photos = sorted((tiny_world / "gallery").glob("*.jpg"))[:3]
    query = RankQuery(Image.open(sorted((tiny_world / "queries").glob("*.jpg"))[0]).convert("RGB"),
                      [RankCandidate(10.0, 20.0, "Paris, France", Image.open(p).convert("RGB")) for p in photos[:2]]
                      + [RankCandidate(-33.9, 151.2, None, None)],
                      [RankCandidate(0.5, 0.5, "Accra, Ghana", None)])
    a, b = ours.score_per_pair([query])[0], theirs.score_per_pair([query])[0]
    assert torch.allclose(torch.from_numpy(a), torch.from_numpy(b), atol=1e-5), (a, b)


def test_demo_warmup_trains_the_backbone_and_the_adapter_starts_from_a_fresh_head(tiny_world: Path, tmp_path: Path) -> None:
    """With a warm-up, the demo's base is the warmed-up backbone (vision and decoder weights moved
    from the seed's random tiny ranker; the token embedding frozen), and the untrained adapter (and
    so the LoRA stage) starts from a FRESH head drawn with train.seed: what the adapter's training
    is measured against."""
    import json
    import shutil

    from georank.rank.tiny import build_tiny_ranker
    from georank.train.demo import STAMP, TRAINER_VERSION, ensure_trained_ranker, untrained_adapter_dir

    ranker = tmp_path / "ranker"
    shutil.copytree(tiny_world / "models" / "ranker", ranker)
    base, adapter = ranker / "base", ranker / "adapter"
    cfg = load_config(tiny_conf(tiny_world, tmp_path / "demo.yaml",
                                demo={"train_warmup_steps": 2, "train_ranker_steps": 1, "train_queries": 6},
                                rank={"base_model_uri": str(base), "adapter_uri": str(adapter)}), TRAIN)
    summary = ensure_trained_ranker(cfg, "world-w")
    assert summary is not None and (summary["warmup_steps"], summary["ranker_steps"]) == (2, 1), summary
    assert json.loads((ranker / STAMP).read_text())["settings"]["trainer_version"] == TRAINER_VERSION
    assert ensure_trained_ranker(cfg, "world-w") is None  # stamped: a second call trains nothing

    random_base, _ = build_tiny_ranker(tmp_path / "random", seed=cfg.demo.seed)
    before, after = load_file(str(random_base / "model.safetensors")), load_file(str(base / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("visual" in k for k in moved) and any("layers" in k for k in moved), moved
    assert not any("embed_tokens" in k for k in moved), moved

    head = load_file(str(untrained_adapter_dir(adapter) / "adapter_model.safetensors"))["base_model.model.value_head.weight"]
    fresh = torch.randn(head.shape, generator=torch.Generator().manual_seed(cfg.train.seed)) / (head.shape[1] + 1) ** 0.5
    assert torch.equal(head, fresh)


@pytest.mark.spark
def test_torchdistributor_two_gloo_processes_average_gradients(  # type: ignore[no-untyped-def]
    spark, tiny_world: Path, groups: str, processor: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """train.distributed through Spark's TorchDistributor (local_mode, 2 gloo processes on CPU), 2
    steps of 1 group per rank: rank r takes items r, r+2, ... and gradients are averaged, so the
    adapter equals ONE process over the same global batch (2 groups per step; the loss is a mean
    over the batch) within 1e-5 (float32 sums in another order). Had rank 1 not contributed, the
    adapter would be a single group's update per step (one process, 1 group per step: checked to
    differ). Rank 0 alone writes it."""
    from georank.spark.train import run_distributed
    from georank.train.stages import train_lora

    base = tiny_world / "models" / "ranker" / "base"
    common = ("train.steps=2", "train.lora.dropout=0.0", "train.checkpoint_every=100")
    dist_cfg = _cfg(tiny_world, tmp_path, *common, "train.distributed.enabled=true", "train.distributed.num_processes=2")
    out = run_distributed(dist_cfg, base_dir=str(base), data_uri=groups, out_dir=str(tmp_path / "dist"),
                          checkpoint_dir=str(tmp_path / "ckpt"))
    logs = capfd.readouterr()
    assert out["steps"] == 2 and out["groups"] == 2 and out["rank"] == 0, out  # rank 0 trained 1 group per step
    assert (logs.out + logs.err).count("adapter written to") == 1  # rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dist")) == ["dist"]

    torch.set_num_threads(1)
    one = _cfg(tiny_world, tmp_path, *common, "train.queries_per_step=2")
    train_lora(one, base_dir=base, data_uri=groups, out_dir=tmp_path / "single", checkpoint_dir=None, processor=processor)
    a, b = load_file(str(tmp_path / "dist" / "adapter_model.safetensors")), load_file(str(tmp_path / "single" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, float((a[k] - b[k]).abs().max()))
    alone = _cfg(tiny_world, tmp_path, *common)  # one group per step, unaveraged: another adapter (the check has teeth)
    train_lora(alone, base_dir=base, data_uri=groups, out_dir=tmp_path / "alone", checkpoint_dir=None, processor=processor)
    c = load_file(str(tmp_path / "alone" / "adapter_model.safetensors"))
    assert any(not torch.allclose(c[k], a[k], atol=1e-5, rtol=0) for k in a)


@pytest.mark.parametrize("size_px", [(56, 56), (112, 84)])
def test_warmup_targets_are_the_quarters_mean_colours_and_their_squared_difference(processor: Any, size_px: tuple[int, int]) -> None:
    """The demo warm-up's targets (georank.train.pretrain): each quarter's mean colour in the
    processor's normalised units, in the order top-left, top-right, bottom-left, bottom-right,
    whatever the patch grid (2x2 merge windows reorder the patches), and (query - candidate)**2."""
    import numpy as np
    import PIL.Image

    from georank.rank.prompts import EncodedPair, encode_image
    from georank.train.pretrain import colour_layout, compare_targets

    w, h = size_px
    quarters = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]  # TL, TR, BL, BR
    a = np.zeros((h, w, 3), dtype=np.uint8)
    for i, rgb in enumerate(quarters):
        a[(i // 2) * h // 2:(i // 2 + 1) * h // 2, (i % 2) * w // 2:(i % 2 + 1) * w // 2] = rgb
    image = encode_image(processor, PIL.Image.fromarray(a))
    assert image.grid_thw == (1, h // 14, w // 14)
    mean, std = np.array(processor.image_processor.image_mean), np.array(processor.image_processor.image_std)
    want = torch.tensor(np.concatenate([(np.array(q) / 255.0 - mean) / std for q in quarters]), dtype=torch.float32)
    got = colour_layout(image)
    assert torch.allclose(got, want, atol=0.02), (got, want)

    grey = encode_image(processor, PIL.Image.new("RGB", size_px, (128, 128, 128)))
    t = compare_targets([EncodedPair([1], (image, grey)), EncodedPair([1], (grey, grey))])
    g = colour_layout(grey)
    assert t.shape == (2, 36)
    assert torch.allclose(t[0], torch.cat([got, g, (got - g) ** 2]))
    assert torch.equal(t[1, 24:], torch.zeros(12))


def test_warmup_refuses_prompts_without_the_candidate_image(tiny_world: Path, tmp_path: Path) -> None:
    """The warm-up compares the two images of a prompt: the no-candidate-image ablation is refused
    at once, naming the key (before any model is loaded)."""
    from georank.errors import ConfigError
    from georank.train.pretrain import warmup_compare

    cfg = _cfg(tiny_world, tmp_path, "rank.prompt_candidate_image=false")
    with pytest.raises(ConfigError, match=r"'rank.prompt_candidate_image'.*expected true, got false"):
        warmup_compare(cfg, base_dir=tmp_path / "none", data_uri=str(tmp_path / "none"), out_base_dir=tmp_path / "out", steps=1)


def test_train_device_cuda_puts_the_model_on_the_gpu_or_fails_naming_the_key(
    tiny_world: Path, groups: str, processor: Any, tmp_path: Path
) -> None:
    """``train.device: cuda`` trains on this process's GPU; without one it fails at start-up naming
    the key, instead of training on the CPU while the config says cuda."""
    from georank.errors import SetupError
    from georank.train.stages import train_lora

    cfg = _cfg(tiny_world, tmp_path, "train.steps=1", "train.device=cuda")
    base = tiny_world / "models" / "ranker" / "base"
    if not torch.cuda.is_available():
        with pytest.raises(SetupError, match=r"train\.device is 'cuda' but torch sees no CUDA device"):
            train_lora(cfg, base_dir=base, data_uri=groups, out_dir=None, checkpoint_dir=None, processor=processor)
        return
    result, peft_model = train_lora(cfg, base_dir=base, data_uri=groups, out_dir=tmp_path / "a", checkpoint_dir=None,
                                    processor=processor)
    assert result.steps == 1
    assert {p.device.type for p in peft_model.parameters()} == {"cuda"}
