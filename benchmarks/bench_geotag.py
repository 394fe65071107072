"""The geotag job: bare Spark-free core loop vs the Spark job (local[2]), as photos grow 10x.

For each photo count (default 20 and 200 query photos of the embedded demo world, conf/local.yaml)
the same photos go through

  core   georank.pipeline.decode_photos + geotag_partition, one partition of
         ``input.photos_per_partition`` photos after another, in one Python process;
  spark  georank.spark.geotag.run_geotag on local[2] (the nightly job minus the launcher:
         input listing, decode and accelerator mapInArrow stages, staging, the counts check,
         the two Delta commits).

Each measurement runs in a fresh child process (so that its memory is its own), after a
warm-up on a few photos in that process (models loaded, for Spark: Python workers started
and Delta tables created), and the children alternate core, spark, core, spark. Printed per
run: seconds, photos/s, and peak RSS sampled every 0.2 s with psutil over the child's process
tree: the Python driver, the driver JVM (local mode: the executors live in it), and the Python
workers (pyspark.daemon and the workers it forks; forked workers share copy-on-write pages
with the daemon, so their sum over-counts). Then the ratio spark/core photos/s, end to end and
for the compute stage alone (decode + accelerator stage up to the staged Parquet), and
time(200)/time(20).

Both paths use the same partition size (``--per-partition``, default 10: 2 partitions for 20
photos, so local[2] has two tasks). The core loop runs once per ``--core-threads`` value (default
1 and 2; torch/OpenMP threads): with 1 it is one task slot's worth (what Spark gives each Python
worker), so "per slot" = spark / (2 x core at 1 thread), the strict figure (perfect scaling
assumed for the core loop); with 2 it uses the same total cores as local[2], so "same cores" =
spark / core at 2 threads is the issue's comparison (goal: >= 0.85). One run's numbers on
whatever machine runs this; the machine's load average is printed with them; never asserted.

More photos than the demo world's 200 queries: a second demo world is generated under the
temporary folder (``georank-bench-queries-<n>``, reused by later runs) with the same seed and
gallery size and ``max(--sizes) + 4`` query photos (the extra 4 warm up, so no timed photo is
seen twice); only its ``queries/`` folder is used, against the demo world's index and models:
distinct photos of the same sites, not copies.

    .venv/bin/python benchmarks/bench_geotag.py [--sizes 200 2000] [--per-partition 10] [--core-threads 1 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DAY = dt.date(2026, 11, 23)
WARMUP_PHOTOS = 4


# ----------------------------------------------------------------------------- memory sampling


class PeakRss:
    """Samples the RSS of this process's tree in a background thread; keeps peaks (MiB) per role."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_mib: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _roles(self) -> dict[str, list[float]]:
        ps = self._psutil
        out: dict[str, list[float]] = {"driver_python": [self._me.memory_info().rss / 2**20], "driver_jvm": [], "python_workers": []}
        for child in self._me.children(recursive=True):
            try:
                name = child.name()
                rss = child.memory_info().rss / 2**20
                parents = {p.name() for p in child.parents()}
            except (ps.NoSuchProcess, ps.AccessDenied):
                continue
            if name == "java":
                out["driver_jvm"].append(rss)
            elif "java" in parents:
                out["python_workers"].append(rss)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for role, values in self._roles().items():
                if not values:
                    continue
                for key, v in ((role, sum(values)), (f"{role}_largest", max(values))):
                    self.peak_mib[key] = max(self.peak_mib.get(key, 0.0), v)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- the two paths


def _config(work: Path, per_partition: int):  # type: ignore[no-untyped-def]
    from georank.config import load_config

    tables = work / "tables"
    return load_config(
        ROOT / "conf" / "local.yaml",
        [
            f"tables.results={tables / 'results'}",
            f"input.photos_per_partition={per_partition}",
            "demo.ensure=false",
            "spark.conf={'spark.sql.shuffle.partitions': '2', 'spark.default.parallelism': '2', "
            "'spark.driver.memory': '2g', 'spark.ui.enabled': 'false', 'spark.ui.showConsoleProgress': 'false', "
            "'spark.databricks.delta.snapshotPartitions': '2'}",
        ],
    )


