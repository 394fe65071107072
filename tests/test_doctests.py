"""The examples in georank's docstrings run (doctest), module by module.

pytest's ``--doctest-modules`` would also import every ``conftest.py`` as a module (two share the
name here), so the library's doctests are collected through this file instead.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "georank").rglob("*.py")
    if ">>>" in p.read_text()
)


def test_some_modules_have_examples() -> None:
    assert "georank.config" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
