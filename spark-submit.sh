#!/usr/bin/env bash
# The one way to launch a georank job, locally or on a cluster.
#
#   ./spark-submit.sh [spark-submit options] jobs/NAME.py --conf conf/local.yaml [--set k=v ...] [job args]
#
# Options before the job file (--master, --deploy-mode, --num-executors, --conf spark.x=y, ...)
# go to pyspark's own spark-submit; everything after it goes to the job. The script
#   1. sets up .venv and the jars if needed (scripts/setup.sh; skip with GEORANK_SKIP_SETUP=1),
#   2. checks the job exists and the config (with its --set overrides) is valid, in a second,
#   3. runs pyspark's spark-submit with the Delta jars, the package zipped for executors, and
#      the venv's python for driver and executors (override with GEORANK_EXECUTOR_PYTHON).
# The job prints one line of JSON (its summary) on stdout and exits non-zero on failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "spark-submit.sh: $*" >&2; exit 2; }

submit_opts=()
job=""
while [ $# -gt 0 ]; do
  case "$1" in
    *.py) job="$1"; shift; break ;;
    *) submit_opts+=("$1"); shift ;;
  esac
done
jobs_list="$(cd "$root/jobs" 2>/dev/null && ls -1 *.py 2>/dev/null | grep -v '^_' | sed 's/\.py$//' | paste -sd, - || true)"
[ -n "$job" ] || die "no job given; usage: ./spark-submit.sh [spark options] jobs/NAME.py --conf conf/local.yaml [--set k=v] [args] (jobs: $jobs_list)"
job_path="$job"; [ -f "$job_path" ] || job_path="$root/$job"
[ -f "$job_path" ] || die "no such job: $job (expected a file under jobs/; jobs: $jobs_list)"
job_args=("$@")

if [ "${GEORANK_SKIP_SETUP:-0}" != 1 ]; then
  s3a=()
  # S3A jars (~700 MB) only when a table in the config is s3a://
  for a in "${job_args[@]}"; do case "$a" in *s3a://*) s3a=(--s3a) ;; esac; done
  if [ ${#s3a[@]} -eq 0 ]; then
    conf_file=""; prev=""
    for a in "${job_args[@]}"; do [ "$prev" = "--conf" ] && conf_file="$a"; prev="$a"; done
    if [ -n "$conf_file" ] && [ -f "$conf_file" ] && grep -q 's3a://' "$conf_file"; then s3a=(--s3a); fi
  fi
  "$root/scripts/setup.sh" "${s3a[@]}" || die "setup failed (see the messages above)"
fi
py="$root/.venv/bin/python"
[ -x "$py" ] || die "no virtual environment at .venv: run ./scripts/setup.sh"

# Fail fast on a bad config or --set, before a JVM starts.
"$py" -m georank.cli --job "$(basename "$job" .py)" "${job_args[@]}" || exit 2

spark_home="$("$py" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
jars="$(ls -1 "$root"/jars/delta/*.jar 2>/dev/null | paste -sd, -)"
[ -n "$jars" ] || die "Delta jars not found in jars/delta: run ./scripts/setup.sh"
if [ -d "$root/jars/s3a" ]; then jars="$jars,$(ls -1 "$root"/jars/s3a/*.jar | paste -sd, -)"; fi

# The package, zipped for executors that do not share this venv (a real cluster). Named by the
# hash of its sources and written under a name of its own first, so that launches at the same
# time (a backfill beside the nightly run) never race on one file.
mkdir -p "$root/build"
pyfiles="$("$py" - "$root" <<'PY'
import hashlib, os, pathlib, sys, time, zipfile
root = pathlib.Path(sys.argv[1])
files = sorted((root / "georank").rglob("*.py"))
h = hashlib.sha256()
for p in files:
    h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
out = root / "build" / f"georank-{h.hexdigest()[:16]}.zip"
if not out.exists():
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for p in files:
            z.write(p, p.relative_to(root).as_posix())
    tmp.replace(out)
for old in (root / "build").glob("georank-*.zip"):  # zips of older sources, unused for a week
    if old != out and time.time() - old.stat().st_mtime > 7 * 86400:
        old.unlink(missing_ok=True)
print(out)
PY
)"

# No --master given: the config's spark.master (spark-submit would otherwise impose local[*],
# and the job honours whatever master spark-submit sets).
master_given=0
for o in "${submit_opts[@]}"; do case "$o" in --master|--master=*|spark.master=*) master_given=1 ;; esac; done
if [ "$master_given" = 0 ]; then
  cfg_master="$("$py" - "${job_args[@]}" <<'PY'
import argparse, sys
from georank.config import load_config
p = argparse.ArgumentParser(add_help=False)
p.add_argument("--conf")
p.add_argument("--set", action="append", default=[])
a, _ = p.parse_known_args(sys.argv[1:])
print(load_config(a.conf, a.set).spark.master)
PY
)" || exit 2
  submit_opts=(--master "$cfg_master" "${submit_opts[@]}")
fi

executor_py="${GEORANK_EXECUTOR_PYTHON:-$py}"
export PYSPARK_PYTHON="$executor_py" PYSPARK_DRIVER_PYTHON="$py"
cd "$root"
exec "$spark_home/bin/spark-submit" \
  --jars "$jars" \
  --py-files "$pyfiles" \
  --conf "spark.pyspark.python=$executor_py" \
  --conf "spark.pyspark.driver.python=$py" \
  --conf "spark.python.worker.reuse=true" \
  --driver-java-options "-Dlog4j2.level=warn" \
  "${submit_opts[@]}" \
  "$job_path" "${job_args[@]}"
