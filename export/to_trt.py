"""Build fp16 TensorRT engines from a bundle's ONNX graphs and record them in bundle.json.

    python -m export.to_trt bundle/                       # build all three engines with the TensorRT Python API
    python -m export.to_trt bundle/ --workspace-gb 2      # smaller builder memory pool (Orin Nano)

Engines are specific to the TensorRT version and the GPU they were built on:
each is recorded with both (the GPU as `runtime.backends.cuda_device` names
it, the same function the runtime checks with), and the runtime refuses an
engine built for another (`runtime.backends.tensorrt.check_engine`). fp16 is
chosen here, at the build; the parser reads the bundle's fp16-weights ONNX
(`runtime.engines.build_inputs`: half the host memory of the fp32 graphs).
LayerNorm is one normalization layer at opset 17, which TensorRT keeps
stable in fp16. The head's optimisation profile spans L = 1..W with W as
the optimum. A timing cache next to the bundle makes rebuilds fast.

All or nothing: every engine is written under a temporary name; only when
all three built are they renamed into place and recorded (one atomic rewrite
of bundle.json). A failed build exits 1 and leaves the bundle, its old
engines and their records as they were. `jetson/build_engines.sh` does the
same with trtexec.

Imports only runtime/ and (lazily) tensorrt + pycuda, so it runs on a Jetson.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from runtime.backends.base import BackendError
from runtime.bundle import GRAPHS, BundleError, load_bundle
from runtime.cli import CommandError, exits_on
from runtime.engines import build_inputs, engine_name, head_profile, record_engines

TIMING_CACHE = "timing.cache"


class EngineBuildError(RuntimeError):
    pass


def build_engine(trt, onnx_path: Path, engine_path: Path, profile: dict | None, workspace_gb: float,
                 timing_cache: Path, log=print) -> float:
    """Parse ONNX, build an fp16 engine, write it to engine_path. Returns build seconds."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external data next to it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT could not parse it: {errors}")
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
        raise EngineBuildError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above; out of "
                               f"memory on an Orin Nano? try --workspace-gb 1 and stop other programs)")
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - start
    log(f"built {engine_path.name} from {onnx_path.name} in {seconds:.1f} s")
    return seconds


def build_all(bundle_dir: Path, workspace_gb: float = 4.0, trt=None, log=print) -> dict:
    """Build the three engines under temporary names; rename and record them only if all succeeded."""
    from runtime.backends.cuda_device import cuda_device_name

    if trt is None:
        import tensorrt as trt  # noqa: PLW0127  (lazy: only on a machine with TensorRT)
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    gpu = cuda_device_name()  # before minutes of building: no GPU, no build
    cache = bundle_dir / TIMING_CACHE
    inputs = build_inputs(bundle)
    temps: dict[str, Path] = {}
    try:
        for graph in GRAPHS:
            fd, tmp = tempfile.mkstemp(prefix=f".{engine_name(graph)}.", suffix=".tmp", dir=bundle_dir)
            os.close(fd)
            temps[graph] = Path(tmp)
            profile = head_profile(bundle) if graph == "action_head" else None
            build_engine(trt, bundle_dir / inputs[graph], temps[graph], profile, workspace_gb, cache, log)
        for graph, tmp in temps.items():
            os.replace(tmp, bundle_dir / engine_name(graph))
        return record_engines(bundle_dir, {g: engine_name(g) for g in GRAPHS}, trt.__version__, gpu, "export.to_trt")
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@exits_on()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--workspace-gb", type=float, default=4.0, help="builder memory pool (GiB)")
    args = ap.parse_args(argv)
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise CommandError("TensorRT is not installed here. On a Jetson it comes with JetPack "
                           "(python3 -c 'import tensorrt'); on a desktop GPU: pip install tensorrt") from e
    try:
        build_all(args.bundle, args.workspace_gb)
    except (EngineBuildError, BackendError, BundleError) as e:
        raise CommandError(f"{e}; no engine recorded, {args.bundle / 'bundle.json'} unchanged") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
