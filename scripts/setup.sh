#!/usr/bin/env bash
# Set up everything georank needs on this machine, once and idempotently:
#   1. a virtual environment in .venv with the pinned package (pip install -e .[test])
#   2. the Delta Lake jars (Maven Central -> jars/delta), which spark.jars names
#   3. with --s3a: hadoop-aws and its AWS SDK bundle (~700 MB) -> jars/s3a
# Re-running is cheap: each step is skipped when its stamp matches its inputs.
# Used by ./spark-submit.sh and scripts/test.sh; run it by hand only to pre-fetch.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
want_s3a=0
for arg in "$@"; do
  case "$arg" in
    --s3a) want_s3a=1 ;;
    *) echo "setup.sh: unknown option '$arg' (valid: --s3a)" >&2; exit 2 ;;
  esac
done
log() { echo "[georank setup] $*" >&2; }

py="${GEORANK_PYTHON:-python3}"
venv="$root/.venv"
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "none"; }
if [ ! -x "$venv/bin/python" ]; then
  got="$(py_version "$py")"
  [ "$got" = 3.11 ] || { echo "setup.sh: expected Python 3.11 for .venv, got $got from '$py' (set GEORANK_PYTHON=python3.11)" >&2; exit 1; }
  log "creating virtual environment in .venv"
  "$py" -m venv "$venv"
fi
got="$(py_version "$venv/bin/python")"
[ "$got" = 3.11 ] || { echo "setup.sh: expected Python 3.11 in .venv, got $got: remove .venv and rerun with GEORANK_PYTHON=python3.11" >&2; exit 1; }
stamp="$venv/.georank-setup"
want="$(cat setup.py | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing georank and its pinned dependencies (first time: torch is a few GB)"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q -e ".[test]" >&2
  echo "$want" > "$stamp"
fi

fetch_jars() {  # fetch_jars POM DEST: resolve a pom's dependencies into DEST atomically
  local pom="$1" dest="$2" extra="${3:-}"
  local want_jars; want_jars="$(sha256sum "$pom" | cut -d' ' -f1)"
  if [ "$(cat "$dest/.complete" 2>/dev/null)" = "$want_jars" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "setup.sh: Maven (mvn) is needed to fetch the jars in $pom; install it (apt-get install maven)" >&2; exit 1; }
  log "resolving $(basename "$pom") from Maven Central into ${dest#$root/}"
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  # shellcheck disable=SC2086
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$tmp" $extra >&2
  echo "$want_jars" > "$tmp/.complete"
  rm -rf "$dest"; mv "$tmp" "$dest"
}
# Only Delta's own jars: Spark (the pyspark wheel) already provides Scala, Hadoop, Parquet,
# Jackson and the logging jars, and two copies of those on one classpath break at run time.
fetch_jars "$root/jars/pom-delta.xml" "$root/jars/delta" "-DincludeGroupIds=io.delta,io.unitycatalog"
if [ "$want_s3a" = 1 ]; then
  fetch_jars "$root/jars/pom-s3a.xml" "$root/jars/s3a" "-DincludeGroupIds=org.apache.hadoop,software.amazon.awssdk,software.amazon.s3.analyticsaccelerator -DexcludeArtifactIds=hadoop-client-api,hadoop-client-runtime"
fi
log "ready"
