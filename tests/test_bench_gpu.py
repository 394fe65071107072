"""benchmarks/bench_gpu.py cannot rot while no GPU is at hand: its --smoke run (the same parts and
code paths with tiny models on CPU) prints every part and ends with one JSON line whose parts are
all ok; a part that fails is reported and the others still run; without --smoke on a host with no
CUDA device it says so and exits 2 before building a model. Speeds are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
PARTS = ("ranker", "precision", "embedder", "index", "loop")


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _report(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])  # the last line of stdout is the JSON


def test_smoke_prints_every_part_and_one_json_line_with_each_part_ok() -> None:
    import faiss

    proc = _run("--smoke", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    for part in PARTS:
        assert f"== {part}" in lines, f"part {part} not printed"
    report = _report(proc.stdout)
    assert report["bench"] == "bench_gpu" and report["smoke"] is True
    assert list(report["parts"]) == list(PARTS)
    for part, result in report["parts"].items():
        assert result["status"] == "ok", (part, result)
    ranker = report["parts"]["ranker"]["shapes"]["tiny"]
    assert [r["path"] for r in ranker["paths"]] == ["pair", "shared", "cache"]
    assert ranker["max_score_diff"] < 1e-4  # the three paths score the same pairs (fp32)
    assert len(ranker["sweep"]) == 4 and all("s/photo" in r for r in ranker["sweep"])
    assert report["parts"]["loop"]["errors"] == 0
    pair, shared, _cache = report["paper"]["rows"]  # the FLOP model's forecast rides along
    assert pair["TFLOP/photo"] > shared["TFLOP/photo"]
    if not hasattr(faiss, "StandardGpuResources"):  # said plainly, and the CPU rows still measured
        assert "faiss-gpu is MISSING" in proc.stdout
        assert report["parts"]["index"]["faiss_gpu"] is False


def test_a_failing_part_is_reported_and_the_others_still_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_gpu

    def broken(*_args: object) -> dict:
        raise RuntimeError("index part broken on purpose")

    monkeypatch.setitem(bench_gpu.RUNNERS, "index", broken)
    assert bench_gpu.main(["--smoke", "--parts", "index", "embedder"]) == 1
    out = capsys.readouterr().out
    assert "index: FAILED: RuntimeError: index part broken on purpose" in out
    parts = _report(out)["parts"]
    assert list(parts) == ["embedder", "index"]  # the chosen parts, in the script's order
    assert parts["index"]["status"] == "failed" and "broken on purpose" in parts["index"]["error"]
    assert parts["embedder"]["status"] == "ok"


def test_without_cuda_and_without_smoke_it_exits_2_before_building_any_model() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    proc = _run(timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs a CUDA device" in proc.stderr
    assert "--smoke" in proc.stderr  # says what to run instead
    out = proc.stdout + proc.stderr
    assert "building" not in out  # every part logs "bench_gpu: building the ..." before it builds a model
    assert "== ranker" not in out and '"bench"' not in out
