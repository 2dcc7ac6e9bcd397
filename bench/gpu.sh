#!/usr/bin/env bash
# GPU benchmark: bench/gpu.sh OUT_DIR
# Needs a CUDA GPU, no network, at most 8 minutes. Writes OUT_DIR/gpu.json and prints its table last.
# Photos and full-size random weights are generated under OUT_DIR/data on first use.
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUT_DIR}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 470 python3 bench/gpu.py "$out" "${@:2}"
