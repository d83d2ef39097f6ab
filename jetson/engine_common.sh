#!/usr/bin/env bash
# shellcheck disable=SC2034  # the variables set here are read by the scripts that source this file
# Shared by build_engines.sh and bench.sh (sourced, not run): arguments, tool paths, the head's shape.
# After `parse_engine_args "$@"`: dry_run (0/1), bundle, PYTHON, TRTEXEC.
# After `read_head_shape`: head_input, hidden, window (the action head's dynamic-L profile).
# After `read_build_inputs`: build_input[GRAPH] = the ONNX file trtexec parses (fp16 weights where exported),
# engine_file[GRAPH] = what its build writes (GRAPH.fp16.engine from an fp16 input, GRAPH.fp32.engine otherwise).
# After `read_engines`: engine_file[GRAPH] = the engines bundle.json records.
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
  declare -gA build_input=() engine_file=()
  local graph file engine
  while read -r graph file engine; do
    build_input[$graph]=$file
    engine_file[$graph]=$engine
  done < <("$PYTHON" -m runtime.engines "$bundle" --build-inputs)
  if [[ ${#build_input[@]} -ne 3 ]]; then
    echo "error: cannot read the engine build inputs from $bundle/bundle.json" >&2
    exit 1
  fi
}

read_engines() {
  declare -gA engine_file=()
  local graph engine
  while read -r graph engine; do
    engine_file[$graph]=$engine
  done < <("$PYTHON" -m runtime.engines "$bundle" --engines)
  if [[ ${#engine_file[@]} -ne 3 && $dry_run -eq 1 ]]; then  # none built yet: the names a build would write
    read_build_inputs
  elif [[ ${#engine_file[@]} -ne 3 ]]; then
    echo "error: $bundle/bundle.json records no engines: build them first (bash jetson/build_engines.sh $bundle)" >&2
    exit 1
  fi
}
