#!/usr/bin/env bash
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source this file
# Shared by build_engines.sh and bench.sh (sourced, not run): arguments, tool paths, the head's shape.
# After `parse_engine_args "$@"`: dry_run (0/1), bundle, PYTHON, TRTEXEC.
# After `read_head_shape`: head_input, hidden, window (the action head's dynamic-L profile).
# After `read_build_inputs`: build_input[GRAPH] = the ONNX file trtexec parses (fp16 weights where exported).
# Only runtime/ is needed (python -m runtime.engines): a robot install has no export/ or train/.

# The Python setup.sh installed into (pycuda is built only there), unless PYTHON says otherwise.
venv_python() {
  local v
  for v in "${VENV:-}" /opt/mobile-vla/venv; do
    if [[ -n "$v" && -x "$v/bin/python" ]]; then echo "$v/bin/python"; return; fi
  done
  echo python3
}

parse_engine_args() {
  dry_run=0
  if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
  if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--dry-run] BUNDLE" >&2
    exit 2
  fi
  bundle=$1
  PYTHON=${PYTHON:-$(venv_python)}
  TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}  # JetPack puts it here
}

read_head_shape() {
  read -r head_input hidden window < <("$PYTHON" -m runtime.engines "$bundle" --head-shape) || true
  if [[ -z "${window:-}" ]]; then
    echo "error: cannot read $bundle/bundle.json with $PYTHON -m runtime.engines (is the runtime installed? bash jetson/setup.sh)" >&2
    exit 1
  fi
}

read_build_inputs() {
  declare -gA build_input=()
  local graph file
  while read -r graph file; do
    build_input[$graph]=$file
  done < <("$PYTHON" -m runtime.engines "$bundle" --build-inputs)
  if [[ ${#build_input[@]} -ne 3 ]]; then
    echo "error: cannot read the engine build inputs from $bundle/bundle.json" >&2
    exit 1
  fi
}
