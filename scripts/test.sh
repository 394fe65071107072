#!/usr/bin/env bash
# The test command (README "Start here"): sets up .venv and the jars if needed, then runs the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_config.py -k unknown).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh --s3a  # with the S3A jars: a test commits s3a:// tables from two drivers on a local S3 server
exec "$root/.venv/bin/python" -m pytest "$@"
