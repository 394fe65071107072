"""The CLIP-family embedder (georank.embed) on a tiny real-architecture checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georank import resources
from georank.config import EmbedConfig, S3Config, validate_config
from georank.embed import TINY_HEADS_FILE, build_tiny_clip, get_embedder, load_embedder
from georank.errors import CheckpointError, ConfigError

S3 = S3Config()


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"), seed=0)


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(120, 90), (64, 200), (300, 300), (97, 131)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in (sizes * n)[:n]]


def test_clip_embeddings_are_unit_rows(tiny_clip: Path) -> None:
    e = load_embedder(EmbedConfig(model_uri=str(tiny_clip), kind="clip", batch_size=2), S3)
    x = e.embed(_images(5))
    assert x.shape == (5, 16) and x.dtype == np.float32 and e.dim == 16
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert e.embed([]).shape == (0, 16)
    assert len({tuple(r) for r in x.round(5)}) == 5  # different images, different vectors


def test_g3_is_projection_plus_two_heads_each_normalised(tiny_clip: Path) -> None:
    clip = load_embedder(EmbedConfig(model_uri=str(tiny_clip), kind="clip"), S3)
    g3 = load_embedder(
        EmbedConfig(model_uri=str(tiny_clip), kind="g3", heads_uri=str(tiny_clip / TINY_HEADS_FILE)), S3
    )
    images = _images(3)
    x = g3.embed(images)
    assert x.shape == (3, 48) and g3.dim == 48
    for part in (x[:, :16], x[:, 16:32], x[:, 32:]):
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x[:, :16], clip.embed(images), atol=1e-6)  # first part = the CLIP key
    assert g3.version != clip.version


def test_version_is_a_content_hash(tiny_clip: Path, tmp_path: Path) -> None:
    cfg = EmbedConfig(model_uri=str(tiny_clip))
    v1 = load_embedder(cfg, S3).version
    assert load_embedder(cfg, S3).version == v1
    assert load_embedder(EmbedConfig(model_uri=str(build_tiny_clip(tmp_path / "same", seed=0))), S3).version == v1
    assert load_embedder(EmbedConfig(model_uri=str(build_tiny_clip(tmp_path / "other", seed=1))), S3).version != v1


def test_version_keeps_its_value_and_reads_the_files_once(tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """checkpoint_version through the host's digest cache equals the formula indexes were built
    with (every byte streamed after kind, size and each file's name), and reads each file once."""
    import hashlib

    from georank.embed import checkpoint_version
    from georank.storage import digests

    monkeypatch.setenv("GEORANK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digests, "_memo", {})
    heads = tiny_clip / TINY_HEADS_FILE
    ref = hashlib.sha256(b"kind=g3;image_size=224")
    for f in [tiny_clip / n for n in ("config.json", "model.safetensors", "preprocessor_config.json")] + [heads]:
        ref.update(b"\0" + f.name.encode() + b"\0" + f.read_bytes())
    reads: list[Path] = []
    real = digests._feed
    monkeypatch.setattr(digests, "_feed", lambda h, p: (reads.append(p), real(h, p))[1])
    assert checkpoint_version(tiny_clip, heads, kind="g3", image_size=224) == ref.hexdigest()[:16]
    assert len(reads) == 4
    digests._memo.clear()  # another worker on this host
    assert checkpoint_version(tiny_clip, heads, kind="g3", image_size=224) == ref.hexdigest()[:16]
    assert len(reads) == 4


def test_wrong_image_size_names_the_key(tiny_clip: Path) -> None:
    with pytest.raises(ConfigError, match=r"embed.image_size=336 .*expected embed.image_size=224"):
        load_embedder(EmbedConfig(model_uri=str(tiny_clip), image_size=336), S3)


def test_g3_needs_every_head_tensor(tiny_clip: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    heads = load_file(str(tiny_clip / TINY_HEADS_FILE))
    del heads["vision_projection_else_2.2.bias"]
    save_file(heads, str(tmp_path / "partial.safetensors"))
    cfg = EmbedConfig(model_uri=str(tiny_clip), kind="g3", heads_uri=str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"expected exactly one tensor named like 'vision_projection_else_2.2.bias', got \[\]"):
        load_embedder(cfg, S3)
    with pytest.raises(ConfigError, match="embed.heads_uri is not set"):
        load_embedder(EmbedConfig(model_uri=str(tiny_clip), kind="g3"), S3)


def test_checkpoint_without_vision_weights_is_refused(tmp_path: Path, tiny_clip: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip, broken)
    weights = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "visual_projection" not in k}, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"expected every vision tower and projection weight, got 1 missing"):
        load_embedder(EmbedConfig(model_uri=str(broken)), S3)


def test_one_embedder_per_worker(tiny_clip: Path) -> None:
    resources.clear()
    cfg = validate_config({"embed": {"model_uri": str(tiny_clip)}})
    a, b = get_embedder(cfg), get_embedder(cfg)
    assert a is b


def test_cache_keys_name_the_gpu_a_resource_sits_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert resources.device_key("cpu") == "cpu"
    gpu = [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: gpu[0])
    assert resources.device_key("cuda") == "cuda:0"
    gpu[0] = 1  # the reused worker's next task was given GPU 1: another key, another copy
    assert resources.device_key("cuda") == "cuda:1"
