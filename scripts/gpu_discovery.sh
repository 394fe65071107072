#!/usr/bin/env bash
# Spark GPU discovery script (pyspark's wheel ships none). Prints the GPUs of this host as
# Spark's ResourceInformation JSON: {"name": "gpu", "addresses": ["0", "1", ...]}.
# Set GEORANK_FAKE_GPUS=N to announce N fake GPUs (tests of the resource-profile path on CPU).
set -euo pipefail
if [ -n "${GEORANK_FAKE_GPUS:-}" ]; then
  addrs=$(seq -s '","' 0 $((GEORANK_FAKE_GPUS - 1)))
  echo "{\"name\": \"gpu\", \"addresses\": [\"$addrs\"]}"
  exit 0
fi
if ! command -v nvidia-smi >/dev/null; then
  echo '{"name": "gpu", "addresses": []}'
  exit 0
fi
addrs=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e ':a' -e 'N' -e '$!ba' -e 's/\n/","/g')
echo "{\"name\": \"gpu\", \"addresses\": [\"$addrs\"]}"
