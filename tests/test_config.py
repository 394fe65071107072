"""The typed config fails at start-up naming the key, with the exact message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from georank.config import GeorankConfig, load_config, parse_override, validate_config
from georank.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_load() -> None:
    local = load_config(ROOT / "conf" / "local.yaml")
    cluster = load_config(ROOT / "conf" / "cluster.yaml")
    assert local.spark.master.startswith("local")
    assert cluster.rank.device == "cuda" and cluster.spark.gpu.enabled


def test_unknown_key_names_key_and_valid_keys(tmp_path: Path) -> None:
    p = _write(tmp_path, "rank:\n  max_pixel: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert msg.startswith(f"unknown config key 'rank.max_pixel' in {p}; valid keys under rank: ")
    assert "max_pixels" in msg and "adapter_uri" in msg


def test_unknown_top_level_section(tmp_path: Path) -> None:
    p = _write(tmp_path, "ranker: {}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'ranker' in .*; valid keys under the top level: candidates, decide"):
        load_config(p)


def test_wrong_type_exact_message(tmp_path: Path) -> None:
    p = _write(tmp_path, "rank:\n  photos_per_batch: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"config key 'rank.photos_per_batch' in {p}: expected an integer, got 'many'"


def test_wrong_choice_lists_valid_values(tmp_path: Path) -> None:
    p = _write(tmp_path, "rank:\n  device: tpu\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"config key 'rank.device' in {p}: expected one of 'cpu' or 'cuda', got 'tpu'"


def test_missing_file_exact_message(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"config file not found: {p} (expected a YAML file, e.g. conf/local.yaml)"


def test_set_overrides_and_parses_yaml_values() -> None:
    cfg = load_config(ROOT / "conf" / "local.yaml", ["rank.max_pixels=200704", "skip.enabled=false"])
    assert cfg.rank.max_pixels == 200704 and cfg.skip.enabled is False
    cfg2 = load_config(ROOT / "conf" / "local.yaml", ["tables.results=/some/path"])
    assert cfg2.tables.results == "/some/path"


def test_bad_set_names_key() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown config key 'rank.nope'")):
        load_config(ROOT / "conf" / "local.yaml", ["rank.nope=1"])
    with pytest.raises(ConfigError, match=re.escape("bad --set 'rank.max_pixels': expected KEY=VALUE")):
        parse_override("rank.max_pixels")


def test_out_of_range_value(tmp_path: Path) -> None:
    p = _write(tmp_path, "retrieve:\n  k: 0\n")
    with pytest.raises(ConfigError, match=r"config key 'retrieve.k' in .*: expected input should be greater than or equal to 1, got 0"):
        load_config(p)


def test_roundtrip_to_executors() -> None:
    """Executors get cfg.model_dump() (plain values) and rebuild the same config."""
    cfg = load_config(ROOT / "conf" / "local.yaml")
    again = validate_config(cfg.model_dump())
    assert again == cfg and isinstance(again, GeorankConfig)


def test_relative_uris_resolve_against_project_root() -> None:
    cfg = load_config(ROOT / "conf" / "local.yaml")
    assert cfg.resolve("warehouse/results") == str(ROOT / "warehouse" / "results")
    assert cfg.resolve("s3://b/k") == "s3://b/k"


def test_one_image_cap_a_rank_max_pixels_the_decode_shrink_never_lets_through_is_refused() -> None:
    """decode.max_side_px bounds what every stage sees; a rank.max_pixels set above it would never
    bind (the ranker would silently not see the resolution it names): refused, naming both keys."""
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "conf" / "local.yaml", ["rank.max_pixels=12845056"])
    assert "rank.max_pixels=12845056 can never bind: decode.max_side_px=1024 lets at most 1036 x 1036 = 1073296 pixels" in str(err.value)
    assert "or decode.max_side_px: null" in str(err.value)
    ok = load_config(ROOT / "conf" / "local.yaml", ["rank.max_pixels=12845056", "decode.max_side_px=null"])
    assert ok.rank.max_pixels == 12845056 and ok.decode.max_side_px is None  # native size: the reference's setting
    assert load_config(ROOT / "conf" / "local.yaml", ["rank.max_pixels=1073296"]).rank.max_pixels == 1073296
    default = load_config(ROOT / "conf" / "local.yaml", ["decode.max_side_px=512"])  # local.yaml's 784 fits
    assert default.rank.max_pixels == 784
