#!/usr/bin/env bash
# Time the engines on this Jetson, then the whole control loop with the native TensorRT backend.
#
#   bash jetson/bench.sh BUNDLE             # checks power mode and clocks first
#   bash jetson/bench.sh --dry-run BUNDLE   # print the commands only
#
# trtexec reports GPU compute time and host latency separately (--separateProfileRun keeps the
# per-layer profiler out of the timed run; --useCudaGraph removes launch overhead).
set -euo pipefail
# shellcheck source=engine_common.sh
source "$(dirname "$0")/engine_common.sh"
parse_engine_args "$@"

if [[ $dry_run -eq 0 ]]; then
  if command -v nvpmodel >/dev/null; then
    mode=$(nvpmodel -q 2>/dev/null | head -n 1) || mode="unknown (nvpmodel -q failed)"
    echo "power mode: $mode  (MAXN gives the numbers in docs/performance.md: sudo nvpmodel -m 0)"
  fi
  if command -v jetson_clocks >/dev/null; then
    jetson_clocks --show 2>/dev/null | grep -E "GPU|EMC" | head -n 4 || true
    echo "locked clocks make timings repeatable: sudo jetson_clocks"
  fi
fi

read_head_shape
read_engines

for graph in vision language action_head; do
  cmd=("$TRTEXEC" "--loadEngine=$bundle/${engine_file[$graph]}" --warmUp=1000 --iterations=200 --duration=0
       --useCudaGraph --separateProfileRun --useSpinWait)
  if [[ $graph == action_head ]]; then
    cmd+=("--shapes=${head_input}:1x${window}x${hidden}")
  fi
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    echo "== $graph =="
    # trtexec's own status decides, not grep's: `a | grep || true` would hide a failed run
    set +e
    "${cmd[@]}" > "$bundle/.bench-$graph.log" 2>&1
    status=$?
    set -e
    grep -E "GPU Compute Time|Host Latency|Throughput" "$bundle/.bench-$graph.log" || true
    if [[ $status -ne 0 ]]; then
      echo "error: trtexec failed on $graph (exit $status); its output: $bundle/.bench-$graph.log" >&2
      exit 1
    fi
  fi
done

bench=("$PYTHON" -m benchmarks.latency --bundle "$bundle" --backend trt --steps 200 --warmup 20 --save)
if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${bench[@]}"; echo
else
  "${bench[@]}"
fi