def _photo_folder(work: Path, n: int, queries: Path, *, warmup: bool = False) -> Path:
    """A folder with links to the first ``n`` query photos of ``queries`` (the last ``n``
    for a warm-up, so that the timed photos are new to the process)."""
    src = sorted(queries.glob("*.jpg"))
    if len(src) < n:
        raise SystemExit(f"the demo world has {len(src)} query photos; asked for {n} (raise demo.query_photos)")
    folder = work / ("warmup" if warmup else f"photos-{n}")
    folder.mkdir()
    for p in (src[-n:] if warmup else src[:n]):
        (folder / p.name).symlink_to(p)
    return folder


def _core_run(cfg, folder: Path) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.compute as pc

    from georank import schema as S
    from georank.io import list_images, photo_id_from_uri
    from georank.pipeline import decode_photos, geotag_partition
    from georank.run_info import RunInfo

    uris = list_images(str(folder), cfg.s3)
    photos = pa.table(
        {"photo_id": [photo_id_from_uri(u) for u in uris], "uri": uris, "image_bytes": [None] * len(uris)},
        schema=S.PHOTOS,
    )
    run = RunInfo(run_id="bench-core", run_date=DAY)
    step = cfg.input.photos_per_partition
    predicted = errors = 0
    for start in range(0, photos.num_rows, step):
        result = geotag_partition(decode_photos(photos.slice(start, step), cfg), cfg, run)
        failed = int(pc.sum(pc.is_valid(result.column("error_stage"))).as_py() or 0)
        errors += failed
        predicted += result.num_rows - failed
    return {"read": photos.num_rows, "predicted": predicted, "errors": errors}


def _worker_threads(_: int) -> str:
    """Runs in a Python worker: the OpenMP thread count Spark gave it (OMP_NUM_THREADS)."""
    return os.environ.get("OMP_NUM_THREADS", "unset")


def child(kind: str, n: int, per_partition: int, queries: Path) -> dict[str, Any]:
    """One measurement in this (fresh) process: warm up, then time ``n`` photos."""
    logging_quiet()
    with tempfile.TemporaryDirectory(prefix=f"bench-geotag-{kind}-") as tmp:
        work = Path(tmp)
        cfg = _config(work, per_partition)
        warm, photos = _photo_folder(work, WARMUP_PHOTOS, queries, warmup=True), _photo_folder(work, n, queries)
        if kind == "core":
            _core_run(_config(work, 2), warm)
            with PeakRss() as mem:
                t0 = time.perf_counter()
                counts = _core_run(cfg, photos)
                seconds = time.perf_counter() - t0
            out: dict[str, Any] = {**counts, "compute_s": seconds}
        else:
            from georank.spark.geotag import run_geotag
            from georank.spark.session import get_spark

            spark = get_spark(cfg)
            # two partitions, so that both Python workers of local[2] load the models before timing
            run_geotag(spark, _config(work, 2), photos_uri=str(warm), run_date=DAY - dt.timedelta(days=1), run_id="bench-warm")
            with PeakRss() as mem:
                t0 = time.perf_counter()
                summary = run_geotag(spark, cfg, photos_uri=str(photos), run_date=DAY, run_id="bench-spark")
                seconds = time.perf_counter() - t0
            threads = spark.sparkContext.parallelize([0], 1).map(_worker_threads).collect()[0]
            spark.stop()
            out = {k: summary[k] for k in ("read", "predicted", "errors")}
            out["worker_omp_threads"] = threads
            out["compute_s"] = summary["seconds"]["compute"]
            out["stage_s"] = summary["seconds"]
    return {"kind": kind, "photos": n, "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "seconds": round(seconds, 2), "photos_per_s": round(n / seconds, 3),
            **out, "peak_rss_mib": {k: round(v) for k, v in sorted(mem.peak_mib.items())}}


