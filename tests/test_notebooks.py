"""The data engineers' notebook runs top to bottom on a real Delta table (written by delta-rs here)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from georank import schema as S

ROOT = Path(__file__).resolve().parent.parent


def _results(n: int) -> pa.Table:
    rows = []
    for i in range(n):
        rows.append(
            {
                "photo_id": f"p{i}", "uri": f"/x/p{i}.jpg", "lat_deg": 10.0 + i, "lon_deg": 20.0 - i,
                "confidence": 0.5, "spread_km": 12.0, "ranker_skipped": i % 2 == 0, "n_candidates": 12,
                "top_candidates": [{"source": "retrieved", "gallery_id": i, "lat_deg": 10.0 + i, "lon_deg": 20.0 - i, "score": 1.0}],
                "model_version": "m", "adapter_version": "a", "embed_version": "e", "index_version": "i",
                "run_id": "r1", "run_date": dt.date(2026, 11, 23),
            }
        )
    rows.append({"photo_id": "bad", "uri": "/x/bad.jpg", "run_id": "r1", "run_date": dt.date(2026, 11, 23),
                 "error_stage": "decode", "error_reason": "the file is empty (0 bytes)"})
    return pa.Table.from_pylist(rows, schema=S.RESULTS)


def test_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(tmp_path / "results"), _results(5), partition_by=["run_date"])
    truth = pa.table({"photo_id": ["p0", "p1", "p9"], "lat_deg": [10.0, 11.5, 0.0], "lon_deg": [20.0, 19.0, 0.0]})
    import pyarrow.parquet as pq

    pq.write_table(truth, tmp_path / "truth.parquet")
    for key, value in {
        "GEORANK_RESULTS": tmp_path / "results",
        "GEORANK_TRUTH": tmp_path / "truth.parquet", "GEORANK_MAP_PNG": tmp_path / "map.png", "GEORANK_HEADLESS": "1",
    }.items():
        monkeypatch.setenv(key, str(value))
    nb = json.loads((ROOT / "notebooks" / "georank_tables.ipynb").read_text())
    ns: dict[str, object] = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "notebook", "exec"), ns)  # noqa: S102 - our own notebook
    nightly = ns["nightly"]
    assert nightly.loc[dt.date(2026, 11, 23), "read"] == 6  # type: ignore[index]
    assert (nightly.loc[dt.date(2026, 11, 23), "predicted"], nightly.loc[dt.date(2026, 11, 23), "errors"]) == (5, 1)  # type: ignore[index]
    assert (tmp_path / "map.png").stat().st_size > 10_000
    acc = ns["display_value"]
    assert acc["n"] == 3 and acc["missing"] == 1 and acc["acc@1km"] == pytest.approx(1 / 3)  # type: ignore[index]
