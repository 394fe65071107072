#!/usr/bin/env bash
# Nightly on a catalogue, at the demo's scale (docs/tables.md "Nightly on a catalogue"): a Delta catalogue
# of the demo world's 200 query photos, 20 of them already located, then three nights with a
# budget of 120 photos, a publish, a second publish, and a night with a new adapter and
# --regeotag older. Every job's JSON summary line is printed, then the catalogue's and tables' state.
#   ./scripts/demo_catalogue.sh            (builds the demo world first if it is missing, ~6 min)
# Writes only under warehouse/catalogue_demo/ (removed and made anew on each call).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
py="$root/.venv/bin/python"
out="warehouse/catalogue_demo"
rm -rf "$out"
mkdir -p "$out"

"$py" - "$out" <<'EOF'
import datetime as dt
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

from georank.config import load_config
from georank.demo.setup import ensure_demo

cfg = load_config("conf/local.yaml")
ensure_demo(cfg)
root = Path(cfg.resolve(cfg.demo.root))
truth = pq.read_table(root / "queries_truth.parquet").to_pylist()
truth.sort(key=lambda r: r["photo_id"])
t0 = dt.datetime(2026, 1, 1)
located = {r["photo_id"] for r in truth[::10]}  # every tenth photo: 20 of 200 already located
versions = pa.struct([(n, pa.string()) for n in ("model_version", "adapter_version", "embed_version", "index_version")])
rows = {
    "photo_id": [r["photo_id"] for r in truth],
    "uri": [str(root / "queries" / f"{r['photo_id']}.jpg") for r in truth],
    "lat_deg": [r["lat_deg"] if r["photo_id"] in located else None for r in truth],
    "lon_deg": [r["lon_deg"] if r["photo_id"] in located else None for r in truth],
    "uploaded_at": [t0 + dt.timedelta(hours=i) for i in range(len(truth))],
    "location_source": ["camera" if r["photo_id"] in located else None for r in truth],
    "location_confidence": [None] * len(truth),
    "location_spread_km": [None] * len(truth),
    "location_run_id": [None] * len(truth),
    "location_run_date": [None] * len(truth),
    "location_versions": [None] * len(truth),
}
schema = pa.schema([("photo_id", pa.string()), ("uri", pa.string()), ("lat_deg", pa.float64()),
                    ("lon_deg", pa.float64()), ("uploaded_at", pa.timestamp("us")), ("location_source", pa.string()),
                    ("location_confidence", pa.float64()), ("location_spread_km", pa.float64()),
                    ("location_run_id", pa.string()), ("location_run_date", pa.date32()),
                    ("location_versions", versions)])
write_deltalake(f"{sys.argv[1]}/catalogue", pa.table(rows, schema=schema))
print(f"catalogue: {len(truth)} photos, {len(located)} located", file=sys.stderr)
EOF

sets=(--set "tables.results=$out/results" --set "tables.runs=$out/runs" --set "input.catalogue.order_column=uploaded_at")
for day in 2026-12-01 2026-12-02 2026-12-03; do
  ./spark-submit.sh jobs/geotag.py --conf conf/local.yaml --run-date "$day" --catalogue "$out/catalogue" \
    --max-photos 120 "${sets[@]}" | tail -n 1
done
./spark-submit.sh jobs/publish.py --conf conf/local.yaml --catalogue "$out/catalogue" --min-confidence 0.5 "${sets[@]}" | tail -n 1
./spark-submit.sh jobs/publish.py --conf conf/local.yaml --catalogue "$out/catalogue" --min-confidence 0.5 "${sets[@]}" | tail -n 1
# A new adapter (the demo's untrained one stands in for it): every photo georank predicted is taken
# again with --regeotag older, within the budget; its older rows stay in the results table.
./spark-submit.sh jobs/geotag.py --conf conf/local.yaml --run-date 2026-12-04 --catalogue "$out/catalogue" \
  --max-photos 200 --regeotag older --set rank.adapter_uri=demo/models/ranker/adapter_untrained "${sets[@]}" | tail -n 1
"$py" - "$out" <<'EOF'
import sys

from deltalake import DeltaTable

from georank.results import read_latest

out = sys.argv[1]
cat = DeltaTable(f"{out}/catalogue")
rows = cat.to_pyarrow_table().to_pylist()
latest = read_latest(f"{out}/results")
print({"catalogue_versions": [h["version"] for h in cat.history()],
       "located_by_camera": sum(r["location_source"] == "camera" for r in rows),
       "located_by_georank": sum(r["location_source"] == "georank" for r in rows),
       "latest_predictions": latest.num_rows,
       "latest_by_run_date": sorted({str(d) for d in latest.column("run_date").to_pylist()}),
       "result_rows_by_run_date": {str(k): v for k, v in sorted(__import__("collections").Counter(
           DeltaTable(f"{out}/results").to_pyarrow_table().column("run_date").to_pylist()).items())},
       "runs": [(r["job"], r["status"], r["read"]) for r in DeltaTable(f"{out}/runs").to_pyarrow_table().to_pylist()]})
sys.stdout.flush()
import os  # noqa: E402

os._exit(0)  # this read-only check's interpreter teardown aborted once here (deltalake's threads); its output is complete
EOF
