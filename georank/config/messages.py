"""The config's error sentences: a pydantic error as the dotted key, what was expected and only the
kind of what was got, never the value (:func:`~georank.config.base.describe_got`); and the walk of
the config's model tree they and ``--set`` share."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from georank.config.base import describe_got
from georank.config.model import GeorankConfig

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
