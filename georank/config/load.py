"""Loading the config (:func:`load_config`): YAML, ``--set`` overrides (:mod:`.overrides`),
validation with errors that name the key (:mod:`.messages`), never a value back."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from georank.config.base import describe_got
from georank.config.messages import describe_validation_error
from georank.config.model import GeorankConfig
from georank.config.overrides import _parse_override, _set_dotted, _takes_text, override_path
from georank.errors import ConfigError


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
