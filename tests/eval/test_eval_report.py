"""Metrics per method, calibration tables, the EVAL_RESULTS rows and the report folder, from
predictions built by hand (no Spark, no models)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from georank import schema as S
from georank.eval.metric import method_accuracy, method_errors
from georank.eval.render import write_report
from georank.eval.report import (
    EvalReport,
    confidence_calibration,
    results_table,
    skip_calibration,
    summary_numbers,
)

RADII = (1.0, 25.0, 200.0, 750.0, 2500.0)


def _truth(n: int) -> pa.Table:
    lat = np.linspace(-60, 60, n)
    lon = np.linspace(-170, 170, n)
    return pa.table({"photo_id": [f"p{i}" for i in range(n)], "image": [f"p{i}.jpg" for i in range(n)],
                     "lat_deg": lat, "lon_deg": lon}, schema=S.BENCHMARK)


def _preds(truth: pa.Table) -> pa.Table:
    """nn exact; knn 0.5 degree of latitude off (~55 km); ranker exact on even rows, far on odd;
    full = skipped (exact) on rows % 3 == 0 else the ranker; row 1 failed for every method."""
    rows = []
    for i, r in enumerate(truth.to_pylist()):
        lat, lon = r["lat_deg"], r["lon_deg"]
        base = {"photo_id": r["photo_id"], "model_version": "m", "adapter_version": "a", "embed_version": "e", "index_version": "i"}
        if i == 1:
            rows += [{**base, "method": m, "error_stage": "decode", "error_reason": "not an image"} for m in S.EVAL_METHODS]
            continue
        ranker = (lat, lon) if i % 2 == 0 else (-lat, lon + 5.0 if lon < 170 else lon - 5.0)
        conf = 0.9 if i % 2 == 0 else 0.2
        rows.append({**base, "method": "nn", "lat_deg": lat, "lon_deg": lon})
        rows.append({**base, "method": "knn", "lat_deg": lat + 0.5, "lon_deg": lon})
        rows.append({**base, "method": "ranker", "lat_deg": ranker[0], "lon_deg": ranker[1], "confidence": conf, "ranker_skipped": False})
        if i % 3 == 0:
            rows.append({**base, "method": "full", "lat_deg": lat, "lon_deg": lon, "confidence": 1.0, "ranker_skipped": True})
        else:
            rows.append({**base, "method": "full", "lat_deg": ranker[0], "lon_deg": ranker[1], "confidence": conf, "ranker_skipped": False})
    return pa.Table.from_pylist(rows, schema=S.EVAL_PREDICTIONS)


def test_metrics_count_every_row_and_a_failed_photo_as_a_miss() -> None:
    truth = _truth(20)
    acc = method_accuracy(_preds(truth), truth, RADII)
    assert list(acc) == list(S.EVAL_METHODS)
    assert acc["nn"].hits == (19,) * 5 and acc["nn"].missing == 1 and acc["nn"].n == 20
    assert acc["knn"].hits == (0, 0, 19, 19, 19)  # ~55 km off: a miss at 1 and 25 km
    assert acc["ranker"].hits[0] == 10  # even rows exact; odd rows far; row 1 failed
    for a in acc.values():
        assert all(h + m == a.n == 20 for h, m in zip(a.hits, a.misses))


def test_a_photo_missing_from_the_predictions_is_a_miss_and_a_stranger_is_refused() -> None:
    truth = _truth(5)
    preds = _preds(truth)
    dropped = preds.filter(pa.compute.not_equal(preds.column("photo_id"), "p4"))
    assert np.isinf(method_errors(dropped, truth)["nn"][4])
    stranger = pa.concat_tables([preds, preds.slice(0, 1).set_column(0, S.EVAL_PREDICTIONS.field("photo_id"), pa.array(["zz"]))])
    with pytest.raises(ValueError, match="expected predictions only for benchmark photos, got 'zz'"):
        method_errors(stranger, truth)
    with pytest.raises(ValueError, match="expected one prediction per photo, got two for 'p0'"):
        method_errors(pa.concat_tables([preds, preds.slice(0, 1)]), truth)


def _report(truth: pa.Table, preds: pa.Table) -> EvalReport:
    errors = method_errors(preds, truth)
    from georank.eval.metric import accuracy_from_errors

    full = {r["photo_id"]: r for r in preds.to_pylist() if r["method"] == "full"}
    return EvalReport(
        benchmark="bench", candidates="georank", run_id="r1",
        accuracy={m: accuracy_from_errors(e, RADII) for m, e in errors.items()}, errors_km=errors,
        calibration=confidence_calibration(preds, truth, errors["full"], 25.0),
        skip=skip_calibration(preds, truth, errors, RADII),
        versions={"model_version": "m", "adapter_version": "a", "embed_version": "e", "index_version": "i"},
        counts={"rows": truth.num_rows},
        truth_latlon_deg=np.column_stack([truth.column("lat_deg").to_numpy(), truth.column("lon_deg").to_numpy()]),
        full_latlon_deg=np.array([[full[p]["lat_deg"] if full[p]["lat_deg"] is not None else np.nan,
                                   full[p]["lon_deg"] if full[p]["lon_deg"] is not None else np.nan]
                                  for p in truth.column("photo_id").to_pylist()]),
    )


def test_calibration_tables() -> None:
    truth = _truth(20)
    rep = _report(truth, _preds(truth))
    cal = rep.calibration
    assert sum(c["n"] for c in cal) == 19 and len(cal) == 10  # the failed photo has no confidence
    assert [c["confidence_min"] <= c["confidence_max"] for c in cal] == [True] * 10
    low = [c for c in cal if c["confidence_max"] == 0.2]
    assert low and all(c["accuracy"] == 0.0 for c in low)  # the far (odd, ranked) rows
    assert cal[-1]["confidence_min"] == 1.0 and cal[-1]["accuracy"] == 1.0
    s = rep.skip
    skipped = [i for i in range(20) if i % 3 == 0]  # row 1 failed is not among them
    assert s["n_skipped"] == len(skipped) and s["n_predicted"] == 19 and s["n_ranked"] == 19 - len(skipped)
    assert s["skip_rate"] == pytest.approx(len(skipped) / 19)
    assert s["accuracy_skipped"]["25"] == 1.0
    # the ranker on the skipped rows: exact on the even ones (0, 6, 12, 18), far on 3, 9, 15
    assert s["ranker_on_skipped"]["25"] == pytest.approx(4 / 7)


def test_results_rows_summary_and_report_folder(tmp_path: Path) -> None:
    truth = _truth(20)
    rep = _report(truth, _preds(truth))
    table = results_table(rep, run_at=dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    assert table.schema == S.EVAL_RESULTS and table.num_rows == 4 * 5
    for r in table.to_pylist():
        assert r["hits"] + r["misses"] == r["n"] == 20 and r["accuracy"] == pytest.approx(r["hits"] / 20)
    nums = summary_numbers(rep)
    assert nums["nn"]["acc_pct"]["25km"] == 95.0 and nums["nn"]["failed"] == 1
    assert all(nums[m]["hits"][k] + nums[m]["misses"][k] == 20 for m in nums for k in nums[m]["hits"])
    paths = write_report(rep, tmp_path / "report", radius_km=25.0)
    md = Path(paths["report_md"]).read_text()
    assert "| Retrieval top-1 (NN) | 95.00 | 95.00 | 95.00 | 95.00 | 95.00 | 20 | 1 |" in md
    assert "Skip rate 36.8% (7 skipped, 12 ranked, of 19 predicted)." in md
    page = Path(paths["report_html"]).read_text()
    assert "<table>" in page and 'src="map.png"' in page and 'src="cdf.png"' in page and 'src="calibration.png"' in page
    for name in ("cdf", "calibration", "map"):
        img = np.asarray(Image.open(paths[name]).convert("L"), dtype=np.float64)
        assert img.shape[0] > 300 and img.shape[1] > 500
        assert img.std() > 10  # not a blank canvas; that the data is drawn: test_the_plots_draw_the_data
    # the map shows land: the crude coastlines' grey fill covers a good share of the plot
    rgb = np.asarray(Image.open(paths["map"]).convert("RGB")).reshape(-1, 3)
    assert (np.abs(rgb.astype(int) - [230, 230, 230]).sum(axis=1) < 6).mean() > 0.1


def _ink_changed(a: Path, b: Path) -> float:
    """Share of pixels whose colour differs between two PNGs of the same size (summed RGB > 30)."""
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int64)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int64)
    assert x.shape == y.shape
    return float((np.abs(x - y).sum(axis=2) > 30).mean())


def test_the_plots_draw_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PNGs differ substantially from the same figures drawn with the data removed (bare axes,
    titles, ticks and gridlines alone pass any "not blank" check), and the figures' artists carry
    the report's numbers: one CDF line per method, one bar per confidence decile, a dot per truth
    and per prediction on the map."""
    import warnings

    import matplotlib.figure

    from georank.eval.plots import draw_plots
    from georank.eval.report import method_label

    truth = _truth(200)  # enough dots that the map's data outweighs its title's changed counts
    rep = _report(truth, _preds(truth))
    bare = dataclasses.replace(rep, errors_km={}, calibration=[], truth_latlon_deg=np.zeros((0, 2)),
                               full_latlon_deg=np.zeros((0, 2)))
    (tmp_path / "bare").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "No artists with labels found to put in legend"
        files_bare = draw_plots(bare, tmp_path / "bare", radius_km=25.0)
    figs: dict[str, matplotlib.figure.Figure] = {}
    save = matplotlib.figure.Figure.savefig

    def keep(fig: matplotlib.figure.Figure, fname: Path, *a: Any, **k: Any) -> None:
        figs[Path(fname).stem] = fig
        save(fig, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    (tmp_path / "real").mkdir()
    files = draw_plots(rep, tmp_path / "real", radius_km=25.0)
    monkeypatch.undo()
    assert set(files) == set(files_bare) == set(figs) == {"cdf", "calibration", "map"}

    # the written files: measured 5.9% (cdf), 37% (calibration), 4.4% (map) of the pixels change;
    # with the data's plotting calls skipped, 0%, 4.2% (the n= labels and tick labels), 0.35% (title)
    at_least = {"cdf": 0.02, "calibration": 0.15, "map": 0.02}
    for name, share in at_least.items():
        changed = _ink_changed(tmp_path / "real" / files[name], tmp_path / "bare" / files_bare[name])
        assert changed >= share, f"{name}.png: only {changed:.2%} of its pixels differ from the plot without data"

    # the artists: what the figures hold is the report's data
    (cdf,) = figs["cdf"].axes
    lines = {str(ln.get_label()): ln for ln in cdf.get_lines() if not str(ln.get_label()).startswith("_")}
    assert sorted(lines) == sorted(method_label(m) for m in rep.errors_km)
    for method, err in rep.errors_km.items():
        x, y = (np.asarray(v, dtype=np.float64) for v in lines[method_label(method)].get_data())
        assert np.allclose(y, [(err < g).mean() for g in x]), method
    nn = np.asarray(lines[method_label("nn")].get_ydata(), dtype=np.float64)
    assert nn[-1] == pytest.approx(199 / 200)  # row 1 failed: never reaches 1
    (cal,) = figs["calibration"].axes
    assert [bar.get_height() for bar in cal.containers[0]] == pytest.approx([100 * c["accuracy"] for c in rep.calibration])
    assert len(rep.calibration) == 10
    (world,) = figs["map"].axes
    dots = [c.get_offsets() for c in world.collections if c.get_label() in ("truth", "prediction (full)")]
    ok = np.isfinite(rep.full_latlon_deg).all(axis=1)
    assert len(dots) == 2 and ok.sum() == 199
    assert np.allclose(dots[0], rep.truth_latlon_deg[:, ::-1])  # (lon, lat): x is the longitude
    assert np.allclose(dots[1], rep.full_latlon_deg[ok][:, ::-1])
