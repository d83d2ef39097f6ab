#!/usr/bin/env bash
# Set up a Jetson (JetPack 6) to run the policy. Safe to run again: each step checks before it acts.
#
#   bash jetson/setup.sh              # check versions, create the venv, build pycuda, install the runtime
#   bash jetson/setup.sh --dry-run    # say what would be done
#
# JetPack ships TensorRT's Python bindings and an OpenCV built with GStreamer (the CSI camera needs it);
# the venv sees the system site-packages so both are used as installed. JetPack does not ship pycuda:
# pip builds it from source against /usr/local/cuda, which needs nvcc on PATH, CUDA_ROOT and the CUDA
# headers. The runtime extra pulls no OpenCV wheel on aarch64 (an environment marker in pyproject.toml):
# a registry wheel has no GStreamer and would shadow JetPack's OpenCV; one left by an older install is
# removed. Checks, through runtime.jetpack: the L4T revision against the TensorRT version (R36.3 ships
# 8.6, R36.4 ships 10.3; a mismatch is refused), then that `import pycuda.driver; import tensorrt` works
# in the venv and that cv2 there has GStreamer.
# A stock JetPack 6 (Ubuntu 22.04) lacks python3-venv (`python3 -m venv` stops without it): apt installs it
# with python3-dev and build-essential (pycuda's build).
# The boot service (jetson/mobile-vla-drive.service) drives as DRIVE_USER (default robot): a system account in
# the dialout, video and input groups (the motor port, the camera, a gamepad), created here when missing.
# Environment: VENV (default /opt/mobile-vla/venv, the one path the systemd unit and jetson/*.sh use;
# /opt/mobile-vla is made with sudo and given to the user running this), DRIVE_USER (default robot),
# TEGRA_RELEASE (default /etc/nv_tegra_release), PYTHON, CUDA_ROOT (default /usr/local/cuda).
set -euo pipefail

dry_run=0
[[ "${1:-}" == "--dry-run" ]] && dry_run=1
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
export TEGRA_RELEASE=${TEGRA_RELEASE:-/etc/nv_tegra_release}
export CUDA_ROOT=${CUDA_ROOT:-/usr/local/cuda}
VENV=${VENV:-/opt/mobile-vla/venv}
DRIVE_USER=${DRIVE_USER:-robot}
user=${SUDO_USER:-$(id -un)}
problems=0

run() {
  if [[ $dry_run -eq 1 ]]; then echo "would run: $*"; else "$@"; fi
}

# 1. L4T (JetPack 6 is R36) and its TensorRT: the stdlib-only check, with the system python.
if ! (cd "$here" && "$PYTHON" -m runtime.jetpack); then
  problems=$((problems + 1))
fi
if [[ $problems -gt 0 && $dry_run -eq 0 ]]; then
  echo "setup stopped: fix the line marked FAIL above first"
  exit 1
fi

# 2. What building pycuda needs: nvcc and the CUDA headers (JetPack's cuda-toolkit), a compiler, Python headers.
if [[ -x "$CUDA_ROOT/bin/nvcc" && -f "$CUDA_ROOT/include/cuda.h" ]]; then
  echo "OK   CUDA toolkit at $CUDA_ROOT"
else
  echo "WARN no nvcc/cuda.h under $CUDA_ROOT: sudo apt install nvidia-jetpack (or set CUDA_ROOT); pycuda cannot build without them"
fi
# python3-venv: a stock 22.04 has no ensurepip, so `python3 -m venv` stops without it.
if [[ $dry_run -eq 1 ]] || ! dpkg -s python3-venv python3-dev build-essential >/dev/null 2>&1; then
  run sudo apt-get install -y --no-install-recommends python3-venv python3-dev build-essential
fi

# 3. A venv with access to the system TensorRT and OpenCV, and the runtime extra only.
if [[ -x "$VENV/bin/python" ]]; then
  echo "OK   venv $VENV exists"
else
  parent=$(dirname "$VENV")
  if [[ ! -w "$parent" && ( -d "$parent" || ! -w "$(dirname "$parent")" ) ]]; then
    run sudo mkdir -p "$parent"
    run sudo chown "$user" "$parent"
  fi
  run "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if [[ $dry_run -eq 1 ]] || ! "$VENV/bin/python" -c 'import runtime.drive' 2>/dev/null; then
  run "$VENV/bin/python" -m pip install --upgrade pip
  run "$VENV/bin/python" -m pip install -e "${here}[runtime]"
else
  echo "OK   runtime installed in $VENV"
fi
# An OpenCV wheel from an older install (or pulled in by hand) shadows JetPack's GStreamer build.
for wheel in opencv-python opencv-python-headless opencv-contrib-python opencv-contrib-python-headless; do
  if [[ $dry_run -eq 0 ]] && "$VENV/bin/python" -m pip show "$wheel" >/dev/null 2>&1; then
    run "$VENV/bin/python" -m pip uninstall -y "$wheel"
  fi
done

# 4. pycuda, built from source against this CUDA (no wheel exists for the Orin).
if [[ $dry_run -eq 0 ]] && "$VENV/bin/python" -c 'import pycuda.driver' 2>/dev/null; then
  echo "OK   pycuda installed in $VENV"
else
  run env "CUDA_ROOT=$CUDA_ROOT" "PATH=$CUDA_ROOT/bin:$PATH" "CPATH=$CUDA_ROOT/include" \
    "LIBRARY_PATH=$CUDA_ROOT/lib64" "$VENV/bin/python" -m pip install --no-binary pycuda "pycuda>=2022.2"
fi

# 5. What the robot will run: the imports, and an OpenCV with GStreamer for --camera csi.
if [[ $dry_run -eq 1 ]]; then
  echo "would run: $VENV/bin/python -m runtime.jetpack --venv   # import pycuda.driver; import tensorrt; cv2 has GStreamer"
elif ! (cd "$here" && "$VENV/bin/python" -m runtime.jetpack --venv); then
  problems=$((problems + 1))
fi

# 6. Serial port access without root.
if id -nG "$user" | tr ' ' '\n' | grep -qx dialout; then
  echo "OK   $user is in dialout"
else
  run sudo usermod -aG dialout "$user"
  echo "NOTE log out and in again for the dialout group to apply"
fi

# 7. The account the boot service drives as (the unit's DRIVE_USER): made once, in the device groups.
if id -u "$DRIVE_USER" >/dev/null 2>&1; then
  echo "OK   drive account $DRIVE_USER exists (the unit's DRIVE_USER)"
else
  groups=()
  for group in dialout video input; do
    if getent group "$group" >/dev/null 2>&1; then groups+=("$group"); fi
  done
  run sudo useradd --system --create-home --shell /usr/sbin/nologin \
    --groups "$(IFS=,; echo "${groups[*]:-dialout}")" "$DRIVE_USER"
fi

if [[ $problems -gt 0 ]]; then
  echo "setup finished with $problems problem(s) above"
  exit 1
fi
echo "setup done: $VENV/bin/python -m runtime.drive --help"
