"""A bundle's TensorRT engines from the shell: what the jetson/ scripts build, and recording them.

    python -m runtime.engines BUNDLE --head-shape       # "INPUT_NAME HIDDEN WINDOW" (for jetson/*.sh)
    python -m runtime.engines BUNDLE --build-inputs     # "GRAPH ONNX_FILE ENGINE_FILE" per graph: what trtexec parses
    python -m runtime.engines BUNDLE --engines          # "GRAPH ENGINE_FILE" per recorded engine (jetson/bench.sh)
    python -m runtime.engines BUNDLE --workspace-mb     # this board's builder pool (MiB); warns if swap is short
    python -m runtime.engines BUNDLE --record vision=vision.fp16.engine ... --trt-version 10.3.0 --gpu Orin

Lives in runtime/ so a robot install (no export/, no train/) can build and record its engines; the rules
(names and precisions, build inputs, the head's profile, the builder pool per board, the record in bundle.json)
are runtime/policy/engines.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.bundle import BundleError, load_bundle
from runtime.policy.engines import (
    build_inputs,
    engine_files,
    memory_bytes,
    missing_fp16_input,
    record_engines,
    swap_warning,
    workspace_rule,
)

log = logging.getLogger(__name__)


@exits_on(BundleError, FileNotFoundError, ValueError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--head-shape", action="store_true", help="print 'INPUT_NAME HIDDEN WINDOW' of the action head")
    what.add_argument("--build-inputs", action="store_true",
                      help="print 'GRAPH ONNX_FILE ENGINE_FILE' per graph (warns when there is no fp16 input)")
    what.add_argument("--engines", action="store_true", help="print 'GRAPH ENGINE_FILE' per recorded engine")
    what.add_argument("--workspace-mb", action="store_true",
                      help="print this machine's builder pool in MiB (WORKSPACE_RULES); warns when its swap is short")
    ap.add_argument("--meminfo", type=Path, default=Path("/proc/meminfo"),
                    help="with --workspace-mb: the memory figures to read (default: %(default)s)")
    what.add_argument("--record", nargs="+", metavar="GRAPH=FILE", help="record engines built elsewhere")
    ap.add_argument("--trt-version", help="with --record: TensorRT version the engines were built with")
    ap.add_argument("--gpu", help="with --record: CUDA device name they were built on")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    bundle = load_bundle(args.bundle, verify="none")
    if args.head_shape:
        spec = bundle.inputs("action_head")[0]
        print(spec.name, spec.shape[2], bundle.window)
    elif args.build_inputs:
        if missing_fp16_input(bundle):
            log.warning("%s", missing_fp16_input(bundle))
        engines = engine_files(bundle)
        for graph, file in build_inputs(bundle).items():
            print(graph, file, engines[graph])
    elif args.engines:
        for engine in bundle.manifest.get("engines", []):
            print(engine["graph"], engine["file"])
    elif args.workspace_mb:
        total, swap = memory_bytes(args.meminfo)
        if swap_warning(total, swap):
            log.warning("%s", swap_warning(total, swap))
        print(workspace_rule(total)[0])
    else:
        if not (args.trt_version and args.gpu):
            ap.error("--record needs --trt-version and --gpu")
        engines = dict(item.split("=", 1) for item in args.record)
        record_engines(args.bundle, engines, args.trt_version, args.gpu, "trtexec")
        print(f"recorded {', '.join(engines.values())} in {args.bundle / 'bundle.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
