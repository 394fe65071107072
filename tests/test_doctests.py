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


def _run(name: str) -> doctest.TestResults:
    return doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)


def test_examples_are_found() -> None:
    assert sum(_run(name).attempted for name in MODULES) >= 2


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = _run(name)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
