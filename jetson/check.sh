#!/usr/bin/env bash
# Pre-flight before driving: bundle (full sha256, recorded for fast starts), L4T vs TensorRT, engines vs
# this TensorRT/GPU, OpenCV's GStreamer (the CSI camera needs it), camera rate, the motor side.
#
#   bash jetson/check.sh BUNDLE [CAMERA] [PORT]                  # defaults: csi, /dev/mobile-vla-motor
#   bash jetson/check.sh BUNDLE CAMERA -- MOTOR FLAGS...         # the drive's own motor flags, e.g.
#   bash jetson/check.sh bundle/ ros2:camera/image_raw -- --motor ros2 --cmd-vel-stamped
#   bash jetson/check.sh bundle/ csi -- --serial /dev/mobile-vla-motor --wheels mecanum --max-speed 0.3 0.3 0.8
#
# Without PORT or flags, MOTOR_ARGS from the environment (the systemd unit's setting) is used when set.
# Prints one line per check (OK / FAIL / SKIP) and exits 1 if any check failed.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUNDLE [CAMERA] [PORT | -- MOTOR FLAGS...]" >&2
  exit 2
fi
bundle=$1
camera=${2:-csi}
shift $(( $# < 2 ? $# : 2 ))
if [[ ${1:-} == "--" ]]; then
  shift
  motor=("$@")
elif [[ $# -ge 1 ]]; then
  motor=(--serial "$1")
elif [[ -n ${MOTOR_ARGS:-} ]]; then
  read -r -a motor <<< "$MOTOR_ARGS"
else
  motor=(--serial /dev/mobile-vla-motor)
fi
# shellcheck source=engine_common.sh
source "$(dirname "$0")/engine_common.sh"
PYTHON=${PYTHON:-$(venv_python)}
FPS=${FPS:-30}
exec "$PYTHON" -m runtime.preflight --bundle "$bundle" --camera "$camera" --fps "$FPS" "${motor[@]}"
