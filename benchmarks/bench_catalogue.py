"""A catalogue night's selection at scale (issue 23): seconds to select tonight's photos from a
synthetic catalogue of N rows against a results table of N rows, and the selection's Spark plan.

For each size N it writes, with Spark, into a scratch folder:

  catalogue  N rows: photo_id ``p<i>``, uri ``s3://bench/<i>.jpg``, lat/lon set for even i (half
             located), uploaded_at one second apart; Delta.
  results    N rows over 30 nights, partitioned by run_date: photo ``p<i + N/2>`` (half of them in
             the catalogue, located or not; half of the catalogue never predicted), the current
             versions for i % 3 != 0, older ones otherwise; an error row for i % 10 == 0
             (transient for i % 20 == 0); Delta.

then runs :func:`georank.spark.catalogue.select_night` (the counts per tier are its one collect)
with ``--max-photos`` and ``--regeotag older``, and forces the night's photos
write (the selection as the job runs it, short of reading images): the query execution is run
in place, so the plan printed after it is the final adaptive one. Seconds: the selection alone,
not the data generation. The plan printed is the executed one (adaptive); the benchmark lists its
``BroadcastExchange`` nodes (the night's ids at most the budget, never the catalogue or the
results) and says whether a collect (``CollectLimit``/driver-side ``TakeOrderedAndProject``)
appears. One run's numbers on this machine; never asserted anywhere.

    .venv/bin/python benchmarks/bench_catalogue.py [--sizes 1000000 10000000] [--max-photos 100000] \
        [--workdir /tmp/bench-catalogue] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from georank.catalogue import Versions  # noqa: E402
from georank.config import load_config  # noqa: E402

CURRENT = Versions("m" * 16, "a" * 16, "e" * 16, "i" * 16)
TONIGHT = dt.date(2027, 1, 1)


def _write_tables(spark, n: int, root: Path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    from georank import schema as S

    catalogue, results = str(root / "catalogue"), str(root / "results")
    ids = spark.range(n)
    located = (F.col("id") % 2) == 0
    ids.select(
        F.concat(F.lit("p"), F.col("id").cast("string")).alias("photo_id"),
        F.concat(F.lit("s3://bench/"), F.col("id").cast("string"), F.lit(".jpg")).alias("uri"),
        F.when(located, F.lit(45.0)).alias("lat_deg"),
        F.when(located, F.lit(7.0)).alias("lon_deg"),
        F.timestamp_seconds(F.lit(1_700_000_000) + F.col("id")).alias("uploaded_at"),
    ).write.format("delta").mode("overwrite").save(catalogue)
    current = (F.col("id") % 3) != 0
    err = (F.col("id") % 10) == 0
    pid = (F.col("id") + F.lit(n // 2)).cast("string")
    cols = {
        "photo_id": F.concat(F.lit("p"), pid),
        "uri": F.concat(F.lit("s3://bench/"), F.col("id").cast("string"), F.lit(".jpg")),
        "lat_deg": F.when(~err, F.lit(1.0)),
        "lon_deg": F.when(~err, F.lit(2.0)),
        "model_version": F.lit(CURRENT.model_version),
        "adapter_version": F.when(current, F.lit(CURRENT.adapter_version)).otherwise(F.lit("0" * 16)),
        "embed_version": F.lit(CURRENT.embed_version),
        "index_version": F.lit(CURRENT.index_version),
        "run_id": F.lit("bench"),
        "run_date": F.date_sub(F.lit(TONIGHT), (F.col("id") % 30 + 1).cast("int")),
        "error_stage": F.when(err, F.lit("read")),
        "error_reason": F.when(err & ((F.col("id") % 20) == 0), F.lit("could not reach S3 for s3://b/k: X"))
        .when(err, F.lit("object not found: s3://b/k")),
    }
    schema = S.spark_schema(S.RESULTS)
    ids.select(*[(cols[f.name] if f.name in cols else F.lit(None)).cast(f.dataType).alias(f.name) for f in schema]) \
        .write.format("delta").mode("overwrite").partitionBy("run_date").save(results)
    return catalogue, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--max-photos", type=int, default=100_000)
    ap.add_argument("--workdir", default="/tmp/bench-catalogue")
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--keep", action="store_true", help="keep the generated tables")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from georank.spark.catalogue import select_night
    from georank.spark.session import get_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    base = [
        "spark.master=local[2]",
        "spark.conf={'spark.ui.enabled': 'false', 'spark.sql.shuffle.partitions': '16', "
        f"'spark.driver.memory': '{args.driver_memory}', 'spark.ui.showConsoleProgress': 'false'}}",
        "input.catalogue.order_column=uploaded_at",
        "input.catalogue.regeotag=older",
        f"input.catalogue.max_photos_per_night={args.max_photos}",
    ]
    spark = get_spark(load_config(ROOT / "conf" / "local.yaml", base))
    rows = []
    for n in args.sizes:
        root = work / f"n{n}"
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.monotonic()
        catalogue, results = _write_tables(spark, n, root)
        gen_s = time.monotonic() - t0
        cfg = load_config(ROOT / "conf" / "local.yaml", base + [f"tables.results={results}"])
        t1 = time.monotonic()
        night = select_night(spark, cfg, catalogue_uri=catalogue, versions=CURRENT, run_date=TONIGHT)
        count_s = time.monotonic() - t1
        qe = night.photos._jdf.queryExecution()
        n_photos = int(qe.toRdd().count())  # runs the selection's plan in place: its final plan below
        select_s = time.monotonic() - t1
        plan = str(qe.executedPlan().toString())
        night.release()
        broadcasts = re.findall(r"BroadcastExchange[^\n]*", plan)
        row = {
            "rows": n, "generate_s": round(gen_s, 1), "counts_s": round(count_s, 1), "select_s": round(select_s, 1),
            "photos": n_photos, "backlog": night.backlog.as_dict(),
            "broadcast_exchanges": len(broadcasts),
            "collect_in_plan": bool(re.search(r"CollectLimit|CollectTail", plan)),
        }
        rows.append(row)
        print(json.dumps(row))
        print(f"--- executed plan of the night's photos at {n} rows ---\n{plan}")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"date": dt.date.today().isoformat(), "cores": os.cpu_count(), "results": rows}, indent=1))
    spark.stop()


if __name__ == "__main__":
    main()
