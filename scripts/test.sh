#!/usr/bin/env bash
# The README's test command: sets up .venv and the jars if needed, then runs the test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/test_config.py -k unknown).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
exec "$root/.venv/bin/python" -m pytest "$@"
