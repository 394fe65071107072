"""The README and every page of ``docs/`` cannot rot: what they name exists.

- every repository path they name (``jobs/geotag.py``, ``conf/cluster.yaml``, ``docs/operations.md``,
  ``tests/core/test_guards.py::test_x``, a glob like ``jobs/*.py``) and every relative link exists,
  and a link's ``#anchor`` is a heading of the page it names;
- every config key written as ``section.key`` (``write.max_error_fraction``), every ``--set KEY=`` and
  every key of a YAML block with a georank section is a real key of :class:`GeorankConfig` (keys
  under a mapping such as ``spark.conf`` are free), and a value shown with it (``train.device:
  cuda``, ``--set rank.dtype=bfloat16`` in a command) is one the config's own loading accepts;
- every ``--flag`` of a shown command that runs a job (``./spark-submit.sh jobs/NAME.py ...``,
  ``python jobs/NAME.py ...``, in a fenced block, indented or not, or inline) or listed in a table
  row of that one job is one its parser accepts, and every ``--flag`` given to a script or benchmark appears in that file;
- every ``georank.x.y`` they name, and every name a shown ``from georank.x import ...`` imports,
  exists.

Fast (no Spark, no model): the checker is plain text work, and :func:`test_checker_catches_what_rots`
shows it failing on a page that names a missing job, key, flag and path.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml

from georank.cli import base_parser
from georank.config import GeorankConfig, load_config
from georank.config.messages import _is_model, _unwrap_optional
from georank.config.overrides import override_path
from georank.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("jobs", "georank", "conf", "scripts", "notebooks", "benchmarks", "tests", "docs", ".ci")
SECTIONS = tuple(name for name in GeorankConfig.model_fields if name != "project_root")

_TOP_ALT = "|".join(re.escape(t) for t in TOP)
_PATH = re.compile(rf"(?<![\w./-])(?:\./)?((?:{_TOP_ALT})/[\w./*-]*|spark-submit\.sh|setup\.py)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^( *)```([\w-]*)\n(.*?)^\1```", re.M | re.S)  # also indented under a list item
_KEY = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")
_SET = re.compile(r"--set[ =]+['\"]?((?:\"[^\"]*\"|[^=\s'\"])+)=")
_MODULE = re.compile(r"\bgeorank(?:\.[A-Za-z_]\w*)+")
_FROM_IMPORT = re.compile(r"^[ \t]*from (georank[\w.]*) import (?:\(([\w,\s]+)\)|([\w, \t]+)$)", re.M)
_KEY_VALUE = re.compile(r"([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+) ?(?::|=) ?(.+)")
_FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".sh", ".ipynb", ".json", ".parquet", ".jar", ".txt", ".html", ".png", ".tar")


def fences(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, an indented one's body dedented."""
    out = []
    for indent, lang, body in _FENCE.findall(text):
        lines = [line[len(indent):] if line.startswith(indent) else line for line in body.splitlines()]
        out.append((lang, "\n".join(lines) + "\n"))
    return out


def key_problem(path: tuple[str, ...]) -> str | None:
    """Why ``path`` is no key of the config (None when it is one, or a section)."""
    ann: Any = GeorankConfig
    for i, part in enumerate(path):
        if get_origin(ann) is dict:  # a mapping: any key; walk on into its value type
            ann = _unwrap_optional(get_args(ann)[1]) if get_args(ann) else None
            continue
        if not _is_model(ann):
            return f"{'.'.join(path[:i])} has no sub-keys"
        field = ann.model_fields.get(part)
        if field is None:
            return f"no key {part!r} in section {'.'.join(path[:i]) or '(top)'}"
        ann = _unwrap_optional(field.annotation)
    return None


def _yaml_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict) or not tree:
        return [prefix] if prefix else []
    return [p for k, v in tree.items() for p in _yaml_paths(v, (*prefix, str(k)))]


