#!/usr/bin/env bash
# Build the bundle's fp16 TensorRT engines on this device with trtexec, then record them in bundle.json.
#
#   bash jetson/build_engines.sh BUNDLE                 # build vision, language, action_head engines
#   bash jetson/build_engines.sh --dry-run BUNDLE       # print the trtexec commands only
#   WORKSPACE_MB=2048 bash jetson/build_engines.sh BUNDLE   # smaller builder pool (Orin Nano 8 GB)
#
# Engines only run on the TensorRT version and GPU that built them, so build them on the robot.
# fp16 is chosen here (the ONNX graphs are fp32); a timing cache in the bundle makes rebuilds fast.
# trtexec also times each engine after building (warm-up + iterations), so the log shows the
# GPU compute time per graph. Environment: TRTEXEC (path to trtexec), PYTHON, WORKSPACE_MB,
# TRT_VERSION and GPU_NAME (override what python's tensorrt and pycuda report).
set -euo pipefail

# shellcheck source=engine_common.sh
source "$(dirname "$0")/engine_common.sh"
parse_engine_args "$@"
WORKSPACE_MB=${WORKSPACE_MB:-4096}

if [[ ! -f "$bundle/bundle.json" ]]; then
  echo "error: $bundle/bundle.json not found: export a bundle first (python -m export.to_onnx CKPT --out $bundle)" >&2
  exit 1
fi
if [[ $dry_run -eq 0 && ! -x "$TRTEXEC" ]]; then
  echo "error: trtexec not found (looked on PATH and at /usr/src/tensorrt/bin/trtexec); install JetPack's TensorRT or set TRTEXEC" >&2
  exit 1
fi

# The head's window length is the one dynamic axis: profile min 1, opt = max = W.
read_head_shape

common=(--fp16 "--memPoolSize=workspace:${WORKSPACE_MB}" "--timingCacheFile=$bundle/timing.cache"
        --warmUp=500 --iterations=50 --avgRuns=10)
records=()
for graph in vision language action_head; do
  cmd=("$TRTEXEC" "--onnx=$bundle/$graph.onnx" "--saveEngine=$bundle/$graph.fp16.engine" "${common[@]}")
  if [[ $graph == action_head ]]; then
    cmd+=("--minShapes=${head_input}:1x1x${hidden}" "--optShapes=${head_input}:1x${window}x${hidden}"
          "--maxShapes=${head_input}:1x${window}x${hidden}")
  fi
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
    continue
  fi
  echo "== building $graph.fp16.engine (this takes minutes for the real model) =="
  "${cmd[@]}" 2>&1 | tee "$bundle/$graph.trtexec.log" | grep -E "GPU Compute Time|Latency|Throughput|Error|error" || true
  if [[ ${PIPESTATUS[0]} -ne 0 || ! -s "$bundle/$graph.fp16.engine" ]]; then
    echo "error: trtexec failed for $graph; see $bundle/$graph.trtexec.log" >&2
    exit 1
  fi
  records+=("$graph=$graph.fp16.engine")
done
[[ $dry_run -eq 1 ]] && exit 0

trt_version=${TRT_VERSION:-$("$PYTHON" -c 'import tensorrt; print(tensorrt.__version__)')}
gpu=${GPU_NAME:-$("$PYTHON" -c 'from export.to_trt import gpu_name; print(gpu_name())')}
"$PYTHON" -m export.to_trt "$bundle" --record "${records[@]}" --trt-version "$trt_version" --gpu "$gpu"
echo "engines built for TensorRT $trt_version on $gpu"
