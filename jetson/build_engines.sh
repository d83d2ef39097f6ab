#!/usr/bin/env bash
# Build the bundle's TensorRT engines on this device with trtexec, then record them in bundle.json.
#
#   bash jetson/build_engines.sh BUNDLE                 # build vision, language, action_head engines
#   bash jetson/build_engines.sh --dry-run BUNDLE       # print the trtexec commands only
#   WORKSPACE_MB=2048 bash jetson/build_engines.sh BUNDLE   # another builder pool than this board's rule
#
# Engines only run on the TensorRT version and GPU that built them, so build them on the robot.
# Strongly typed (--stronglyTyped, the only mode of TensorRT 11, and on 10.3 the one that keeps the graph's
# fp32 LayerNorm/Softmax/L2 norm): trtexec parses the mixed-precision ONNX export wrote for it (half the host memory of
# the fp32 graphs: what lets an 8 GB Orin Nano build, see jetson/README.md). A timing cache in the bundle
# makes rebuilds fast. trtexec also times each engine after building (warm-up + iterations), so the log
# shows the GPU compute time per graph.
#
# The builder pool (WORKSPACE_MB) defaults to this board's rule (python -m runtime.engines --workspace-mb, the
# table in jetson/README.md): 1024 MiB on an 8 GB Orin, which also needs an 8 GB swap file (warned when
# missing), 2048 on a 16 GB Orin NX, 4096 on an AGX Orin or a desktop. Engines are named and recorded by
# their real precision: GRAPH.fp16.engine from export's fp16 inputs, action_head.fp32.engine (the head stays
# fp32), and all fp32 (with a warning) for a bundle exported with --no-engine-input.
#
# All or nothing: each engine is built under a temporary name (.ENGINE.building); only when
# all three built are they renamed into place and recorded (one atomic rewrite of bundle.json). A failed
# trtexec exits non-zero and leaves the old engines and bundle.json exactly as they were.
#
# Environment: TRTEXEC (path to trtexec), PYTHON, WORKSPACE_MB, MEMINFO (default /proc/meminfo: what the
# pool's rule reads), TRT_VERSION and GPU_NAME (override what python's tensorrt and
# runtime.policy.backends.cuda_device report: the same GPU name the runtime checks).
set -euo pipefail

# shellcheck source=engine_common.sh
source "$(dirname "$0")/engine_common.sh"
parse_engine_args "$@"

if [[ ! -f "$bundle/bundle.json" ]]; then
  echo "error: $bundle/bundle.json not found: export a bundle first (python -m export.to_onnx CKPT --out $bundle)" >&2
  exit 1
fi
if [[ -z "${WORKSPACE_MB:-}" ]]; then  # this board's rule; a warning on stderr when its swap is too small
  if ! WORKSPACE_MB=$("$PYTHON" -m runtime.engines "$bundle" --workspace-mb --meminfo "${MEMINFO:-/proc/meminfo}"); then
    echo "error: cannot work out the builder pool with $PYTHON -m runtime.engines; set WORKSPACE_MB" >&2
    exit 1
  fi
fi
if [[ $dry_run -eq 0 && ! -x "$TRTEXEC" ]]; then
  echo "error: trtexec not found (looked on PATH and at /usr/src/tensorrt/bin/trtexec); install JetPack's TensorRT or set TRTEXEC" >&2
  exit 1
fi
if [[ $dry_run -eq 0 ]]; then  # before minutes of building: what the engines will be recorded under
  if ! trt_version=${TRT_VERSION:-$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)')}; then
    echo "error: $PYTHON cannot import tensorrt (JetPack: sudo apt install python3-libnvinfer)" >&2
    exit 1
  fi
  if ! gpu=${GPU_NAME:-$("$PYTHON" -m runtime.policy.backends.cuda_device)}; then
    echo "error: cannot read the CUDA device name (see above); bash jetson/setup.sh installs pycuda" >&2
    exit 1
  fi
fi

# The head's window length is the one dynamic axis: profile min 1, opt = max = W.
read_head_shape
read_build_inputs

common=(--stronglyTyped "--memPoolSize=workspace:${WORKSPACE_MB}" "--timingCacheFile=$bundle/timing.cache"
        --warmUp=500 --iterations=50 --avgRuns=10)
graphs=(vision language action_head)
building=()
cleanup() {
  if [[ ${#building[@]} -gt 0 ]]; then rm -f "${building[@]}"; fi
}
trap cleanup EXIT

for graph in "${graphs[@]}"; do
  tmp="$bundle/.${engine_file[$graph]}.building"
  cmd=("$TRTEXEC" "--onnx=$bundle/${build_input[$graph]}" "--saveEngine=$tmp" "${common[@]}")
  if [[ $graph == action_head ]]; then
    cmd+=("--minShapes=${head_input}:1x1x${hidden}" "--optShapes=${head_input}:1x${window}x${hidden}"
          "--maxShapes=${head_input}:1x${window}x${hidden}")
  fi
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
    continue
  fi
  building+=("$tmp")
  rm -f "$tmp"
  echo "== building ${engine_file[$graph]} from ${build_input[$graph]} (this takes minutes for the real model) =="
  # trtexec's own exit status decides, not the filter's: PIPESTATUS is read right after the pipeline,
  # with errexit off, before any other command can reset it.
  set +e
  "${cmd[@]}" 2>&1 | tee "$bundle/$graph.trtexec.log" | grep -E --line-buffered "GPU Compute Time|Latency|Throughput|Error|error"
  statuses=("${PIPESTATUS[@]}")
  set -e
  if [[ ${statuses[0]} -ne 0 || ! -s "$tmp" ]]; then
    echo "error: trtexec failed for $graph (exit ${statuses[0]}); see $bundle/$graph.trtexec.log." \
         "No engine was recorded; the bundle and its old engines are unchanged." >&2
    exit 1
  fi
done
[[ $dry_run -eq 1 ]] && exit 0

records=()
for graph in "${graphs[@]}"; do
  mv -f "$bundle/.${engine_file[$graph]}.building" "$bundle/${engine_file[$graph]}"
  records+=("$graph=${engine_file[$graph]}")
done
building=()
"$PYTHON" -m runtime.engines "$bundle" --record "${records[@]}" --trt-version "$trt_version" --gpu "$gpu"
echo "engines built for TensorRT $trt_version on $gpu"
