"""The config's shared pieces: the section base class (unknown keys refused) and the device/dtype words."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

Device = Literal["cpu", "cuda"]
DType = Literal["float32", "bfloat16", "float16"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _on_off_words(cls, data: Any) -> Any:
        """YAML reads a bare ``on``/``off`` (and ``yes``/``no``) as a boolean: for a key whose words
        are ``on``/``off`` (``write.commit_lock: off``, ``--set input.catalogue.regeotag=off``) the
        boolean is taken as that word, as the person who typed it meant."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            value = out.get(name)
            if isinstance(value, bool) and get_origin(field.annotation) is Literal:
                word = "on" if value else "off"
                if word in get_args(field.annotation):
                    out[name] = word
        return out




def describe_got(value: object, *, show_number: bool = False) -> str:
    """What a config key was given, in words safe to print: its kind, never its text.

    A value given with ``--set`` (or written in a config file) may be a secret
    (``spark.conf."spark.hadoop.fs.s3a.secret.key"``), so every message that says what was got
    renders it through this one function: ``'a string'``, ``'a list'``, ``'a mapping'``, ``'null'``...
    A number is shown only with ``show_number=True``, which callers pass for the bound of a
    numeric key (``write.staging_ttl_hours``: ``got -1``); a string is never shown, even one that
    reads as a number.

    >>> describe_got("hunter2"), describe_got([1]), describe_got(-1, show_number=True)
    ('a string', 'a list', '-1')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        if show_number:
            return repr(value)
        return "an integer" if isinstance(value, int) else "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, dt.datetime):
        return "a date and time"
    if isinstance(value, dt.date):
        return "a date"
    return f"a value of type {type(value).__name__}"
