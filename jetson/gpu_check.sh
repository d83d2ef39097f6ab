#!/usr/bin/env bash
# One run that proves the TensorRT path on this GPU (desktop or Jetson) and writes every figure to one JSON.
#
#   bash jetson/gpu_check.sh --dry-run                # the install and run sequence for this machine (nothing runs)
#   bash jetson/gpu_check.sh                          # tiny, plus the real size where memory allows (>= 20 GB)
#   bash jetson/gpu_check.sh --sizes tiny --steps 20  # a few minutes; any benchmarks.gpu_check option works
#   bash jetson/gpu_check.sh --bundle tiny-bundle/    # a Jetson: a bundle exported on another machine
#   OUT=figures.json bash jetson/gpu_check.sh         # where the JSON goes (default gpu-check-<host>-<date>.json)
#
# Exports tiny and the real size, builds their strongly typed engines (each build with its own time limit,
# --build-timeout), checks them against PyTorch (fp16 bounds), drives the simulated robot 50 steps with
# --backend trt, and times the control step. See benchmarks/gpu_check.py; it needs torch for the export and
# tensorrt + pycuda (the `jetson` extra on a desktop; JetPack + jetson/setup.sh on a Jetson).
#
# torch, one build per machine (--dry-run prints it):
# - a desktop: the release CI tests (the Makefile's TORCH_VERSION) built for the driver's CUDA major, from
#   PyTorch's index for it. NVIDIA's minor-version compatibility lets a build for any CUDA 12.x run on every
#   driver of the 12 family (>= 525), so a CUDA 12.4 driver takes cu126; CUDA 13 builds need a 13.x driver
#   (>= 580). The default registry's torch is a CUDA 13 build: a 12.x driver cannot run it. DRIVER_CUDA=12.4
#   stands for what nvidia-smi reports (its "CUDA Version").
# - a Jetson: JetPack ships no torch, the registry's aarch64 torch is a CUDA 13 build the Orin cannot use, and
#   the export stack needs Python >= 3.11 (JetPack 6 has 3.10): nothing is trained or exported there. The check
#   runs on a bundle exported on another machine (--bundle): engine build, drive and latency, no PyTorch.
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check-$(hostname)-$(date +%Y%m%d).json}
cd "$(dirname "$0")/.."
TEGRA_RELEASE=${TEGRA_RELEASE:-/etc/nv_tegra_release}

# The CUDA major of PyTorch's index for a driver's CUDA version ("12.4" -> cu126), or nothing for too old a driver.
torch_index_for() {
  case ${1%%.*} in
    12) echo https://download.pytorch.org/whl/cu126 ;;
    13|14|15) echo https://download.pytorch.org/whl/cu130 ;;
    *) return 1 ;;
  esac
}

if [[ "${1:-}" == "--dry-run" ]]; then
  if [[ -f "$TEGRA_RELEASE" ]]; then
    cat <<PLAN
# A Jetson ($(head -n 1 "$TEGRA_RELEASE")): no torch, no export here (JetPack ships no torch; the export stack needs
# Python >= 3.11). Export on another machine, copy the bundle, then check the engines, the drive and the latency:
#   python -m export.to_onnx --preset tiny --out tiny-bundle/      # on the other machine
bash jetson/setup.sh
PYTHON=/opt/mobile-vla/venv/bin/python bash jetson/gpu_check.sh --bundle tiny-bundle/ --steps 20
PLAN
    exit 0
  fi
  torch_version=$(sed -n 's/^TORCH_VERSION := \([0-9.]*\)$/\1/p' Makefile)
  jetson_extra=$(sed -n 's/^jetson = \[\(.*\)\]/\1/p' pyproject.toml)
  driver=${DRIVER_CUDA:-$({ nvidia-smi 2>/dev/null || true; } | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1)}
  if [[ -z "$driver" ]]; then
    driver=12.0
    note="no NVIDIA driver found (nvidia-smi): the line below is for a CUDA 12.x driver; for a 13.x one take cu130"
  else
    note="the driver runs CUDA $driver"
  fi
  if ! index=$(torch_index_for "$driver"); then
    echo "error: the driver runs CUDA $driver; torch $torch_version needs a CUDA 12.x (>= 525) or 13.x (>= 580) driver" >&2
    exit 1
  fi
  cat <<PLAN
# A fresh x86-64 Linux machine with an NVIDIA GPU. Needs: the NVIDIA driver (nvidia-smi works), Python 3.11+,
# and the CUDA 12 toolkit (nvcc and cuda.h under /usr/local/cuda: pycuda is built from source against it).
# torch: $note, so torch $torch_version from ${index##*/} (any CUDA 12.x build runs on a 12.x driver).
# The jetson extra is ${jetson_extra}.
python3 -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --upgrade pip
.venv-gpu/bin/python -m pip install torch==${torch_version} --index-url ${index}
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