@cache
def job_options(job: str) -> frozenset[str]:
    """The option strings ``jobs/<job>.py`` accepts (``--conf``, ``--set`` and its own ``add_args``)."""
    spec = importlib.util.spec_from_file_location(f"_docs_job_{job}", ROOT / "jobs" / f"{job}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines main/add_args; main runs only under __main__
    parser: argparse.ArgumentParser = base_parser(job)
    if hasattr(module, "add_args"):
        module.add_args(parser)
    return frozenset(o for action in parser._actions for o in action.option_strings)


def _commands(text: str) -> list[list[str]]:
    """Shell commands in the page's code blocks (continuation lines joined), split like a shell would."""
    out = []
    for _, body in fences(text):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            if not line or line.startswith("#"):
                continue
            try:
                out.append(shlex.split(line))
            except ValueError:
                continue
    return out


def _flag_problems(argv: list[str]) -> list[str]:
    problems = []
    for i, word in enumerate(argv):
        m = re.fullmatch(r"(?:\./)?((?:jobs|scripts|benchmarks)/[\w/-]+\.(?:py|sh))", word)
        if not m or not (ROOT / m.group(1)).is_file():
            continue
        flags = {a.split("=", 1)[0] for a in argv[i + 1:] if re.fullmatch(r"--[a-z][\w-]*(=.*)?", a)}
        if m.group(1).startswith("jobs/"):
            known = job_options(Path(m.group(1)).stem)
            problems += [f"{m.group(1)} accepts no {f}" for f in sorted(flags - known)]
        else:
            source = (ROOT / m.group(1)).read_text()
            problems += [f"{m.group(1)} never mentions {f}" for f in sorted(flags) if f not in source]
        break
    return problems


def _module_problem(name: str) -> str | None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return f"{name}: {'.'.join(parts[:cut])} has no {attr!r}"
            obj = getattr(obj, attr)
        return None
    return f"{name}: no such module"


def anchors_of(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to ``-``."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n, unique = 0, slug
        while unique in found:  # a repeated heading gets -1, -2, ...
            n += 1
            unique = f"{slug}-{n}"
        found.add(unique)
    return found


def _value_problem(key: str, value: str) -> str | None:
    """Why ``key`` cannot take ``value`` (None when it can): the config's own loading decides,
    over conf/local.yaml, as ``--set key=value`` would."""
    if re.search(r"[<{]|\.\.\.|\bYOUR\b|your-", value):
        return None  # a placeholder (<uri>, {run_date}, s3://your-bucket/...)
    try:
        load_config(ROOT / "conf" / "local.yaml", [f"{key}={value}"])
    except ConfigError as exc:
        text = str(exc)
        return text[text.index("expected"):] if "expected" in text else text
    return None


def _config_key_problems(key: str, value: str | None) -> list[str]:
    path = override_path(key)  # under a mapping of scalars (spark.conf) the rest is one key
    if path[0] not in SECTIONS or key.endswith(_FILE_SUFFIXES):
        return []
    if path[0] == "spark" and path[1] not in GeorankConfig.model_fields["spark"].annotation.model_fields:
        return []  # a Spark property (spark.executor.memory), not georank's spark section
    if (why := key_problem(path)) is not None:
        return [f"config key {key}: {why}"]
    if value is not None and (why := _value_problem(key, value)) is not None:
        return [f"config value {key}={value}: {why}"]
    return []


def problems_of(text: str, where: Path) -> list[str]:
    """Everything ``text`` (a page at ``where``) names that does not exist."""
    problems: list[str] = []
    spans = _CODE_SPAN.findall(_FENCE.sub("", text))
    blocks = [body for _, body in fences(text)]
    # paths in code are the repository's; links are the page's own (GitHub resolves them from its folder)
    named = {(ROOT if raw.split("/")[0] in TOP or raw in ("spark-submit.sh", "setup.py") else where.parent, raw)
             for raw in _PATH.findall("\n".join(spans + blocks))}
    named |= {(where.parent, m) for m in _LINK.findall(text) if not re.match(r"[a-z]+:|#", m)}
    for base, raw in named:
        rel = re.split(r"::|#|:\d", raw)[0].rstrip(".,;:")
        if not rel or "{" in rel or "<" in rel:
            continue
        pattern = re.sub(r"\b[A-Z]{3,}\b", "*", rel) if rel != "README.md" else rel  # jobs/NAME.py: a placeholder
        if not glob.glob(str(base / pattern)):
            problems.append(f"path {rel} does not exist")
    for target in _LINK.findall(text):
        page, _, anchor = target.partition("#")
        if not anchor or re.match(r"[a-z]+:", target):
            continue
        linked = where.parent / page
        heads = anchors_of(text) if not page else anchors_of(linked.read_text()) if linked.is_file() else None
        if heads is not None and anchor not in heads:
            problems.append(f"link {target}: no heading #{anchor} in {page or where.name}")
    for span in spans:  # `write.max_error_fraction`, `train.device: cuda`, `rank.max_pixels=200704`
        if _KEY.fullmatch(span):
            problems += _config_key_problems(span, None)
        elif (m := _KEY_VALUE.fullmatch(span)) is not None:
            problems += _config_key_problems(m.group(1), m.group(2).strip())
    for key in {k for k in _SET.findall(text) if "." in k}:  # --set KEY=VALUE is a placeholder
        if (why := key_problem(override_path(key))) is not None:
            problems.append(f"--set {key}: {why}")
    for lang, body in fences(text):
        tree = yaml.safe_load(body) if lang in ("yaml", "yml") else None
        if isinstance(tree, dict) and any(k in SECTIONS for k in tree):  # a georank config (or part of one)
            problems += [f"yaml key {'.'.join(p)}: {why}" for p in _yaml_paths(tree) if (why := key_problem(p))]
    commands = _commands(text) + [shlex.split(s) for s in spans if re.search(r"(jobs|scripts|benchmarks)/\S+ .*--", s)]
    for argv in commands:
        problems += _flag_problems(argv)
        for i, word in enumerate(argv[:-1]):
            if word == "--set" and "=" in argv[i + 1] and '"' not in argv[i + 1]:
                key, value = argv[i + 1].split("=", 1)
                problems += [p for p in _config_key_problems(key, value) if p.startswith("config value")]
    for line in re.findall(r"^\|.*$", _FENCE.sub("", text), re.M):  # a table row of one job: its arguments
        jobs = re.findall(r"`jobs/(\w+)\.py`", line)
        if len(jobs) == 1 and (ROOT / "jobs" / f"{jobs[0]}.py").is_file():
            flags = {f for s in _CODE_SPAN.findall(line) for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", s)}
            problems += [f"jobs/{jobs[0]}.py accepts no {f}" for f in sorted(flags - job_options(jobs[0]))]
    names = {m.rstrip(".") for s in spans + blocks for m in _MODULE.findall(s)}
    names |= {f"{mod}.{n.strip()}" for b in blocks for mod, wrapped, plain in _FROM_IMPORT.findall(b)
              for n in (wrapped or plain).split(",") if n.strip()}
    for name in names:
        if (why := _module_problem(name)) is not None:
            problems.append(f"module {why}")
    return sorted(set(problems))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_names_only_what_exists(page: Path) -> None:
    problems = problems_of(page.read_text(), page)
    assert not problems, f"{page.relative_to(ROOT)} names what does not exist:\n  " + "\n  ".join(problems)


def test_readme_is_short_and_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 260, "README.md: expected at most ~250 lines (detail belongs in docs/)"
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md links no docs page {missing}"


def test_checker_catches_what_rots(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    text = """
Run `write.max_error_fraction` and `write.no_such_knob`; see `jobs/no_such_job.py`, [ops](missing.md)
and `georank.write.no_such_function`; [here](#no-such-heading), [there](#the-checks-own-heading).

## The check's own heading

```bash
./spark-submit.sh jobs/geotag.py --conf conf/local.yaml --run-date 2026-11-23 --no-such-flag \\
  --set rank.no_such_key=1 --set 'spark.conf."spark.ui.port"=4041'
```

```yaml
write:
  max_error_fraction: 0.5
  breaker_consecutivez: 3
wirte:
  commit_lock: off
```

1. Indented under a list item, with `train.device: gpu` and `write.commit_lock: off` beside it:

   ```bash
   ./spark-submit.sh jobs/publish.py --conf conf/local.yaml --no-such-publish-flag --set rank.dtype=float8
   ```

| `jobs/publish.py` | `--catalogue URI`, `--no-such-row-flag` |

Inline: `./spark-submit.sh jobs/evaluate.py --conf conf/local.yaml --no-such-eval-flag`; a link
from a page in docs/ to [the job](jobs/geotag.py) is resolved from docs/, as GitHub does.

```python
from georank.eval.report import EvalReport, write_report
```
"""
    found = "\n".join(problems_of(text, page))
    for expected in ("config key write.no_such_knob", "path jobs/no_such_job.py", "path missing.md",
                     "georank.write has no 'no_such_function'", "jobs/geotag.py accepts no --no-such-flag",
                     "--set rank.no_such_key", "yaml key write.breaker_consecutivez", "no heading #no-such-heading",
                     "yaml key wirte", "jobs/publish.py accepts no --no-such-publish-flag", "config value rank.dtype=float8",
                     "jobs/evaluate.py accepts no --no-such-eval-flag", "config value train.device=gpu",
                     "path jobs/geotag.py does not exist", "georank.eval.report has no 'write_report'",
                     "jobs/publish.py accepts no --no-such-row-flag"):
        assert expected in found, f"expected a problem naming {expected!r}, got:\n{found}"
    for fine in ("max_error_fraction:", "spark.ui.port", "--run-date", "conf/local.yaml", "#the-checks-own-heading",
                 "write.commit_lock", "EvalReport"):
        assert fine not in found, f"{fine} is real, yet reported:\n{found}"
