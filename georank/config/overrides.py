"""``--set KEY=VALUE`` overrides. KEY is dotted (``rank.max_pixels=200704``); a part in double quotes
is one key (``--set 'spark.conf."spark.hadoop.fs.s3a.endpoint"=http://127.0.0.1:9000'``), and under
a mapping-typed field (``spark.conf``) everything after the field is one key, so
``spark.conf.spark.hadoop.fs.s3a.endpoint=...`` works too. VALUE is parsed as YAML, except that a
string-typed key takes the text as given (``spark.conf.spark.sql.shuffle.partitions=8`` is ``"8"``).
No error shows a value: only a whole plain dotted key is ever named."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

import yaml

from georank.config.messages import _is_model, _unwrap_optional
from georank.config.model import GeorankConfig
from georank.errors import ConfigError

_SET_EXAMPLE = "e.g. rank.max_pixels=200704 or spark.conf.\"spark.hadoop.fs.s3a.endpoint\"=http://127.0.0.1:9000"


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
