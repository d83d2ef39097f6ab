#!/usr/bin/env bash
# Set up a Jetson (JetPack 6) to run the policy. Safe to run again: each step checks before it acts.
#
#   bash jetson/setup.sh              # check versions, create the venv, install the runtime, add dialout
#   bash jetson/setup.sh --dry-run    # say what would be done
#
# The venv sees the system site-packages so JetPack's TensorRT and pycuda are used as installed
# (they are built for this board; pip wheels are not). Environment: VENV (default /opt/mobile-vla/venv
# or ./.venv-jetson when /opt is not writable), TEGRA_RELEASE (default /etc/nv_tegra_release), PYTHON.
set -euo pipefail

dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TEGRA_RELEASE=${TEGRA_RELEASE:-/etc/nv_tegra_release}
if [[ -z "${VENV:-}" ]]; then
  if [[ -w /opt || -d /opt/mobile-vla ]]; then VENV=/opt/mobile-vla/venv; else VENV=$here/.venv-jetson; fi
fi
problems=0

run() {
  if [[ $dry_run -eq 1 ]]; then echo "would run: $*"; else "$@"; fi
}

# 1. L4T / JetPack: JetPack 6 is L4T R36.
if [[ -f "$TEGRA_RELEASE" ]]; then
  release=$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' "$TEGRA_RELEASE")
  major=${release%%.*}
  if [[ -z "$release" ]]; then
    echo "WARN could not read the L4T version from $TEGRA_RELEASE"
  elif [[ $major -lt 36 ]]; then
    echo "FAIL L4T R$release is JetPack 5 or older; this kit is tested on JetPack 6 (L4T R36): reflash with SDK Manager"
    problems=$((problems + 1))
  else
    echo "OK   L4T R$release (JetPack 6)"
  fi
else
  echo "WARN $TEGRA_RELEASE not found: not a Jetson, continuing for a desktop GPU or a dry run"
fi

# 2. TensorRT from JetPack (python3-libnvinfer).
if trt=$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null); then
  echo "OK   TensorRT $trt"
else
  echo "WARN python3 cannot import tensorrt: sudo apt install nvidia-tensorrt python3-libnvinfer (JetPack); the ONNX Runtime backends still work"
fi

# 3. A venv with access to the system TensorRT and pycuda, and the runtime extra only.
if [[ -x "$VENV/bin/python" ]]; then
  echo "OK   venv $VENV exists"
else
  run "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if [[ $dry_run -eq 1 ]] || ! "$VENV/bin/python" -c 'import runtime.drive' 2>/dev/null; then
  run "$VENV/bin/python" -m pip install --upgrade pip
  run "$VENV/bin/python" -m pip install -e "${here}[runtime]"
else
  echo "OK   runtime installed in $VENV"
fi

# 4. Serial port access without root.
user=${SUDO_USER:-$(id -un)}
if id -nG "$user" | tr ' ' '\n' | grep -qx dialout; then
  echo "OK   $user is in dialout"
else
  run sudo usermod -aG dialout "$user"
  echo "NOTE log out and in again for the dialout group to apply"
fi

if [[ $problems -gt 0 ]]; then
  echo "setup finished with $problems problem(s) above"
  exit 1
fi
echo "setup done: $VENV/bin/python -m runtime.drive --help"
