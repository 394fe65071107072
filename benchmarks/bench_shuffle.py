"""Bytes through the shuffle (issue 14 item 1): shuffle write bytes / input file bytes, before
and after, measured in one run on a Spark standalone cluster with fake GPUs.

The benchmark starts a master and two workers on 127.0.0.1 with pyspark's own ``spark-class``
(1 core, 1 GB and 1 fake GPU each: ``scripts/gpu_discovery.sh`` with ``GEORANK_FAKE_GPUS=1``, as
tests/job/test_cluster.py does), and drives ONE application from this process with the event
log on and ``spark.gpu.enabled=true``, so that the accelerator stage runs under its GPU
ResourceProfile. For each input kind,

  folder  the demo world's query photos as files (a PHOTOS row is an id and a path), and
  inline  the same photos as bytes in a Parquet table (the bytes themselves must travel),

it runs

  before  the stage shape the geotag job had before issue 14, built from the library's own
          functions: PHOTOS -> repartition -> decode_photos (a CPU stage: DECODED rows with raw
          RGB) -> repartition (the shuffle into the GPU stage) -> a GPU-profile stage that
          counts the rows it gets. The shuffle bytes are written by the map side of the shuffle,
          so what consumes them does not change them; running the models there would only
          cost time. (The old input-id check also shuffled whole rows, inline bytes included;
          it is not replayed here, so "before" is a lower bound for inline input.)
  after   ``georank.spark.geotag.run_geotag``, the job itself, end to end.

and the same for ``index.placement: sharded`` (``--placements``), with broadcast joins off
(``spark.sql.autoBroadcastJoinThreshold=-1``, a night whose tables are too big to broadcast;
with them on, the demo's small joins would hide what a real night shuffles):

  before  the sharded shape before issue 14 item 1's sharded part, from the library's functions:
          PHOTOS -> repartition -> decode_photos (CPU stage, DECODED rows cached) -> embed stage
          -> shard-wise search and exact merge -> the DECODED rows joined with the neighbours
          (the join shuffles the pixels) -> a GPU-profile stage that counts the rows it gets.
  after   ``run_geotag`` with ``index.placement=sharded``: the PHOTOS rows hash-partitioned by
          photo_id once and cached, each stage decoding its own photos.

Both sharded shapes also shuffle the search's own traffic, whatever the photos weigh: the
queries' embeddings to the shards and each shard's top-k ids and scores per photo (after: the
winners' places and image URIs are looked up after the merge, in the rank stage; before also
joins the merged neighbours, places and URIs included, with the pixels). ``files`` shows that
part alone, since its rows carry paths; each sharded run's bytes are printed by stage too, with
the operator scopes of each stage's RDDs (the stage with ``FlatMapGroupsInArrow``, the shard-wise
search, writes the ids and scores; the ``MapInArrow`` stage just before it, the embed stage's
output crossed with the shards, the queries' embeddings).

Shuffle write bytes are summed over the successful tasks (the event log's SparkListenerTaskEnd
"Shuffle Write Metrics" / "Shuffle Bytes Written") of the stages of the jobs whose
``spark.job.description`` names the measurement (the job sets its own for its compute:
``compute_description``). Input file bytes are the photos' file sizes. Goal: after <= 1.2.
One run's numbers; never asserted anywhere.

    .venv/bin/python benchmarks/bench_shuffle.py [--photos 200] [--kinds folder inline] \
        [--placements replicated sharded]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
DAY = dt.date(2026, 11, 23)
N_WORKERS = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def start_cluster(base: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    """A master and N_WORKERS workers (1 core, 1 GB, 1 fake GPU each); returns the master URL and
    the processes (each in its own process group, for :func:`stop_cluster`)."""
    import pyspark

    spark_home = Path(pyspark.__file__).resolve().parent
    spark_class = str(spark_home / "bin" / "spark-class")
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": LOOPBACK, "SPARK_DAEMON_MEMORY": "256m",
           "GEORANK_FAKE_GPUS": "1"}
    port, ui = _free_port(), _free_port()
    url = f"spark://{LOOPBACK}:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], env: dict[str, str], log: Path) -> None:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))

    start([spark_class, "org.apache.spark.deploy.master.Master", "--host", LOOPBACK, "--port", str(port),
           "--webui-port", str(ui)], env, base / "master.log")
    worker_env = {**env, "SPARK_WORKER_OPTS": " ".join([
        "-Dspark.worker.resource.gpu.amount=1",
        f"-Dspark.worker.resource.gpu.discoveryScript={ROOT / 'scripts' / 'gpu_discovery.sh'}",
    ])}
    for i in range(N_WORKERS):
        work = base / f"worker{i}"
        work.mkdir()
        start([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", LOOPBACK, "--port", str(_free_port()),
               "--webui-port", str(_free_port()), "--cores", "1", "--memory", "1g", "--work-dir", str(work), url],
              worker_env, base / f"worker{i}.log")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{ui}/json/", timeout=5) as resp:
                alive = [w for w in json.load(resp).get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) == N_WORKERS:
                return url, procs
        except OSError:
            pass
        time.sleep(1)
    stop_cluster(procs)
    raise RuntimeError(f"expected {N_WORKERS} alive workers within 180 s; logs in {base}")


def stop_cluster(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the processes this benchmark started, workers first, by their process groups."""
    for proc in reversed(procs):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in reversed(procs):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _stage_shuffles(event_log: Path) -> list[tuple[int, str | None, int, list[str]]]:
    """Every stage of an event log that ran a successful task: (stage id, its job's description
    or None, shuffle bytes written by its successful tasks, the operator scopes of its RDDs)."""
    stage_desc: dict[int, str] = {}
    scopes: dict[int, list[str]] = {}
    written: dict[int, int] = {}
    for line in event_log.read_text().splitlines():
        if not line.strip():
            continue
        e = json.loads(line)
        if e["Event"] == "SparkListenerJobStart":
            desc = (e.get("Properties") or {}).get("spark.job.description")
            for info in e.get("Stage Infos", []):
                if desc:
                    stage_desc[int(info["Stage ID"])] = desc
                names = [json.loads(r["Scope"])["name"] for r in info.get("RDD Info", []) if r.get("Scope")]
                scopes[int(info["Stage ID"])] = sorted(set(names))
        elif e["Event"] == "SparkListenerTaskEnd" and e.get("Task End Reason", {}).get("Reason") == "Success":
            n = ((e.get("Task Metrics") or {}).get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
            written[int(e["Stage ID"])] = written.get(int(e["Stage ID"]), 0) + int(n)
    return [(sid, stage_desc.get(sid), n, scopes.get(sid, [])) for sid, n in sorted(written.items())]


def shuffle_bytes_by_description(event_log: Path) -> dict[str, int]:
    """Shuffle bytes written by successful tasks, summed per job description, from an event log."""
    out: dict[str, int] = {}
    for _, desc, n, _ in _stage_shuffles(event_log):
        if desc is not None:
            out[desc] = out.get(desc, 0) + n
    return out


def shuffle_bytes_by_stage(event_log: Path, description: str) -> list[tuple[int, int, list[str]]]:
    """The stages of the jobs carrying ``description`` that wrote shuffle bytes: (stage id, bytes,
    the operator scopes of its RDDs, e.g. ``FlatMapGroupsInArrow`` for the shard-wise search, whose
    output is the neighbour lists' shuffle), from an event log. Shows each shuffle's share."""
    return [(sid, n, names) for sid, desc, n, names in _stage_shuffles(event_log) if n and desc == description]


def run_before_replicated(spark: Any, cfg: Any, photos_uri: str, description: str) -> int:
    """The pre-issue-14 stage shape (see the module docstring); returns the rows the GPU stage got."""
    import math

    import pyarrow as pa
    from pyspark.sql import functions as F

    from georank import schema as S
    from georank.pipeline import decode_photos
    from georank.spark.executors import gpu_profile, on_executors
    from georank.spark.photos import read_photos, split_bad_ids

    photos = read_photos(spark, photos_uri, cfg).withColumn("_row", F.monotonically_increasing_id()).cache()
    good, _ = split_bad_ids(photos, cfg)
    n_parts = max(1, math.ceil(good.count() / cfg.input.photos_per_partition))
    cfg_dict = cfg.model_dump()
    decoded = good.repartition(n_parts).mapInArrow(
        on_executors(cfg_dict, decode_photos, accelerator=False), S.spark_schema(S.DECODED)
    ).repartition(n_parts)

    def count_rows(table: pa.Table, c: Any) -> pa.Table:
        return pa.table({"rows": pa.array([table.num_rows], pa.int64())})

    counted = decoded.mapInArrow(
        on_executors(cfg_dict, count_rows, accelerator=True), "rows long", profile=gpu_profile(cfg)
    )
    spark.sparkContext.setJobDescription(description)
    try:
        total = counted.agg(F.sum("rows")).collect()[0][0]
    finally:
        spark.sparkContext.setJobDescription(None)
        photos.unpersist()
    return int(total or 0)


def run_before_sharded(spark: Any, cfg: Any, photos_uri: str, description: str) -> int:
    """The sharded placement's shape before its pixels left the shuffles (see the module
    docstring); returns the rows the last GPU stage got."""
    import math

    import pyarrow as pa
    from pyspark.sql import functions as F

    from georank import schema as S
    from georank.index import read_manifest
    from georank.pipeline import decode_photos
    from georank.run_info import RunInfo
    from georank.spark.executors import gpu_profile, on_executors
    from georank.spark.photos import read_photos, split_bad_ids
    from georank.spark.retrieve import retrieve_neighbours
    from georank.spark.sharded import embed_step as _embed_step

    manifest = read_manifest(cfg.resolve(cfg.index.uri), cfg.s3)
    run = RunInfo(run_id="before", run_date=DAY, index_manifest=manifest.to_dict())
    cfg_dict, profile = cfg.model_dump(), gpu_profile(cfg)

    def count_rows(table: pa.Table, c: Any) -> pa.Table:
        return pa.table({"rows": pa.array([table.num_rows], pa.int64())})

    photos = read_photos(spark, photos_uri, cfg).withColumn("_row", F.monotonically_increasing_id()).cache()
    good, _ = split_bad_ids(photos, cfg)
    n_parts = max(1, math.ceil(good.count() / cfg.input.photos_per_partition))
    spark.sparkContext.setJobDescription(description)  # from here on, as run_geotag's compute
    try:
        decoded = good.repartition(n_parts).mapInArrow(
            on_executors(cfg_dict, decode_photos, accelerator=False), S.spark_schema(S.DECODED)
        ).cache()
        ok = decoded.where(F.col("error_stage").isNull())
        # the embed step takes DECODED tables: without prepare=decode_ahead it is the old embed stage
        embedded = ok.mapInArrow(
            on_executors(cfg_dict, _embed_step(run), accelerator=True), S.spark_schema(S.EMBEDDED), profile=profile
        ).cache()
        embedded.count()
        embedded_ok = embedded.where(F.col("error_stage").isNull())
        neighbours = retrieve_neighbours(embedded_ok.select("photo_id", "embedding"), cfg=cfg, manifest=manifest)
        joined = (
            ok.join(neighbours, "photo_id")
            .join(embedded_ok.select("photo_id", "embed_version"), "photo_id")
            .select(*S.DECODED.names, *[n for n in S.NEIGHBOURS.names if n != "photo_id"], "embed_version")
        )
        counted = joined.mapInArrow(on_executors(cfg_dict, count_rows, accelerator=True), "rows long", profile=profile)
        total = counted.agg(F.sum("rows")).collect()[0][0]
        for frame in (embedded, decoded):
            frame.unpersist()
    finally:
        spark.sparkContext.setJobDescription(None)
        photos.unpersist()
    return int(total or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=200, help="demo query photos to use (the first N by name)")
    ap.add_argument("--kinds", nargs="+", default=["folder", "inline"], choices=["folder", "inline"])
    ap.add_argument("--per-partition", type=int, default=32, help="input.photos_per_partition")
    ap.add_argument("--placements", nargs="+", default=["replicated", "sharded"], choices=["replicated", "sharded"],
                    help="index.placement values to measure (sharded: with broadcast joins off)")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from georank.config import load_config
    from georank.spark.geotag import compute_description, run_geotag
    from georank.spark.session import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench-shuffle-"))
    events = work / "events"
    events.mkdir()
    files = sorted((ROOT / "demo" / "queries").glob("*.jpg"))[: args.photos]
    if not files:
        sys.exit("no demo/queries: build the demo world first (./spark-submit.sh jobs/geotag.py --conf conf/local.yaml)")
    folder = work / "queries"
    folder.mkdir()
    for p in files:
        shutil.copy(p, folder / p.name)
    file_bytes = sum(p.stat().st_size for p in files)
    table = work / "photos.parquet"
    pq.write_table(pa.table({"photo_id": [p.stem for p in files], "uri": [None] * len(files),
                             "image_bytes": [p.read_bytes() for p in files]}), table)
    inputs = {"folder": str(folder), "inline": str(table)}

    os.environ["SPARK_LOCAL_IP"] = LOOPBACK
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    url, procs = start_cluster(work)
    results: dict[str, dict[str, Any]] = {}
    try:
        spark_conf = {
            "spark.executor.cores": "1", "spark.executor.memory": "640m", "spark.driver.host": LOOPBACK,
            "spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{events}",
            "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false",
            "spark.ui.enabled": "false", "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.shuffle.partitions": "2", "spark.ui.showConsoleProgress": "false",
        }
        cfg = load_config(ROOT / "conf" / "local.yaml", [
            f"spark.master={url}",
            f"spark.conf={spark_conf!r}",
            "spark.gpu.enabled=true",
            f"input.photos_per_partition={args.per_partition}",
            f"tables.results={work / 'tables' / 'results'}",
            f"tables.gallery_embeddings={work / 'tables' / 'gallery_embeddings'}",
            f"tables.gallery_errors={work / 'tables' / 'gallery_errors'}",
        ])
        spark = get_spark(cfg)
        try:
            for placement in args.placements:
                run_cfg = cfg.model_copy(update={"index": cfg.index.model_copy(update={"placement": placement})})
                shape = run_before_replicated if placement == "replicated" else run_before_sharded
                # sharded: joins too big to broadcast, as on a real night (see the module docstring)
                spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1" if placement == "sharded" else "10MB")
                for kind in args.kinds:
                    t0 = time.monotonic()
                    rows = shape(spark, run_cfg, inputs[kind], f"bench before {placement} {kind}")
                    t1 = time.monotonic()
                    summary = run_geotag(spark, run_cfg, photos_uri=inputs[kind], run_date=DAY,
                                         run_id=f"after-{placement}-{kind}")
                    results[f"{placement} {kind}"] = {
                        "before_rows": rows, "before_s": round(t1 - t0, 1), "after_s": round(time.monotonic() - t1, 1),
                        "after_summary": {k: summary[k] for k in ("read", "predicted", "errors", "partitions")},
                    }
        finally:
            spark.stop()
    finally:
        stop_cluster(procs)

    logs = [p for p in events.iterdir() if p.is_file()]
    by_desc = shuffle_bytes_by_description(logs[0])
    print(f"{len(files)} demo photos, {file_bytes} file bytes ({file_bytes / len(files) / 1024:.1f} KiB each); "
          f"standalone cluster: {N_WORKERS} workers x 1 core x 1 fake GPU; load average {os.getloadavg()[0]:.1f}")
    print(f"{'placement input':19} {'before bytes':>14} {'ratio':>7} {'after bytes':>12} {'ratio':>7}   after run")
    for key, r in results.items():
        placement, kind = key.split()
        before = by_desc.get(f"bench before {placement} {kind}", 0)
        after = by_desc.get(compute_description(f"after-{placement}-{kind}"), 0)
        print(f"{key:19} {before:>14} {before / file_bytes:>7.3f} {after:>12} {after / file_bytes:>7.3f}   "
              f"{r['after_summary']} in {r['after_s']} s (before shape: {r['before_s']} s, {r['before_rows']} rows)")
    for key in results:  # each shuffle's share of the sharded runs (which stage wrote what)
        placement, kind = key.split()
        if placement == "sharded":
            print(f"  {key} after, by stage:")
            for sid, n, names in shuffle_bytes_by_stage(logs[0], compute_description(f"after-{placement}-{kind}")):
                print(f"    stage {sid:3d} {n:>10} B {n / file_bytes:7.3f}  {', '.join(names)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
