#!/usr/bin/env bash
# Pre-flight before driving: bundle (full sha256, recorded for fast starts), L4T vs TensorRT, engines vs
# this TensorRT/GPU, OpenCV's GStreamer (the CSI camera needs it), camera rate, controller heartbeat.
#
#   bash jetson/check.sh BUNDLE [CAMERA] [PORT]      # defaults: csi, /dev/mobile-vla-motor
#
# Prints one line per check (OK / FAIL / SKIP) and exits 1 if any check failed.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUNDLE [CAMERA] [PORT]" >&2
  exit 2
fi
bundle=$1
camera=${2:-csi}
port=${3:-/dev/mobile-vla-motor}
# shellcheck source=engine_common.sh
source "$(dirname "$0")/engine_common.sh"
PYTHON=${PYTHON:-$(venv_python)}
FPS=${FPS:-30}
exec "$PYTHON" -m runtime.preflight --bundle "$bundle" --camera "$camera" --fps "$FPS" --serial "$port"