def logging_quiet() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("GEORANK_SPARK_LOG_LEVEL", "ERROR")


def _queries_folder(n: int) -> Path:
    """The demo world's queries, or those of a larger demo world (same seed, gallery size and
    sites) with ``n + WARMUP_PHOTOS`` query photos in the temporary folder, built once."""
    from georank.config import load_config
    from georank.demo.world import build_demo_world

    demo = ROOT / "demo" / "queries"
    if n <= len(list(demo.glob("*.jpg"))):
        return demo
    cfg = load_config(ROOT / "conf" / "local.yaml")
    world = build_demo_world(
        Path(tempfile.gettempdir()) / f"georank-bench-queries-{n}", gallery_photos=cfg.demo.gallery_photos,
        query_photos=n + WARMUP_PHOTOS, seed=cfg.demo.seed,
    )
    return world.queries_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--per-partition", type=int, default=10)
    p.add_argument("--core-threads", type=int, nargs="+", default=[1, 2],
                   help="OMP_NUM_THREADS of the core loop, one run each (1: one Spark task slot; 2: local[2]'s cores)")
    p.add_argument("--child", nargs=3, metavar=("KIND", "N", "QUERIES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.per_partition, Path(args.child[2]))))
        return

    from georank.config import load_config
    from georank.demo.setup import ensure_demo

    ensure_demo(load_config(ROOT / "conf" / "local.yaml"))  # built once; reused afterwards
    queries = _queries_folder(max(args.sizes))
    print(f"# bench_geotag: query photos from {queries}; load average at the start: {os.getloadavg()}", flush=True)
    arms = [("core", t) for t in args.core_threads] + [("spark", 0)]
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    for n in args.sizes:
        for kind, threads in arms:
            cmd = [sys.executable, __file__, "--per-partition", str(args.per_partition), "--child", kind, str(n), str(queries)]
            env = dict(os.environ)
            if kind == "core":
                env["OMP_NUM_THREADS"] = str(threads)
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"{kind} with {n} photos failed (exit {proc.returncode})")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(kind, threads, n)] = r
            print(json.dumps(r), flush=True)

    print(f"\nload average at the end: {os.getloadavg()}  cores: {os.cpu_count()}")
    slots = 2  # local[2]: two tasks at once
    one, same = min(args.core_threads), max(args.core_threads)
    print(f"{'photos':>6} {'core ph/s':>16} {'spark ph/s':>11} {f'same cores (core {same} thr)':>26} "
          f"{f'per slot (core {one} thr)':>24} {'compute-only same cores':>24}")
    for n in args.sizes:
        c1, cs, s = results[("core", one, n)], results[("core", same, n)], results[("spark", 0, n)]
        cores = "/".join(f"{results[('core', t, n)]['photos_per_s']:.2f}" for t in args.core_threads)
        print(f"{n:>6} {cores:>16} {s['photos_per_s']:>11.3f} {s['photos_per_s'] / cs['photos_per_s']:>26.2f} "
              f"{s['photos_per_s'] / (slots * c1['photos_per_s']):>24.2f} "
              f"{(n / s['compute_s']) / cs['photos_per_s']:>24.2f}")
        st = s["stage_s"]
        print("       spark stages s: " + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
              + f"; outside compute: {s['seconds'] - st.get('compute', 0.0):.1f} s of {s['seconds']:.1f} s")
    print(f"same cores = spark / core at {same} threads (goal >= 0.85); per slot = spark / ({slots} x core at {one} thread)")
    lo, hi = min(args.sizes), max(args.sizes)
    for kind, threads in arms:
        a, b = results[(kind, threads, lo)], results[(kind, threads, hi)]
        print(f"{kind}{f' {threads} thr' if kind == 'core' else ''}: {hi}/{lo} photos -> time x{b['seconds'] / a['seconds']:.2f}; "
              f"peak RSS MiB {a['peak_rss_mib']} -> {b['peak_rss_mib']}")


if __name__ == "__main__":
    main()
