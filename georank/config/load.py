"""The whole config (:class:`GeorankConfig`), loading, ``--set`` overrides and the errors that name the key.

``--set KEY=VALUE``: KEY is dotted (``rank.max_pixels=200704``); a part in double quotes is one key
(``--set 'spark.conf."spark.hadoop.fs.s3a.endpoint"=http://127.0.0.1:9000'``), and under a
mapping-typed field (``spark.conf``) everything after the field is one key, so
``spark.conf.spark.hadoop.fs.s3a.endpoint=...`` works too. VALUE is parsed as YAML, except that a
string-typed key takes the text as given (``spark.conf.spark.sql.shuffle.partitions=8`` is ``"8"``).

No message ever prints a config value back (a ``--set`` value may be a secret): errors name the key,
what was expected, and only the kind of what was got (:func:`~georank.config.base.describe_got`).
"""

from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import unquote, urlparse

import yaml
from pydantic import BaseModel, Field, ValidationError

from georank.config.base import _Section, describe_got
from georank.config.learning import DemoConfig, EvaluateConfig, TrainConfig
from georank.config.platform import S3Config, SparkConfig, TablesConfig, WriteConfig
from georank.config.publish import PublishConfig
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
from georank.errors import ConfigError, InputError


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
    publish: PublishConfig = Field(default_factory=PublishConfig)  # jobs/publish.py (georank.config.publish)
    project_root: str = ""  # set by load_config: folder that relative URIs resolve against

    def resolve(self, uri: str) -> str:
        """Absolute form of a config URI: other schemes (``s3://``, ``s3a://``) pass through; a
        ``file:`` URI becomes its local path (``file:///data/night%2001`` -> ``/data/night 01``,
        ``file://localhost/...`` too), so it works wherever a local path does; relative paths
        (``file:rel`` too) resolve against :attr:`project_root`. A ``file:`` URI naming another
        host is an InputError."""
        if uri.startswith("file:"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise InputError(f"expected a local file: URI (file:///path), got one naming the host {parsed.netloc!r}: {uri}")
            uri = unquote(parsed.path)
        if "://" in uri or os.path.isabs(uri):
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
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list of two numbers",
}
# pydantic's bound errors -> (the ctx key holding the bound, how it reads)
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
    "multiple_of": ("multiple_of", "a multiple of"),
}
_SET_EXAMPLE = "e.g. rank.max_pixels=200704 or spark.conf.\"spark.hadoop.fs.s3a.endpoint\"=http://127.0.0.1:9000"


