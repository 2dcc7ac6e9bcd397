#!/usr/bin/env bash
# GPU benchmark: bench/gpu.sh OUT_DIR
# Needs a CUDA GPU, no network, at most 8 minutes. Writes OUT_DIR/gpu.json (and OUT_DIR/datasets.txt) and prints
# gpu.json's table last.
# Photos and full-size random weights are generated under OUT_DIR/data on first use.
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUT_DIR}"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
mkdir -p "$out"
# Dataset shards against files on the GPU (bench/datasets.py; needs pyarrow, the `data` extra): first, and short,
# so that gpu.py's table still comes last.
if python3 -c "import pyarrow" 2>/dev/null; then
    timeout 70 python3 bench/datasets.py --device cuda --count 48 --repeat 2 | tee "$out/datasets.txt" || true
fi
exec timeout 400 python3 bench/gpu.py "$out" "${@:2}"
