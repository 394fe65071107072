"""One driver of tests/reliability/test_two_drivers.py (run as its own Python process, so its own
JVM): commit a few RESULTS rows for one date to the s3a:// results table of ``--conf``, released
together with the other driver through a pair of files, and print one JSON line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--conf", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--run-date", required=True)
    p.add_argument("--ready", required=True, help="file this driver creates when its session is up")
    p.add_argument("--other", required=True, help="file of the other driver: both commit once both exist")
    p.add_argument("--after-lock", action="store_true",
                   help="commit only once the other driver holds the table's commit lock (its lock object exists)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # the lock says when it waits

    import pyarrow as pa

    from georank import schema as S
    from georank.config import load_config
    from georank.errors import GeorankError
    from georank.spark import commit
    from georank.spark.session import get_spark

    cfg = load_config(args.conf)
    spark = get_spark(cfg)
    day = dt.date.fromisoformat(args.run_date)
    rows = []
    for i in range(3):
        row = {name: None for name in S.RESULTS.names}
        row.update(photo_id=f"{args.run_id}-{i}", uri=f"/p/{i}.jpg", run_id=args.run_id, run_date=day, lat_deg=1.0,
                   lon_deg=2.0, confidence=0.5, spread_km=3.0, ranker_skipped=False, n_candidates=1, top_candidates=[])
        rows.append(row)
    df = spark.createDataFrame(pa.Table.from_pylist(rows, schema=S.RESULTS).to_pandas(), S.spark_schema(S.RESULTS))
    txn = commit.begin(spark, cfg, day)
    df.cache().count()  # everything ready but the commit itself
    Path(args.ready).touch()
    deadline = time.monotonic() + 300
    while not Path(args.other).exists():
        if time.monotonic() > deadline:
            print(json.dumps({"run_id": args.run_id, "status": "failed", "error": "the other driver never got ready"}))
            return 1
        time.sleep(0.05)
    if args.after_lock:  # the other driver is committing now: this one must wait for its lock
        from georank import storage
        from georank.storage.lock_stores import lock_key

        bucket, key = storage.split_s3(cfg.resolve(cfg.tables.results))
        lock_uri = f"s3://{bucket}/{lock_key(key)}"
        while not storage.exists(lock_uri, cfg.s3):
            if time.monotonic() > deadline:
                print(json.dumps({"run_id": args.run_id, "status": "failed", "error": "the other never took the lock"}))
                return 1
            time.sleep(0.02)
    try:
        version = commit.commit_results(df, cfg, run_id=args.run_id, run_date=day, txn=txn, mode="overwrite")
    except GeorankError as exc:
        print(json.dumps({"run_id": args.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"run_id": args.run_id, "status": "ok", "version": version}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
