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
    assert str(err.value) == f"config key 'rank.photos_per_batch' in {p}: expected an integer, got a string"


def test_wrong_choice_lists_valid_values(tmp_path: Path) -> None:
    p = _write(tmp_path, "rank:\n  device: tpu\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"config key 'rank.device' in {p}: expected one of 'cpu' or 'cuda', got a string"


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
    with pytest.raises(ConfigError, match=r"config key 'retrieve.k' in .*: expected an integer >= 1, got 0$"):
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


# --- issue 22 item 6: no config value is ever printed back; Spark keys with dots -------------------

SECRET = "GEORANKTESTSECRET123"
LOCAL = ROOT / "conf" / "local.yaml"


def _config_error(overrides: list[str], path: Path = LOCAL) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides)
    return str(err.value)


@pytest.mark.parametrize(
    ("override", "want"),
    [
        (f"s3.region=[{SECRET}]", "config key 's3.region' in {p} with --set s3.region: expected a string, got a list"),
        (f"write.staging_ttl_hours={SECRET}", "config key 'write.staging_ttl_hours' in {p} with --set write.staging_ttl_hours: expected a number, got a string"),
        (f"rank.device={SECRET}", "config key 'rank.device' in {p} with --set rank.device: expected one of 'cpu' or 'cuda', got a string"),
        (f"rank.photos_per_batch={{k: {SECRET}}}", "config key 'rank.photos_per_batch' in {p} with --set rank.photos_per_batch: expected an integer, got a mapping"),
        (f"spark.conf={SECRET}", "config key 'spark.conf' in {p} with --set spark.conf: expected a mapping, got a string"),
        (f"spark.conf.spark.hadoop.fs.s3a.secret.key=[{SECRET}]",
         "config key 'spark.conf.\"spark.hadoop.fs.s3a.secret.key\"' in {p} with --set spark.conf.spark.hadoop.fs.s3a.secret.key: expected a string, got a list"),
    ],
)
def test_a_wrongly_typed_value_is_named_by_key_and_type_never_echoed(override: str, want: str) -> None:
    msg = _config_error([override])
    assert msg == want.format(p=LOCAL)
    assert SECRET not in msg


def test_a_secret_beside_a_misspelt_key_is_not_printed() -> None:
    """The operator's report: a secret key in --set plus any typo printed the secret twice."""
    msg = _config_error([f"spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}", "rank.no_such_key=1"])
    assert SECRET not in msg
    assert msg.startswith(
        f"unknown config key 'rank.no_such_key' in {LOCAL} with --set spark.conf.spark.hadoop.fs.s3a.secret.key, "
        "rank.no_such_key; valid keys under rank: "
    )


def test_numbers_of_numeric_keys_are_shown_strings_never() -> None:
    assert _config_error(["write.staging_ttl_hours=-1"]).endswith(
        "config key 'write.staging_ttl_hours' in " f"{LOCAL} with --set write.staging_ttl_hours: expected a number >= 0, got -1"
    )
    # a string that would parse as a number is still a string the user typed: not shown
    msg = _config_error(["retrieve.k='0'"])
    assert msg.endswith("expected an integer >= 1, got a string") and "'0'" not in msg
    msg = _config_error(["rank.max_pixels=1.5"])
    assert msg.endswith("expected an integer, got a number with a fractional part")


def test_got_is_rendered_by_one_helper_that_never_shows_text() -> None:
    import datetime as dt

    from georank.config.base import describe_got

    assert [describe_got(v) for v in (SECRET, "", [SECRET], {SECRET: 1}, None, True, 3, 2.5, dt.date(2026, 1, 1))] == [
        "a string", "an empty string", "a list", "a mapping", "null", "a boolean", "an integer", "a number", "a date",
    ]
    assert describe_got(3, show_number=True) == "3" and describe_got(SECRET, show_number=True) == "a string"
    assert describe_got(True, show_number=True) == "a boolean"


def test_bad_set_forms_do_not_echo_the_value() -> None:
    with pytest.raises(ConfigError, match=r"^bad --set: expected KEY=VALUE .*, got an empty key$"):
        parse_override(f"={SECRET}")
    with pytest.raises(ConfigError) as err:
        parse_override(SECRET)  # a value given where KEY=VALUE was expected
    assert SECRET not in str(err.value)
    assert "expected KEY=VALUE with a dotted key" in str(err.value) and "got no '='" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_override(f"rank.x=*{SECRET}")  # YAML's own message would quote the alias
    assert str(err.value).startswith("bad --set for key 'rank.x': the value is not valid YAML") and SECRET not in str(err.value)
    with pytest.raises(ConfigError, match=r"^bad --set key 'spark.conf.\"spark.x': expected every double quote closed"):
        parse_override(f'spark.conf."spark.x={SECRET}')