def _unwrap_optional(ann: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _section_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root or GeorankConfig
    for part in loc:
        assert model is not None
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        ann = _unwrap_optional(field.annotation)
        if not _is_model(ann):
            return None
        model = ann
    return model


def _annotation_at(loc: tuple[Any, ...], root: type[BaseModel] | None) -> Any:
    """The declared type at a (pydantic error) location, or None when it cannot be told."""
    ann: Any = root
    for part in loc:
        ann = _unwrap_optional(ann)
        if _is_model(ann):
            field = ann.model_fields.get(str(part))
            ann = field.annotation if field is not None else None
        elif get_origin(ann) in (list, tuple, dict) and get_args(ann):
            ann = get_args(ann)[-1] if get_origin(ann) is dict else get_args(ann)[0]
        else:
            return None
    return _unwrap_optional(ann)


def _render_key(loc: tuple[Any, ...] | list[str]) -> str:
    """``('spark', 'conf', 'spark.ui.port')`` -> ``spark.conf."spark.ui.port"`` (the ``--set`` spelling)."""
    return ".".join(f'"{p}"' if "." in str(p) else str(p) for p in loc)


def _describe(err: dict[str, Any], source: str, root: type[BaseModel] | None = None) -> str:
    """One pydantic error as a sentence naming the key, what was expected and the KIND of what was
    got (:func:`describe_got`): never a value, which may be a secret given with ``--set``."""
    root = root or GeorankConfig
    loc = tuple(err["loc"])
    key = _render_key(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _section_at(loc[:-1], root)
        valid = sorted(parent.model_fields) if parent is not None else []
        valid = [v for v in valid if v != "project_root"]
        where = _render_key(loc[:-1]) or "the top level"
        return f"unknown config key '{key}' in {source}; valid keys under {where}: {', '.join(valid)}"
    got_value = err.get("input")
    got = describe_got(got_value)
    if kind == "literal_error":
        expected = f"one of {ctx['expected']}"
    elif kind in _BOUNDS:
        bound_key, op = _BOUNDS[kind]
        noun = "an integer" if _annotation_at(loc, root) is int else "a number"
        bound = ctx.get(bound_key)
        expected = f"{noun} {op} {int(bound) if isinstance(bound, float) and bound.is_integer() else bound}"
        got = describe_got(got_value, show_number=True)  # a bound of a numeric key: the number helps
    elif kind == "int_from_float":
        expected, got = "an integer", "a number with a fractional part"
    elif kind == "value_error":  # a validator of ours (e.g. CatalogueConfig's): its text says it all
        # and holds no input value (they are written so); pydantic prefixes "Value error, ".
        return f"config key '{key}' in {source}: {err['msg'].removeprefix('Value error, ')}"
    else:
        # pydantic's words for the rest ("Input should be a valid tuple", "List should have at
        # least 2 items after validation, not 1") hold no input value.
        msg = err["msg"]
        expected = _TYPE_WORDS.get(kind) or (msg[len("Input should be "):] if msg.startswith("Input should be ") else msg[:1].lower() + msg[1:])
    return f"config key '{key}' in {source}: expected {expected}, got {got}"


def describe_validation_error(exc: ValidationError, source: str | None = None) -> str:
    """A pydantic :class:`ValidationError` (its own text repeats every ``input_value``) as the config's
    sentences: key, expected, kind of what was got. For errors of a section model built outside
    :func:`load_config`, keys are relative to that section (named by ``exc.title``)."""
    root = _model_named(exc.title)
    where = source or exc.title
    return "; ".join(_describe(dict(e), where, root) for e in exc.errors())


def _model_named(name: str) -> type[BaseModel] | None:
    todo: list[type[BaseModel]] = [GeorankConfig]
    while todo:
        model = todo.pop()
        if model.__name__ == name:
            return model
        todo.extend(a for f in model.model_fields.values() if _is_model(a := _unwrap_optional(f.annotation)))
    return None


def _split_key(key: str) -> list[str]:
    """``'spark.conf."spark.ui.port"'`` -> ``['spark', 'conf', 'spark.ui.port']``: dots inside double
    quotes belong to the part."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in key:
        if ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise ConfigError(f"bad --set key {key!r}: expected every double quote closed, {_SET_EXAMPLE}")
    parts.append("".join(buf))
    if any(not p.strip() for p in parts):
        raise ConfigError(f"bad --set key {key!r}: expected a dotted key with no empty part, {_SET_EXAMPLE}")
    return [p.strip() for p in parts]


def override_path(key: str) -> tuple[str, ...]:
    """The path a ``--set`` key names in the config tree, decided by walking :class:`GeorankConfig`'s
    fields: a quoted part is one key (``spark.conf."spark.ui.port"``), and under a mapping-typed field
    of scalars (``spark.conf: dict[str, str]``) everything after the field is ONE key, so
    ``spark.conf.spark.ui.port`` names the Spark key ``spark.ui.port`` too. Past a name that is no
    field the parts stay apart (validation then names the unknown key)."""
    parts = _split_key(key)
    path: list[str] = []
    ann: Any = GeorankConfig
    i = 0
    while i < len(parts):
        part = parts[i]
        path.append(part)
        i += 1
        if not _is_model(ann):
            ann = None
            continue
        field = ann.model_fields.get(part)
        ann = _unwrap_optional(field.annotation) if field is not None else None
        if get_origin(ann) is dict and i < len(parts):
            value_ann = _unwrap_optional(get_args(ann)[1]) if get_args(ann) else None
            if _is_model(value_ann):  # a mapping of sections: one part is the key, then walk on
                path.append(parts[i])
                i += 1
                ann = value_ann
            else:
                path.append(".".join(parts[i:]))
                ann = value_ann
                break
    return tuple(path)


def _takes_text(path: tuple[str, ...]) -> bool:
    """Whether the key at ``path`` is typed as a string (a field, or a value of a mapping of strings)."""
    ann: Any = GeorankConfig
    for part in path:
        if _is_model(ann):
            field = ann.model_fields.get(part)
            if field is None:
                return False
            ann = _unwrap_optional(field.annotation)
        elif get_origin(ann) is dict and get_args(ann):
            ann = _unwrap_optional(get_args(ann)[1])
        else:
            return False
    return ann is str


def _set_dotted(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _split_override(text: str) -> tuple[str, str] | None:
    """``KEY=VALUE`` at the first ``=`` outside double quotes (a quoted key part may hold one)."""
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "=" and not quoted:
            return text[:i], text[i + 1:]
    return None


def _parse_override(text: str) -> tuple[str, str, Any]:
    split = _split_override(text)
    if split is None:
        head = text.partition("=")[0]
        if "=" in text and head.count('"') % 2:
            raise ConfigError(f"bad --set key {head.strip()!r}: expected every double quote closed, {_SET_EXAMPLE}")
        # Name the text only when ALL of it is a plain dotted key under a config section: a value
        # typed with ':' or a space instead of '=' ("s3.secret:VALUE") is never shown.
        if re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w-]*)*", text.strip()) and \
                text.split(".")[0].strip() in GeorankConfig.model_fields:
            raise ConfigError(f"bad --set {text.strip()!r}: expected KEY=VALUE with a dotted key, {_SET_EXAMPLE}, got no '='")
        raise ConfigError(
            f"bad --set: expected KEY=VALUE with a dotted key, {_SET_EXAMPLE}, got no '=' "
            "(the text is not shown: it is not a plain dotted key, so it may hold a value)"
        )
    key, raw = split[0].strip(), split[1]
    if not key:
        raise ConfigError(f"bad --set: expected KEY=VALUE with a dotted key, {_SET_EXAMPLE}, got an empty key")
    _split_key(key)  # quotes closed, no empty part
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        # YAML's own message may quote the value (an undefined alias, an escape): not shown.
        mark = getattr(exc, "problem_mark", None)
        at = f" at column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(
            f"bad --set for key {key!r}: the value is not valid YAML ({exc.__class__.__name__}{at}; the value is not shown); "
            "expected a YAML scalar, list or mapping, e.g. 3, true, text, [1, 2]"
        ) from None
    return key, raw, value


def parse_override(text: str) -> tuple[str, Any]:
    """``'rank.max_pixels=200704'`` -> ``('rank.max_pixels', 200704)`` (value parsed as YAML).

    A key part in double quotes is one key: ``spark.conf."spark.ui.port"=4041``. Errors name the
    key, never the value (it may be a secret)."""
    key, _, value = _parse_override(text)
    return key, value


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
        raise ConfigError(f"config file {p} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level, got {describe_got(tree)}")
    keys = []
    for text in overrides:
        key, raw, value = _parse_override(text)
        key_path = override_path(key)
        if isinstance(value, bool | int | float) and _takes_text(key_path):
            value = raw.strip()  # a string-typed key takes the text as given: spark.conf...partitions=8 is "8"
        _set_dotted(tree, key_path, value)
        keys.append(key)
    # The source names the --set KEYS only: a value may be a secret (spark.conf."...secret.key").
    source = f"{p} with --set {', '.join(keys)}" if keys else str(p)
    tree.setdefault("project_root", str(project_home()))
    cfg = validate_config(tree, source=source)
    _check_image_caps(tree, cfg, source)
    return cfg


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where a YAML file is broken and why, without the snippet of the file PyYAML's own message
    carries (that line may hold a secret): quoted fragments longer than one character are elided."""
    problem = str(getattr(exc, "problem", None) or exc.__class__.__name__)
    problem = re.sub(r"'([^']*)'", lambda m: m.group(0) if len(m.group(1)) <= 1 or m.group(1).startswith("<") else "'...'", problem)
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


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
        raise ConfigError(describe_validation_error(exc, source)) from None
