"""notebooks/evaluation.ipynb runs top to bottom, headless, on an EVAL_RESULTS Delta table
(written by delta-rs here: two runs of one benchmark)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from georank import schema as S

ROOT = Path(__file__).resolve().parents[2]


def _run_rows(run_id: str, when: dt.datetime, hits_25: dict[str, int]) -> list[dict[str, object]]:
    rows = []
    for method in hits_25:
        for radius, hits in zip((1.0, 25.0, 200.0, 750.0, 2500.0), (1, hits_25[method], 6, 7, 9)):
            rows.append({"run_id": run_id, "run_at": when, "benchmark": "im2gps3k_places365", "candidates": "georank",
                         "method": method, "radius_km": radius, "accuracy": hits / 10, "n": 10, "hits": hits,
                         "misses": 10 - hits, "failed": 1, "median_km": 80.0, "mean_km": 900.0, "model_version": "m",
                         "adapter_version": "u" if "@" in method else "a", "embed_version": "e", "index_version": "i"})
    return rows


def test_evaluation_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import write_deltalake

    t0 = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    rows = _run_rows("r1", t0, {"nn": 2, "knn": 2, "ranker": 3, "full": 3})
    rows += _run_rows("r2", t0 + dt.timedelta(days=1), {"ranker@untrained": 1, "nn": 2, "knn": 3, "ranker_retrieved": 4,
                                                         "ranker": 4, "full": 5, "ranker_prototype": 2})
    write_deltalake(str(tmp_path / "eval_results"), pa.Table.from_pylist(rows, schema=S.EVAL_RESULTS))
    for key, value in {"GEORANK_EVAL_RESULTS": tmp_path / "eval_results", "GEORANK_EVAL_PNG": tmp_path / "acc.png",
                       "GEORANK_HEADLESS": "1"}.items():
        monkeypatch.setenv(key, str(value))
    nb = json.loads((ROOT / "notebooks" / "evaluation.ipynb").read_text())
    ns: dict[str, object] = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "notebook", "exec"), ns)  # noqa: S102 - our own notebook
    comparison = ns["comparison"]
    assert comparison.loc[("im2gps3k_places365", "full"), "25 km"] == pytest.approx(50.0)  # type: ignore[index]
    assert list(comparison.index.get_level_values(1)) == [  # type: ignore[attr-defined]
        "nn", "knn", "ranker", "full", "ranker_prototype", "ranker_retrieved", "ranker@untrained"]
    assert comparison.loc[("im2gps3k_places365", "ranker@untrained"), "25 km"] == pytest.approx(10.0)  # type: ignore[index]
    assert len(ns["history"]) == 2  # type: ignore[arg-type]  # one line per run (ranker@ rows carry another adapter)
    assert (tmp_path / "acc.png").stat().st_size > 10_000


def test_evaluation_notebook_refuses_counts_that_do_not_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import write_deltalake

    rows = _run_rows("r1", dt.datetime(2026, 11, 29, tzinfo=dt.UTC), {"nn": 2, "knn": 2, "ranker": 3, "full": 3})
    rows[3]["misses"] = 0  # hits + misses != n
    write_deltalake(str(tmp_path / "eval_results"), pa.Table.from_pylist(rows, schema=S.EVAL_RESULTS))
    monkeypatch.setenv("GEORANK_EVAL_RESULTS", str(tmp_path / "eval_results"))
    monkeypatch.setenv("GEORANK_HEADLESS", "1")
    nb = json.loads((ROOT / "notebooks" / "evaluation.ipynb").read_text())
    ns: dict[str, object] = {}
    with pytest.raises(AssertionError, match="a row where n != hits \\+ misses"):
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), "notebook", "exec"), ns)  # noqa: S102
