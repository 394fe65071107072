"""What training buys the demo ranker, measured fast (no Spark): the evaluate job's ranker rows
over the demo's 200 held-out query photos, in one Python process.

The demo queries (conf/local.yaml's world, ``demo/queries``, truth in
``demo/queries_truth.parquet``) are decoded, embedded and retrieved ONCE with the job's own
functions (:func:`georank.pipeline.decode_photos`, ``embed_isolated``, ``retrieve_isolated``) and
cached under ``--cache`` (keyed by the index version); each adapter is then ranked with the job's
own :func:`georank.ranking.rank_and_decide` (skip rule off, every enabled source: what the
evaluate job's ``ranker`` and ``ranker@<name>`` rows run). Printed per row: top-1 accuracy within
25 and 200 km and the median error km, for

- each adapter (default: ``rank.adapter_uri`` and every ``evaluate.compare_adapters`` entry);
- ``nn``: retrieval top-1;
- ``oracle``: the best of the first ``candidates.retrieved`` retrieved candidates (the ceiling
  any ranker has over them);
- ``random``: a uniformly random pick among them (expected accuracy; median of every
  candidate's error): what a ranker that learned nothing scores, give or take the noise;
- ``rho`` (adapters): the mean per-photo Spearman correlation of score and minus error km, a
  finer sign of learning than top-1 (0: none).

``--train DIR`` first trains a demo ranker with the config (plus ``--set`` overrides) into
``DIR`` exactly as the embedded default does (:func:`georank.train.demo.ensure_trained_ranker`:
training data from the demo gallery, the comparison warm-up (demo.train_warmup_steps), LoRA + head; its untrained
step 0 beside it) and measures that trained/untrained pair, with the training seconds.

    .venv/bin/python benchmarks/bench_demo_ranker.py                       # the demo's own adapters
    .venv/bin/python benchmarks/bench_demo_ranker.py --train /tmp/r1 --set train.grouping=mixed

One run's numbers on whatever machine runs this; never asserted anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RADII_KM = (25.0, 200.0)


def retrieved_queries(cfg: Any, cache: Path) -> tuple[Any, Any, str, Any]:
    """(decoded rows, neighbours, embed version, run info) of every demo query, cached by index version."""
    import pyarrow as pa
    import pyarrow.feather as feather

    from georank.index import read_manifest
    from georank.pipeline import decode_photos, embed_isolated, retrieve_isolated
    from georank.run_info import RunInfo

    run = RunInfo("bench-demo-ranker", dt.date(2026, 11, 30))
    manifest = read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    folder = cache / f"{manifest.index_version}-k{cfg.retrieve.k}"
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        return feather.read_table(folder / "decoded.arrow"), feather.read_table(folder / "neighbours.arrow"), meta["embed_version"], run
    root = Path(cfg.resolve(cfg.demo.root))
    queries = sorted((root / "queries").glob("*.jpg"))
    table = pa.table({"photo_id": [q.stem for q in queries], "uri": [str(q) for q in queries],
                      "image_bytes": pa.nulls(len(queries), pa.binary())})
    ok, emb, version, _ = embed_isolated(decode_photos(table, cfg), cfg, run)
    ok, neighbours, _ = retrieve_isolated(ok, emb, cfg, run, embed_version=version)
    folder.mkdir(parents=True, exist_ok=True)
    feather.write_feather(ok, folder / "decoded.arrow")
    feather.write_feather(neighbours, folder / "neighbours.arrow")
    (folder / "meta.json").write_text(json.dumps({"embed_version": version}))
    return ok, neighbours, version, run


def errors_km(truth: dict[str, tuple[float, float]], ids: list[str], latlon_deg: np.ndarray) -> np.ndarray:
    """Geodesic error (n,) km of predictions ``latlon_deg (n, 2)`` of photos ``ids``."""
    from georank.geo import geodesic_km

    return np.array([geodesic_km(*truth[p], float(a), float(b)) for p, (a, b) in zip(ids, latlon_deg)])


def figures(err_km: np.ndarray, n: int) -> dict[str, float]:
    """Accuracy (%) within each radius (strict <; a missing photo is a miss) and the median km."""
    from georank.eval.metric import accuracy_from_errors

    acc = accuracy_from_errors(np.concatenate([err_km, np.full(n - len(err_km), np.inf)]), RADII_KM)
    out = {f"acc@{r:g}km": 100.0 * a for r, a in zip(RADII_KM, acc.accuracy)}
    out["median_km"] = acc.median_km
    return out


def rank_rows(cfg: Any, adapter: str, decoded: Any, neighbours: Any, version: str, run: Any) -> tuple[list[dict[str, Any]], float]:
    """RESULTS rows (every scored candidate in ``top_candidates``) and seconds of the job's ranker
    with ``adapter``, skip rule off."""
    from georank.ranking import rank_and_decide

    c = cfg.model_copy(update={
        "rank": cfg.rank.model_copy(update={"adapter_uri": adapter}),
        "skip": cfg.skip.model_copy(update={"enabled": False}),
        "decide": cfg.decide.model_copy(update={"top_candidates": max(cfg.decide.top_candidates, cfg.candidates.retrieved)}),
    })
    t0 = time.perf_counter()
    rows = [r for r in rank_and_decide(decoded, neighbours, c, run, embed_version=version).to_pylist() if r["error_stage"] is None]
    return rows, time.perf_counter() - t0


def score_distance_rho(truth: dict[str, tuple[float, float]], rows: list[dict[str, Any]]) -> float:
    """Mean over photos of the Spearman correlation between a candidate's score and minus its
    error km (1: the scores order the candidates by distance; 0: no relation): finer than top-1."""
    def ranks(x: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)

    rhos = []
    for r in rows:
        cands = r["top_candidates"] or []
        if len(cands) < 3:
            continue
        s = [c["score"] for c in cands]
        d = errors_km(truth, [r["photo_id"]] * len(cands), np.array([[c["lat_deg"], c["lon_deg"]] for c in cands]))
        rho = np.corrcoef(ranks(np.asarray(s)), ranks(-d))[0, 1] if np.ptp(s) > 0 else np.nan
        if np.isfinite(rho):
            rhos.append(float(rho))
    return float(np.mean(rhos)) if rhos else float("nan")


def measure(cfg: Any, adapters: dict[str, str], cache: Path) -> dict[str, Any]:
    """Figures of every adapter, ``nn`` and ``oracle`` over the demo's held-out queries."""
    import pyarrow.parquet as pq

    decoded, neighbours, version, run = retrieved_queries(cfg, cache)
    t = pq.read_table(Path(cfg.resolve(cfg.demo.root)) / "queries_truth.parquet").to_pylist()
    truth = {str(r["photo_id"]): (float(r["lat_deg"]), float(r["lon_deg"])) for r in t}
    n = len(truth)
    nrows = neighbours.to_pylist()
    ids = [r["photo_id"] for r in nrows]
    k = cfg.candidates.retrieved
    out: dict[str, Any] = {"n": n, "candidates": k}
    nn = np.array([[r["lat_deg"][0], r["lon_deg"][0]] for r in nrows])
    out["nn"] = figures(errors_km(truth, ids, nn), n)
    each = [errors_km(truth, [p] * min(k, len(r["lat_deg"])), np.column_stack([r["lat_deg"][:k], r["lon_deg"][:k]]))
            for p, r in zip(ids, nrows)]
    out["oracle"] = figures(np.array([e.min() for e in each]), n)
    out["random"] = {**{f"acc@{r:g}km": 100.0 * float(np.sum([np.mean(e < r) for e in each])) / n for r in RADII_KM},
                     "median_km": float(np.median(np.concatenate(each)))}
    for name, uri in adapters.items():
        rows, seconds = rank_rows(cfg, uri, decoded, neighbours, version, run)
        latlon = np.array([[r["lat_deg"], r["lon_deg"]] for r in rows])
        out[name] = {**figures(errors_km(truth, [r["photo_id"] for r in rows], latlon), n),
                     "rho": round(score_distance_rho(truth, rows), 3), "seconds": round(seconds, 1)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="measure this adapter (repeatable)")
    p.add_argument("--train", metavar="DIR", help="train a demo ranker with this config into DIR first, and measure it")
    p.add_argument("--cache", default=str(ROOT / "warehouse" / "bench_demo_ranker"), help="cached decoded queries + neighbours")
    p.add_argument("--threads", type=int, default=1, help="torch threads for scoring (the demo trains on 1 whatever this says)")
    p.add_argument("--no-untrained", action="store_true", help="with --train: skip the untrained adapter (same for every recipe without warm-up)")
    args = p.parse_args()

    import logging

    import torch

    from georank.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("py4j", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.conf, args.set)
    report: dict[str, Any] = {"set": args.set}
    if args.train:
        from georank.train.demo import ensure_trained_ranker, untrained_adapter_dir

        out = Path(args.train).resolve()
        cfg = cfg.model_copy(update={"rank": cfg.rank.model_copy(update={
            "base_model_uri": str(out / "base"), "adapter_uri": str(out / "adapter")})})
        world = json.loads((Path(cfg.resolve(cfg.demo.root)) / "demo_world.json").read_text())["world_id"]
        t0 = time.perf_counter()
        report["training"] = ensure_trained_ranker(cfg, world) or json.loads((out / "trained.json").read_text())["summary"]
        report["training_wall_s"] = round(time.perf_counter() - t0, 1)
        adapters = {"ranker": str(out / "adapter")}
        if not args.no_untrained:
            adapters["ranker@untrained"] = str(untrained_adapter_dir(out / "adapter"))
    else:
        adapters = {"ranker": cfg.resolve(cfg.rank.adapter_uri)}
        adapters.update({f"ranker@{k}": cfg.resolve(v) for k, v in cfg.evaluate.compare_adapters.items()})
    for a in args.adapter:
        name, _, uri = a.partition("=")
        adapters[name] = uri
    report.update(measure(cfg, adapters, Path(args.cache)))
    rows = [k for k in report if isinstance(report[k], dict) and "median_km" in report[k]]
    print(f"{'row':<22} {'acc@25km':>9} {'acc@200km':>10} {'median km':>10} {'rho':>6}")
    for k in rows:
        f = report[k]
        print(f"{k:<22} {f['acc@25km']:>9.1f} {f['acc@200km']:>10.1f} {f['median_km']:>10.1f} {f.get('rho', float('nan')):>6.3f}")
    print(json.dumps(report, sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
