#!/usr/bin/env bash
# One run that proves the TensorRT path on this GPU (desktop or Jetson) and writes every figure to one JSON.
#
#   bash jetson/gpu_check.sh --dry-run                # the install and run sequence for a fresh x86-64 machine
#   bash jetson/gpu_check.sh                          # tiny + real size (random weights): ~10 minutes
#   bash jetson/gpu_check.sh --sizes tiny --steps 20  # a few minutes; any benchmarks.gpu_check option works
#   OUT=figures.json bash jetson/gpu_check.sh         # where the JSON goes (default gpu-check-<host>-<date>.json)
#
# Exports tiny and the real size, builds their strongly typed engines (each build with its own time limit,
# --build-timeout), checks them against PyTorch (fp16 bounds), drives the simulated robot 50 steps with
# --backend trt, and times the control step. See benchmarks/gpu_check.py; it needs torch for the export and
# tensorrt + pycuda (the `jetson` extra on a desktop; JetPack + jetson/setup.sh on a Jetson).
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check-$(hostname)-$(date +%Y%m%d).json}
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--dry-run" ]]; then
  # The packages come from pyproject.toml (torch pinned as the Makefile pins it), so this is what installs.
  torch_pin=$(sed -n 's/.*pip install -q \(torch==[0-9.]*\).*/\1/p' Makefile | head -n 1)
  jetson_extra=$(sed -n 's/^jetson = \[\(.*\)\]/\1/p' pyproject.toml)
  cat <<PLAN
# A fresh x86-64 Linux machine with an NVIDIA GPU. Needs: the NVIDIA driver (nvidia-smi works), Python 3.10+,
# and the CUDA 12 toolkit (nvcc and cuda.h under /usr/local/cuda: pycuda is built from source against it).
# The jetson extra is ${jetson_extra}.
python3 -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --upgrade pip
.venv-gpu/bin/python -m pip install ${torch_pin}
CUDA_ROOT=/usr/local/cuda PATH=/usr/local/cuda/bin:\$PATH .venv-gpu/bin/python -m pip install -e '.[runtime,train,export,bench,jetson]'
.venv-gpu/bin/python -c 'import tensorrt; print("tensorrt", tensorrt.__version__)'
.venv-gpu/bin/python -m runtime.policy.backends.cuda_device
PYTHON=.venv-gpu/bin/python bash jetson/gpu_check.sh --sizes tiny --steps 20 --build-timeout 600
PYTHON=.venv-gpu/bin/python bash jetson/gpu_check.sh --build-timeout 1800
PLAN
  exit 0
fi
if command -v nvpmodel >/dev/null; then
  echo "power mode: $(nvpmodel -q 2>/dev/null | head -n 1) (the figures assume MAXN: sudo nvpmodel -m 0; sudo jetson_clocks)"
fi
exec "$PYTHON" -m benchmarks.gpu_check --out "$OUT" "$@"
