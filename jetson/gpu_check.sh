#!/usr/bin/env bash
# One run that proves the TensorRT path on this GPU (desktop or Jetson) and writes every figure to one JSON.
#
#   bash jetson/gpu_check.sh                          # tiny + real size (random weights): ~10 minutes
#   bash jetson/gpu_check.sh --sizes tiny --steps 20  # a few minutes; any benchmarks.gpu_check option works
#   OUT=figures.json bash jetson/gpu_check.sh         # where the JSON goes (default gpu-check-<host>-<date>.json)
#
# Builds engines for tiny and the real size, checks them against PyTorch (fp16 bounds), drives the
# simulated robot 50 steps with --backend trt with and without --cuda-graph, and times the control step.
# See benchmarks/gpu_check.py; needs torch for the export (pip install -e .[train,export,runtime,bench]).
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check-$(hostname)-$(date +%Y%m%d).json}
cd "$(dirname "$0")/.."
if command -v nvpmodel >/dev/null; then
  echo "power mode: $(nvpmodel -q 2>/dev/null | head -n 1) (the figures assume MAXN: sudo nvpmodel -m 0; sudo jetson_clocks)"
fi
exec "$PYTHON" -m benchmarks.gpu_check --out "$OUT" "$@"
