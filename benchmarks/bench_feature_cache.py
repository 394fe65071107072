"""The ranker's feature cache on the demo world (issue 14 item 2): how often candidate images
repeat, and ranking time with and without the cache at the same shapes.

The demo queries (conf/local.yaml's world) are decoded, embedded and retrieved once per child
process; then, in partitions of ``input.photos_per_partition`` photos as a night's tasks would
see them, every photo the ranker scores (``--skip off``: all of them, the default, so both arms
rank the most; ``--skip on``: the skip rule as configured) contributes its candidates' gallery
ids. Printed:

- the share of candidate images that repeat within a partition (a candidate whose gallery
  image an earlier candidate of the same partition already had) and within the night (the
  same over all photos: what one worker keeping its cache all night would skip at best);
- ranking seconds (``rank_and_decide`` over all partitions, in one Python worker, scorer loaded
  before the clock starts) with ``rank.feature_cache_mb: 0`` and with the configured cache,
  each arm in a fresh child process, arms alternated ``--repeats`` times; the cache's hits and
  misses; and the largest score difference between the arms (the golden test's 1e-5 bound).

    .venv/bin/python benchmarks/bench_feature_cache.py [--photos 200] [--repeats 2]
    .venv/bin/python benchmarks/bench_feature_cache.py --photos 32 --interleave 4   # one scorer, min of 4 per arm

One run's numbers on whatever machine runs this; never asserted anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(photos: int, cache_mb: int, skip: bool) -> dict[str, Any]:

    from georank.candidates import from_neighbours
    from georank.config import load_config
    from georank.rank import get_scorer
    from georank.ranking import rank_and_decide

    os.chdir(ROOT)
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"rank.feature_cache_mb={cache_mb}", f"skip.enabled={str(skip).lower()}"])
    ok, neighbours, version, run = _retrieved_queries(cfg, photos)
    scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)  # loaded before the clock
    per = cfg.input.photos_per_partition
    parts, scores, seconds = [], {}, 0.0
    for start in range(0, ok.num_rows, per):
        d, n = ok.slice(start, per), neighbours.slice(start, per)
        t0 = time.perf_counter()
        out = rank_and_decide(d, n, cfg, run, embed_version=version)
        seconds += time.perf_counter() - t0
        ranked = {r["photo_id"] for r in out.to_pylist() if r["ranker_skipped"] is False}
        for r in out.to_pylist():
            scores[r["photo_id"]] = [(c["gallery_id"], c["score"]) for c in (r["top_candidates"] or [])]
        parts.append([
            [c.gallery_id for c in from_neighbours(row, cfg).candidates if c.source == "retrieved"]
            for row in n.to_pylist() if row["photo_id"] in ranked
        ])
    f = scorer.features
    return {
        "seconds": seconds, "partitions": parts, "scores": scores, "ranked": sum(len(p) for p in parts),
        "hits": f.hits if f else 0, "misses": f.misses if f else 0, "cached_MB": (f.nbytes / 2**20) if f else 0.0,
    }


def _retrieved_queries(cfg: Any, photos: int) -> tuple[Any, Any, str, Any]:
    """The first ``photos`` demo queries decoded, embedded and retrieved (what both arms rank):
    (decoded rows, neighbours, embed version, run info)."""
    import pyarrow as pa

    from georank.pipeline import decode_photos, embed_isolated, retrieve_isolated
    from georank.run_info import RunInfo

    queries = sorted((ROOT / "demo" / "queries").glob("*.jpg"))[:photos]
    table = pa.table({"photo_id": [q.stem for q in queries], "uri": [str(q) for q in queries],
                      "image_bytes": pa.nulls(len(queries), pa.binary())})
    run = RunInfo("bench", dt.date(2026, 11, 30))
    ok, emb, version, _ = embed_isolated(decode_photos(table, cfg), cfg, run)
    ok, neighbours, _ = retrieve_isolated(ok, emb, cfg, run, embed_version=version)
    return ok, neighbours, version, run


def interleaved(photos: int, reps: int, cache_mb: int) -> None:
    """One Python worker, one partition of ``photos`` demo queries (skip rule off), ONE scorer
    (one model in memory): rank_and_decide with its feature cache off (``features = None``, the
    pixel path) and on (a fresh, empty cache before each call: only repeats WITHIN the partition
    hit), ``reps`` rounds, the order swapped every round (off, on / on, off) so that neither arm
    always runs second. Per call: seconds, cache hits, and the images the vision tower saw
    (counted by a hook on the tower). Min and median seconds per arm: the min is the run least
    disturbed by other work on the machine."""
    import statistics

    from georank.config import load_config
    from georank.rank import get_scorer
    from georank.rank.features import FeatureCache
    from georank.ranking import rank_and_decide

    os.chdir(ROOT)
    cfg = load_config(ROOT / "conf" / "local.yaml", [f"rank.feature_cache_mb={cache_mb}", "skip.enabled=false"])
    ok, neighbours, version, run = _retrieved_queries(cfg, photos)
    scorer = get_scorer(cfg.rank, cfg.s3, resolve=cfg.resolve)
    assert scorer.features is not None, "--cache-mb must be > 0"
    budget = scorer.features.max_bytes
    tower = next(m for m in scorer.model.modules() if type(m).__name__.endswith("VisionTransformerPretrainedModel"))
    seen = [0]

    def count(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        seen[0] += 0 if grid is None else len(grid)

    tower.register_forward_pre_hook(count, with_kwargs=True)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(reps):
        for arm in (("off", "on") if r % 2 == 0 else ("on", "off")):
            scorer.features = None if arm == "off" else FeatureCache(max_bytes=budget)
            seen[0] = 0
            t0 = time.perf_counter()
            rank_and_decide(ok, neighbours, cfg, run, embed_version=version)
            times[arm].append(time.perf_counter() - t0)
            hits = scorer.features.hits if scorer.features is not None else 0
            print(f"  round {r + 1} {arm:>3}: {times[arm][-1]:6.1f} s, hits {hits}, images through the tower {seen[0]}",
                  flush=True)
    off, on = min(times["off"]), min(times["on"])
    print(f"interleaved, {photos} photos in one partition, {reps} rounds: off min {off:.1f} s (median "
          f"{statistics.median(times['off']):.1f}), on min {on:.1f} s (median {statistics.median(times['on']):.1f}): "
          f"off/on {off / on:.2f}x (min), {statistics.median(times['off']) / statistics.median(times['on']):.2f}x (median)")


def repeat_shares(parts: list[list[list[int]]]) -> tuple[float, float, int]:
    """(share repeating within a partition, share repeating within the night, candidates)."""
    total = sum(len(c) for p in parts for c in p)
    within = sum(len(ids) - len(set(ids)) for ids in ([g for c in p for g in c] for p in parts))
    night = total - len({g for p in parts for c in p for g in c})
    return within / max(total, 1), night / max(total, 1), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache-mb", type=int, default=512)
    ap.add_argument("--skip", choices=["on", "off"], default="off")
    ap.add_argument("--interleave", type=int, default=0, help="instead: one process, one partition, arms alternated N times")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.interleave:
        print(f"load average {os.getloadavg()}")
        interleaved(args.photos, args.interleave, args.cache_mb)
        print(f"load average {os.getloadavg()}")
        return
    if args.child is not None:
        print(json.dumps(child(args.photos, args.child, args.skip == "on")))
        return
    print(f"load average {os.getloadavg()[0]:.1f}; {args.photos} demo queries, skip rule {args.skip}")
    results: dict[int, list[dict[str, Any]]] = {0: [], args.cache_mb: []}
    for _ in range(args.repeats):
        for mb in (0, args.cache_mb):
            cmd = [sys.executable, __file__, "--child", str(mb), "--photos", str(args.photos), "--skip", args.skip]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            results[mb].append(r)
            print(f"  cache {mb:4d} MB: {r['seconds']:.1f} s ranking {r['ranked']} photos; hits {r['hits']}, "
                  f"misses {r['misses']}, {r['cached_MB']:.2f} MB cached", flush=True)
    within, night, total = repeat_shares(results[0][0]["partitions"])
    print(f"candidate images of ranked photos: {total}; repeat within a partition {within:.1%}, within the night {night:.1%}")
    off = min(r["seconds"] for r in results[0])
    on = min(r["seconds"] for r in results[args.cache_mb])
    print(f"ranking seconds (min of {args.repeats}): off {off:.1f}, on {on:.1f}: {off / on:.2f}x")
    a, b = results[0][0]["scores"], results[args.cache_mb][0]["scores"]
    diffs = [abs(x[1] - y[1]) for p in a for x, y in zip(a[p], b[p]) if x[1] is not None and y[1] is not None]
    same_order = all([g for g, _ in a[p]] == [g for g, _ in b[p]] for p in a)
    print(f"score difference off vs on: max {max(diffs, default=0.0):.2e} over {len(diffs)} scores; same top candidates: {same_order}")


if __name__ == "__main__":
    main()
