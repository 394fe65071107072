"""The evaluate job through its entry point (jobs/evaluate.py, in-process on the test run's Spark
session) on the tiny demo world: the table for every method, the JSON summary adding up, the
EVAL_RESULTS Delta table read back by a second engine (deltalake) and the report folder; the
untrained adapter (the demo ranker build's step 0) as a ``ranker@untrained`` row beside the ranker."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support import tiny_conf

from georank import schema as S
from georank.cli import run_job

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # end to end through the job entry point
ROOT = Path(__file__).resolve().parents[2]


def _job():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("evaluate_job", ROOT / "jobs" / "evaluate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_evaluate_job_on_the_tiny_world(spark, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    truth = pq.read_table(tiny_world / "queries_truth.parquet").to_pylist()[:3]
    bench = tmp_path / "im2gps3k_places365.csv"
    lines = ["IMG_ID,AUTHOR,LAT,LON,S3_Label,S16_Label,S365_Label,Prob_indoor,Prob_natural,Prob_urban"]
    lines += [f"{r['photo_id']}.jpg,demo,{r['lat_deg']!r},{r['lon_deg']!r},1,1,1,0,0,0" for r in truth]
    lines.append("absent_photo.jpg,demo,10.0,10.0,1,1,1,0,0,0")  # its image is not there: a miss for every method
    bench.write_text("\n".join(lines) + "\n")
    from georank.config import load_config
    from georank.train.demo import save_untrained_adapter

    ranker_dir = tiny_world / "models" / "ranker"
    untrained = save_untrained_adapter(load_config(tiny_conf(tiny_world, tmp_path / "base.yaml")),
                                       base_dir=ranker_dir / "base", out_dir=tmp_path / "adapter_untrained")
    conf = tiny_conf(tiny_world, tmp_path / "eval.yaml", input={"photos_per_partition": 8},
                     evaluate={"report_dir": str(tmp_path / "reports"), "compare_adapters": {"untrained": str(untrained)}})
    results_uri = tmp_path / "eval_results"
    job = _job()
    import matplotlib.figure

    figs: dict[str, matplotlib.figure.Figure] = {}  # the report's figures as they are saved, to read their data
    save = matplotlib.figure.Figure.savefig

    def keep(fig: matplotlib.figure.Figure, fname: Path, *a: Any, **k: Any) -> None:
        figs[Path(fname).stem] = fig
        save(fig, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    code = run_job("evaluate", job.main, add_args=job.add_args, argv=[
        "--conf", str(conf), "--set", f"tables.eval_results={results_uri}",
        "--benchmark", str(bench), "--images", str(tiny_world / "queries"),
    ])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out[-1]
    summary = json.loads(out[-1])  # the JSON summary is the last line
    assert summary["status"] == "ok" and summary["layout"] == "im2gps3k" and summary["rows"] == 4
    assert summary["photos_failed"] == 1 and summary["failed_stages"] == ["read"]
    table = [line for line in out if line.startswith("| ")]
    print("\n" + "\n".join(table))
    assert table[0].startswith("| method | 1 km | 25 km | 200 km | 750 km | 2500 km | n | failed |")
    assert [t.split("|")[1].strip() for t in table[1:]] == [
        "Retrieval top-1 (NN)", "[L]kNN, sigma=4 (Vo et al. 2017)",
        "GeoRanker, every enabled source (skip rule off)", "Full method (skip rule on)",
        "GeoRanker, adapter untrained (skip rule off)"]
    methods = summary["methods"]
    assert set(methods) == {*S.EVAL_METHODS, "ranker@untrained"}  # the JSON line sorts its keys
    assert methods["ranker@untrained"] != methods["ranker"]  # the same photos, another adapter: other numbers
    for m, s in methods.items():
        assert s["n"] == 4 and s["failed"] == 1
        for k in ("1km", "25km", "200km", "750km", "2500km"):
            assert s["hits"][k] + s["misses"][k] == s["n"], (m, k)
            assert s["acc_pct"][k] == pytest.approx(100 * s["hits"][k] / 4)
        assert s["hits"]["2500km"] <= 3  # the absent photo never counts as a hit

    from deltalake import DeltaTable

    dt_ = DeltaTable(str(results_uri))
    rows = dt_.to_pyarrow_table().to_pylist()
    assert len(rows) == 5 * 5 and {r["run_id"] for r in rows} == {summary["run_id"]}
    assert {r["benchmark"] for r in rows} == {"im2gps3k_places365"}
    for r in rows:
        assert r["hits"] + r["misses"] == r["n"] == 4 and r["failed"] == 1
        assert r["hits"] == methods[r["method"]]["hits"][f"{r['radius_km']:g}km"]
        assert r["model_version"] and r["embed_version"] and r["index_version"]
    adapters = {r["method"]: r["adapter_version"] for r in rows}
    assert adapters["ranker@untrained"] != adapters["ranker"] == adapters["full"]  # each row names its adapter
    assert [f.name for f in dt_.schema().to_arrow()] == S.EVAL_RESULTS.names

    files = summary["report_files"]
    assert Path(files["report_md"]).read_text().count("| Full method (skip rule on) |") == 1
    # the plots carry this run's data (that data shows in the PNGs: test_eval_report.py::test_the_plots_draw_the_data)
    assert set(figs) == {"cdf", "calibration", "map"}
    for name in figs:
        assert Image.open(files[name]).format == "PNG"
    curves = {str(ln.get_label()): np.asarray(ln.get_ydata(), dtype=np.float64) for ln in figs["cdf"].axes[0].get_lines()
              if not str(ln.get_label()).startswith("_")}
    assert sorted(curves) == sorted(t.split("|")[1].strip() for t in table[1:])  # a curve per method
    for label, y in curves.items():  # 3 photos predicted of 4, each within half the Earth's circumference
        assert y[-1] == 0.75 and set(np.unique(y)) <= {0.0, 0.25, 0.5, 0.75} and (np.diff(y) >= 0).all(), label
    cal = figs["calibration"].axes[0]
    assert cal.patches and sum(int(x.get_text().removeprefix("n=")) for x in cal.texts) == 3  # the full method's confidences
    dots = {c.get_label(): np.asarray(c.get_offsets(), dtype=np.float64) for c in figs["map"].axes[0].collections
            if c.get_label() in ("truth", "prediction (full)")}
    want = np.array([[r["lon_deg"], r["lat_deg"]] for r in truth] + [[10.0, 10.0]])
    assert np.allclose(dots["truth"], want) and len(dots["prediction (full)"]) == 3
