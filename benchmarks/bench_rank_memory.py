"""rank_and_decide's memory as the partition grows: 32 vs 256 photos (issue 14 item 5).

One task's ranking of a partition, in a fresh child process per (code, photos): the demo's
ranker (conf/local.yaml, skip rule off so every photo is ranked, 12 candidates per photo)
over synthetic photos whose candidates stand on real-size gallery JPEGs (default 1024x768,
``--gallery`` distinct images, picked at random per photo, so a partition of 256 photos sees
most of them). Printed per child:

- ``live_MB``: the high-water mark of decoded candidate pixels alive at once (width x height x 3
  of every image the ranking module's loader ``decode_image`` returned and that is still
  referenced), counted by wrapping that loader with a finalizer per image. This is the figure
  the item is about, exact and unaffected by allocator noise;
- ``maxrss_MB``: the child's peak RSS (``ru_maxrss``), which also holds torch, the model, the
  input partition itself (``--query`` sized RGB per photo, which the caller holds) and what
  malloc does not give back: noisier, shown for the whole picture;
- seconds and images decoded.

``--code DIR`` runs the children on another checkout of georank (e.g. the commit before the
change, from ``git archive``) so that before and after are measured in the same run:

    git archive <commit> georank conf | tar -x -C /tmp/before
    .venv/bin/python benchmarks/bench_rank_memory.py --code /tmp/before

One run's numbers on whatever machine runs this; never asserted anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def make_gallery(out: Path, n: int, width: int, height: int) -> list[str]:
    """``n`` smooth random JPEGs (photo-like sizes when encoded) of width x height."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    uris = []
    for i in range(n):
        small = rng.integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        path = out / f"g{i:05d}.jpg"
        img.save(path, quality=90)
        uris.append(str(path))
    return uris


def child(n_photos: int, gallery: list[str], query_side: tuple[int, int], seed: int) -> dict[str, Any]:
    """Rank ``n_photos`` synthetic photos in this process; the figures as a dict."""
    import numpy as np
    import pyarrow as pa

    import georank.ranking as R
    from georank import schema as S
    from georank.config import load_config
    try:
        from georank.run_info import RunInfo
    except ImportError:  # an older checkout (--code) kept it in georank.pipeline
        from georank.pipeline import RunInfo  # type: ignore[no-redef]

    # Only the keys this needs (the demo's ranker, as conf/local.yaml sizes it; skip rule off), so
    # that an older checkout (--code) validates the same config.
    conf = Path(tempfile.mkdtemp(prefix="bench-rank-mem-conf-")) / "bench.yaml"
    conf.write_text(json.dumps({
        "rank": {"base_model_uri": str(ROOT / "demo/models/ranker/base"),
                 "adapter_uri": str(ROOT / "demo/models/ranker/adapter"), "max_pixels": 50176},
        "candidates": {"retrieved": 12},
        "skip": {"enabled": False},
    }))  # JSON is YAML
    cfg = load_config(conf)
    rng = np.random.default_rng(seed)
    w, h = query_side
    k = 20

    def tables(n: int, tag: str) -> tuple[pa.Table, pa.Table]:
        ids = [f"{tag}{i:05d}" for i in range(n)]
        rgb = [rng.integers(0, 256, h * w * 3, dtype=np.uint8).tobytes() for _ in range(n)]
        decoded = pa.Table.from_pylist(
            [{"photo_id": p, "uri": None, "rgb": b, "width_px": w, "height_px": h, "error_stage": None, "error_reason": None}
             for p, b in zip(ids, rgb)], schema=S.DECODED)
        rows = []
        for p in ids:
            picks = rng.choice(len(gallery), size=k, replace=False)
            rows.append({
                "photo_id": p, "gallery_id": [int(g) for g in picks], "similarity": [0.9 - 0.01 * j for j in range(k)],
                "lat_deg": [float(x) for x in rng.uniform(-60, 60, k)], "lon_deg": [float(x) for x in rng.uniform(-180, 180, k)],
                "description": [f"Town{g} Region" for g in picks], "image_uri": [gallery[g] for g in picks],
                "index_version": "bench",
            })
        return decoded, pa.Table.from_pylist(rows, schema=S.NEIGHBOURS)

    live = {"bytes": 0, "high": 0, "n": 0}

    def gone(nbytes: int) -> None:
        live["bytes"] -= nbytes

    load = R.decode_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        img = load(*args, **kwargs)
        nbytes = img.width * img.height * 3
        live["bytes"] += nbytes
        live["n"] += 1
        live["high"] = max(live["high"], live["bytes"])
        weakref.finalize(img, gone, nbytes)
        return img

    R.decode_image = counted
    run = RunInfo("bench", dt.date(2026, 11, 30))
    warm_decoded, warm_neigh = tables(2, "w")
    R.rank_and_decide(warm_decoded, warm_neigh, cfg, run, embed_version="bench")  # model loaded
    live.update(high=0, n=0)
    decoded, neigh = tables(n_photos, "q")
    t0 = time.perf_counter()
    out = R.rank_and_decide(decoded, neigh, cfg, run, embed_version="bench")
    seconds = time.perf_counter() - t0
    errors = sum(1 for r in out.column("error_stage").to_pylist() if r is not None)
    return {
        "georank": str(Path(R.__file__).parent),
        "photos": n_photos,
        "seconds": round(seconds, 1),
        "decoded_images": live["n"],
        "live_MB": round(live["high"] / 2**20, 1),
        "maxrss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--gallery", type=int, default=400, help="distinct gallery images")
    ap.add_argument("--side", default="1024x768", help="gallery image size, WxH")
    ap.add_argument("--query", default="320x240", help="query photo size, WxH (the input partition's rgb)")
    ap.add_argument("--code", action="append", default=[], help="another georank checkout to measure (repeatable)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--gallery-list", help=argparse.SUPPRESS)
    args = ap.parse_args()
    qw, qh = (int(x) for x in args.query.split("x"))
    if args.child is not None:
        gallery = json.loads(Path(args.gallery_list).read_text())
        print(json.dumps(child(args.child, gallery, (qw, qh), seed=1)))
        return
    gw, gh = (int(x) for x in args.side.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-rank-mem-") as tmp:
        gallery = make_gallery(Path(tmp), args.gallery, gw, gh)
        listing = Path(tmp) / "gallery.json"
        listing.write_text(json.dumps(gallery))
        print(f"load average {os.getloadavg()[0]:.1f}; {args.gallery} gallery JPEGs {gw}x{gh}, queries {qw}x{qh}")
        for code in [*args.code, str(ROOT)]:
            for n in args.sizes:
                env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": "1"}
                cmd = [sys.executable, __file__, "--child", str(n), "--gallery-list", str(listing), "--query", args.query]
                res = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if res.returncode != 0:
                    raise SystemExit(f"child failed ({code}, {n} photos):\n{res.stderr[-3000:]}")
                row = json.loads(res.stdout.strip().splitlines()[-1])
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
