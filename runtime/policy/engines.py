"""TensorRT engines of a bundle, on the robot's side: names, build inputs, the head's profile, recording.

    python -m runtime.engines BUNDLE --head-shape       # "INPUT_NAME HIDDEN WINDOW" (for jetson/*.sh)
    python -m runtime.engines BUNDLE --build-inputs     # "GRAPH ONNX_FILE" per graph: what trtexec parses
    python -m runtime.engines BUNDLE --record vision=vision.fp16.engine ... --trt-version 10.3.0 --gpu Orin

Engines are built on the robot (they only run on the TensorRT version and
GPU that built them), by `jetson/build_engines.sh` (trtexec) or `python -m
export.to_trt` (TensorRT's Python API); both record them here, with the
version, the GPU (`runtime.backends.cuda_device`) and the sha256, in one
atomic rewrite of bundle.json. Lives in runtime/ so a robot install (which
has no export/ or train/) can build and record its engines.

Build inputs: the fp16-weights ONNX graphs export writes for this purpose
(`engine_build` in bundle.json): TensorRT's parser holds every weight of the
graph it parses in host memory, 3.3 GB in fp16 instead of 6.6 GB in fp32 for
the real model, which is what lets an 8 GB Orin Nano build (jetson/README.md).
Bundles exported before that field existed fall back to the fp32 graphs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.atomic import atomic_write_text
from runtime.bundle import GRAPHS, BundleError, load_bundle, sha256_file
from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging

ENGINE_SUFFIX = ".fp16.engine"


def engine_name(graph: str) -> str:
    return f"{graph}{ENGINE_SUFFIX}"


def build_inputs(bundle) -> dict[str, str]:
    """ONNX file per graph that an engine build parses (file names relative to the bundle)."""
    files = bundle.manifest.get("engine_build", {}).get("files")
    return dict(files) if files else dict(bundle.manifest["variants"]["fp32"]["files"])


def head_profile(bundle) -> dict[str, tuple]:
    """min/opt/max shapes of every dynamic input (only the head's L): min 1, opt = max = W."""
    shapes = {}
    for spec in bundle.inputs("action_head"):
        lo, hi = bundle.dynamic_axes("action_head")["L"]
        d = spec.shape[2]
        shapes[spec.name] = ((1, lo, d), (1, hi, d), (1, hi, d))
    return shapes


def record_engines(bundle_dir: Path, engines: dict[str, str], trt_version: str, gpu: str, builder: str) -> dict:
    """Add engines to bundle.json (with TensorRT version, GPU and sha256) atomically."""
    bundle = load_bundle(bundle_dir, verify="none")
    manifest = bundle.manifest
    kept = [e for e in manifest.get("engines", []) if e["graph"] not in engines]
    for graph, file in engines.items():
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; expected one of {', '.join(GRAPHS)}")
        path = Path(bundle_dir) / file
        if not path.is_file() or path.stat().st_size == 0:
            raise FileNotFoundError(f"{path}: engine file not found or empty")
        kept.append({"graph": graph, "file": file, "precision": "fp16", "tensorrt_version": trt_version,
                     "gpu": gpu, "builder": builder})
        manifest["files"][file] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest["engines"] = sorted(kept, key=lambda e: GRAPHS.index(e["graph"]))
    atomic_write_text(Path(bundle_dir) / "bundle.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


@exits_on(BundleError, FileNotFoundError, ValueError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--head-shape", action="store_true", help="print 'INPUT_NAME HIDDEN WINDOW' of the action head")
    what.add_argument("--build-inputs", action="store_true", help="print 'GRAPH ONNX_FILE' per graph")
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
        for graph, file in build_inputs(bundle).items():
            print(graph, file)
    else:
        if not (args.trt_version and args.gpu):
            ap.error("--record needs --trt-version and --gpu")
        engines = dict(item.split("=", 1) for item in args.record)
        record_engines(args.bundle, engines, args.trt_version, args.gpu, "trtexec")
        print(f"recorded {', '.join(engines.values())} in {args.bundle / 'bundle.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
