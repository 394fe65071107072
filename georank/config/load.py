"""The whole config (:class:`GeorankConfig`), loading, ``--set`` overrides and the errors that name the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from georank.config.base import _Section
from georank.config.learning import DemoConfig, EvaluateConfig, TrainConfig
from georank.config.platform import S3Config, SparkConfig, TablesConfig, WriteConfig
from georank.config.steps import (
    CandidatesConfig,
    DecideConfig,
    DecodeConfig,
    EmbedConfig,
    IndexConfig,
    InputConfig,
    RankConfig,
    RetrieveConfig,
    SkipConfig,
)
from georank.errors import ConfigError


class GeorankConfig(_Section):

    """The whole config. Sections mirror the pipeline's steps."""

    spark: SparkConfig = Field(default_factory=SparkConfig)
    tables: TablesConfig = Field(default_factory=TablesConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    s3: S3Config = Field(default_factory=S3Config)
    input: InputConfig = Field(default_factory=InputConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = Field(default_factory=RetrieveConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    skip: SkipConfig = Field(default_factory=SkipConfig)
    decide: DecideConfig = Field(default_factory=DecideConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    project_root: str = ""  # set by load_config: folder that relative URIs resolve against

    def resolve(self, uri: str) -> str:
        """Absolute form of a config URI: schemes (``s3://``, ``s3a://``, ``file:``) pass through,
        relative paths resolve against :attr:`project_root`."""
        if "://" in uri or uri.startswith("file:") or os.path.isabs(uri):
            return uri
        return str(Path(self.project_root or ".").resolve() / uri)


_TYPE_WORDS = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = GeorankConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def _describe(err: dict[str, Any], source: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _section_at(loc[:-1])
        valid = sorted(parent.model_fields) if parent is not None else []
        valid = [v for v in valid if v != "project_root"]
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"unknown config key '{key}' in {source}; valid keys under {where}: {', '.join(valid)}"
    got = err.get("input")
    if kind == "literal_error":
        expected = err["ctx"]["expected"]
        return f"config key '{key}' in {source}: expected one of {expected}, got {got!r}"
    expected = _TYPE_WORDS.get(kind, err["msg"].lower())
    return f"config key '{key}' in {source}: expected {expected}, got {got!r}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'rank.max_pixels=200704'`` -> ``('rank.max_pixels', 200704)`` (value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(f"bad --set {text!r}: expected KEY=VALUE with a dotted key, e.g. rank.max_pixels=200704")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad --set {text!r}: the value is not valid YAML ({exc.__class__.__name__})") from exc
    return key.strip(), value


def project_home() -> Path:
    """The folder relative config paths resolve against: ``$GEORANK_HOME`` if set, else the checkout
    that holds this package (it has ``spark-submit.sh``), else the working directory."""
    env = os.environ.get("GEORANK_HOME")
    if env:
        return Path(env).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "spark-submit.sh").exists():
        return checkout
    return Path.cwd()


def load_config(path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()) -> GeorankConfig:
    """Load, override and validate a config. Raises :class:`ConfigError` naming the key.

    >>> cfg = load_config("conf/local.yaml", ["rank.max_pixels=200704"])  # doctest: +SKIP
    >>> cfg.rank.max_pixels  # doctest: +SKIP
    200704
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (expected a YAML file, e.g. conf/local.yaml)")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level, got {type(tree).__name__}")
    source = str(p)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    if overrides:
        source = f"{p} with --set {' '.join(overrides)}"
    tree.setdefault("project_root", str(project_home()))
    cfg = validate_config(tree, source=source)
    _check_image_caps(tree, cfg, source)
    return cfg


def _check_image_caps(tree: dict[str, Any], cfg: GeorankConfig, source: str) -> None:
    """One image cap: ``decode.max_side_px`` bounds what EVERY stage sees, ``rank.max_pixels`` only
    the ranker's token budget within it. A ``rank.max_pixels`` written in the config (or ``--set``)
    above what the decode shrink lets through would never bind, so the ranker would silently not
    see the resolution it names: refused here, naming both keys. The default (the reference's
    16384 x 28 x 28) is not refused: the decode shrink is then the cap, as documented."""
    rank = tree.get("rank")
    side = cfg.decode.max_side_px
    if side is None or not isinstance(rank, dict) or "max_pixels" not in rank:
        return
    limit = (side + 27) // 28 * 28  # the ranker rounds sides to multiples of 28
    if cfg.rank.max_pixels > limit * limit:
        raise ConfigError(
            f"{source}: rank.max_pixels={cfg.rank.max_pixels} can never bind: decode.max_side_px={side} lets "
            f"at most {limit} x {limit} = {limit * limit} pixels through to the ranker; expected "
            f"rank.max_pixels <= {limit * limit}, or decode.max_side_px: null (native size, as the reference)"
        )


def validate_config(tree: dict[str, Any], *, source: str = "config") -> GeorankConfig:
    """Validate a plain mapping (e.g. ``cfg.model_dump()`` shipped to an executor)."""
    try:
        return GeorankConfig.model_validate(tree)
    except ValidationError as exc:
        messages = [_describe(dict(e), source) for e in exc.errors()]
        raise ConfigError("; ".join(messages)) from None