def test_a_config_file_that_is_not_yaml_is_reported_by_line_without_its_text(tmp_path: Path) -> None:
    p = _write(tmp_path, f"spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: \"{SECRET}\n")
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(p))} is not valid YAML: .*line \d+, column \d+") as err:
        load_config(p)
    assert SECRET not in str(err.value)


ENDPOINT = "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "override",
    [
        f'spark.conf."spark.hadoop.fs.s3a.endpoint"={ENDPOINT}',  # the documented spelling
        f"spark.conf.spark.hadoop.fs.s3a.endpoint={ENDPOINT}",  # spark.conf is a mapping: the rest is ONE key
    ],
)
def test_set_a_spark_key_whose_name_holds_dots(override: str) -> None:
    cfg = load_config(LOCAL, [override, "spark.conf.spark.sql.shuffle.partitions=8"])
    assert cfg.spark.conf["spark.hadoop.fs.s3a.endpoint"] == ENDPOINT
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "8"  # a string-typed key takes the text as given


def test_quoted_parts_and_plain_sections_mix() -> None:
    cfg = load_config(LOCAL, ['"rank"."max_pixels"=1568', 'spark."conf".spark.ui.enabled="false"'])
    assert cfg.rank.max_pixels == 1568 and cfg.spark.conf["spark.ui.enabled"] == "false"


def test_a_misspelt_section_before_a_dotted_spark_key_still_fails_naming_the_key() -> None:
    msg = _config_error([f"spark.conff.spark.hadoop.fs.s3a.secret.key={SECRET}"])
    assert msg.startswith(f"unknown config key 'spark.conff' in {LOCAL} with --set spark.conff.spark.hadoop.fs.s3a.secret.key; valid keys under spark: ")
    assert "conf" in msg and SECRET not in msg
    msg = _config_error([f'spark.confs."spark.hadoop.fs.s3a.secret.key"={SECRET}'])
    assert "unknown config key 'spark.confs'" in msg and SECRET not in msg


@pytest.mark.parametrize("text", ["spark.conf.spark.hadoop.fs.s3a.secret.key:HUNTER2", "s3.secret HUNTER2",
                                  "rank.max_pixels 200704 HUNTER2"])
def test_a_set_without_equals_never_shows_a_value_typed_after_a_key(text: str) -> None:
    """A value typed with ':' or a space instead of '=' after a section name is never echoed."""
    from georank.config.overrides import parse_override

    with pytest.raises(ConfigError, match="the text is not shown") as info:
        parse_override(text)
    assert "HUNTER2" not in str(info.value)


def test_a_validator_of_ours_reads_as_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"config key 'input.catalogue' .*: expected input.catalogue.image_uri_column "
                                          r"or image_bytes_column, got neither$"):
        load_config(ROOT / "conf" / "local.yaml", ["input.catalogue.image_uri_column=null"])


def test_a_bare_on_or_off_is_the_word_not_a_boolean(tmp_path: Path) -> None:
    """YAML reads a bare ``off`` as false: the keys whose words are on/off take it as the word."""
    conf = tmp_path / "c.yaml"
    conf.write_text("write:\n  commit_lock: off\ninput:\n  catalogue:\n    regeotag: off\n")
    cfg = load_config(conf)
    assert (cfg.write.commit_lock, cfg.input.catalogue.regeotag) == ("off", "off")
    assert load_config(conf, ["write.commit_lock=on"]).write.commit_lock == "on"
    with pytest.raises(ConfigError, match="'input.catalogue.regeotag'.*expected one of 'off' or 'older'"):
        load_config(conf, ["input.catalogue.regeotag=on"])  # 'on' is no word of this key
    with pytest.raises(ConfigError, match="'rank.dtype'"):
        validate_config({"rank": {"dtype": False}})  # a key without the words keeps refusing a boolean


def test_gpu_training_processes_need_train_device_cuda() -> None:
    """NCCL over CPU tensors would fail at the first all-reduce, after Spark started the processes:
    the config refuses the pair at start-up, naming both keys."""
    with pytest.raises(ConfigError, match=r"train\.distributed\.use_gpu .*expected train\.device cuda, got cpu"):
        load_config(ROOT / "conf" / "local.yaml", ["train.distributed.enabled=true", "train.distributed.use_gpu=true"])
    cfg = load_config(ROOT / "conf" / "local.yaml",
                      ["train.distributed.enabled=true", "train.distributed.use_gpu=true", "train.device=cuda"])
    assert cfg.train.device == "cuda"
