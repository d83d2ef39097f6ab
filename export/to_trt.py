"""Build fp16 TensorRT engines from a bundle's ONNX graphs and record them in bundle.json.

    python -m export.to_trt bundle/                       # build all three engines with the TensorRT Python API
    python -m export.to_trt bundle/ --workspace-gb 2      # smaller builder memory pool (Orin Nano)
    python -m export.to_trt bundle/ --record vision=vision.fp16.engine ... --trt-version 10.3.0 --gpu Orin
                                                          # record engines trtexec built (jetson/build_engines.sh)

Engines are specific to the TensorRT version and the GPU they were built on:
each is recorded with both, and the runtime refuses an engine built for
another (`runtime.backends.tensorrt.check_engine`). fp16 is chosen here, at
the build (DESIGN.md: fp32 ONNX, fp16 engines); LayerNorm is one
normalization layer at opset 17, which TensorRT keeps stable in fp16. The
head's optimisation profile spans L = 1..W with W as the optimum. A timing
cache next to the bundle makes rebuilds fast.

Imports only runtime/ and (lazily) tensorrt + pycuda, so it runs on a Jetson
with just the runtime extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from runtime.atomic import atomic_write_text
from runtime.bundle import GRAPHS, load_bundle, sha256_file

ENGINE_SUFFIX = ".fp16.engine"
TIMING_CACHE = "timing.cache"


def engine_name(graph: str) -> str:
    return f"{graph}{ENGINE_SUFFIX}"


def gpu_name() -> str:
    """Name of GPU 0 (pycuda), or the Jetson board model, or 'unknown'."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device(0).name()
    except Exception:  # no pycuda / no driver: fall back to what the board says
        model = Path("/proc/device-tree/model")
        return model.read_text().strip("\0\n ") if model.exists() else "unknown"


def head_profile(bundle) -> dict[str, tuple]:
    """min/opt/max shapes of every dynamic input (only the head's L)."""
    shapes = {}
    for spec in bundle.inputs("action_head"):
        lo, hi = bundle.dynamic_axes("action_head")["L"]
        d = spec.shape[2]
        shapes[spec.name] = ((1, lo, d), (1, hi, d), (1, hi, d))
    return shapes


def build_engine(trt, onnx_path: Path, engine_path: Path, profile: dict | None, workspace_gb: float,
                 timing_cache: Path, log=print) -> float:
    """Parse ONNX, build an fp16 engine, write it atomically. Returns build seconds."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external data next to it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    if profile:
        opt = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profile.items():
            opt.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(opt)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    fd, tmp = tempfile.mkstemp(prefix=f".{engine_path.name}.", dir=engine_path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(serialized))
    os.replace(tmp, engine_path)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - start
    log(f"built {engine_path.name} in {seconds:.1f} s")
    return seconds


def record_engines(bundle_dir: Path, engines: dict[str, str], trt_version: str, gpu: str,
                   builder: str) -> dict:
    """Add engines to bundle.json (with TensorRT version, GPU and sha256) atomically."""
    bundle = load_bundle(bundle_dir, verify_hashes=False)
    manifest = bundle.manifest
    kept = [e for e in manifest.get("engines", []) if e["graph"] not in engines]
    for graph, file in engines.items():
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; expected one of {', '.join(GRAPHS)}")
        path = Path(bundle_dir) / file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: engine file not found")
        kept.append({"graph": graph, "file": file, "precision": "fp16", "tensorrt_version": trt_version,
                     "gpu": gpu, "builder": builder})
        manifest["files"][file] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest["engines"] = sorted(kept, key=lambda e: GRAPHS.index(e["graph"]))
    atomic_write_text(Path(bundle_dir) / "bundle.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_all(bundle_dir: Path, workspace_gb: float = 4.0, trt=None, log=print) -> dict:
    if trt is None:
        import tensorrt as trt  # noqa: PLW0127  (lazy: only on a machine with TensorRT)
    bundle = load_bundle(bundle_dir)
    cache = Path(bundle_dir) / TIMING_CACHE
    built = {}
    for graph in GRAPHS:
        profile = head_profile(bundle) if graph == "action_head" else None
        build_engine(trt, bundle.graph_file(graph, "fp32"), Path(bundle_dir) / engine_name(graph), profile,
                     workspace_gb, cache, log)
        built[graph] = engine_name(graph)
    return record_engines(bundle_dir, built, trt.__version__, gpu_name(), "export.to_trt")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--workspace-gb", type=float, default=4.0, help="builder memory pool (GiB)")
    ap.add_argument("--record", nargs="+", metavar="GRAPH=FILE", help="only record engines built elsewhere")
    ap.add_argument("--trt-version", help="with --record: TensorRT version the engines were built with")
    ap.add_argument("--gpu", help="with --record: GPU name the engines were built on")
    ap.add_argument("--head-shape", action="store_true",
                    help="print 'INPUT_NAME HIDDEN WINDOW' of the action head (for the shell scripts) and exit")
    args = ap.parse_args(argv)
    if args.head_shape:
        bundle = load_bundle(args.bundle, verify_hashes=False)
        spec = bundle.inputs("action_head")[0]
        print(spec.name, spec.shape[2], bundle.window)
        return 0
    if args.record:
        if not (args.trt_version and args.gpu):
            ap.error("--record needs --trt-version and --gpu")
        engines = dict(item.split("=", 1) for item in args.record)
        record_engines(args.bundle, engines, args.trt_version, args.gpu, "trtexec")
        print(f"recorded {', '.join(engines.values())} in {args.bundle / 'bundle.json'}")
        return 0
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("error: TensorRT is not installed here. On a Jetson it comes with JetPack "
              "(python3 -c 'import tensorrt'); on a desktop GPU: pip install tensorrt", file=sys.stderr)
        return 1
    build_all(args.bundle, args.workspace_gb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
