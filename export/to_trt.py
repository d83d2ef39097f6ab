"""Build TensorRT engines from a bundle's mixed-precision ONNX graphs and record them in bundle.json.

    python -m export.to_trt bundle/                       # build all three engines with the TensorRT Python API
    python -m export.to_trt bundle/ --workspace-gb 2      # another builder pool than this board's rule
    python -m export.to_trt bundle/ --build-timeout 1800  # each engine in a child process, stopped after 30 min

Engines are specific to the TensorRT version and the GPU they were built on:
each is recorded with both (the GPU as `runtime.policy.backends.cuda_device` names
it, the same function the runtime checks with), and the runtime refuses an
engine built for another (`runtime.policy.backends.tensorrt.check_engine`).

Precision is the graph's own: the network is strongly typed
(`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, `trtexec --stronglyTyped`
in jetson/build_engines.sh), so every layer runs in the type the ONNX gives
it. The parser reads the bundle's fp16 build inputs
(`runtime.policy.engines.build_inputs`, written by `export.to_onnx`): fp16 weights
and activations, with LayerNorm, Softmax and the L2 norm kept in fp32 behind
Casts; the head stays fp32. One path for TensorRT 10.3 (JetPack 6.1/6.2) and
11.x, where strong typing is the only mode (the weakly typed builder flags
are gone). Each engine is named and recorded with its real precision
(`runtime.policy.engines.engine_files`: `vision.fp16.engine`, `language.fp16.engine`,
`action_head.fp32.engine`; all fp32, with a warning, for a bundle exported
with `--no-engine-input`). The builder pool defaults to this board's rule
(`runtime.policy.engines.WORKSPACE_RULES`: 1 GiB on an 8 GB Orin, 2 on a 16 GB Orin
NX, 4 on an AGX Orin or a desktop). The head's optimisation profile spans
L = 1..W with W as the optimum. A timing cache next to the bundle makes
rebuilds fast; one TensorRT will not use (from another GPU or TensorRT
version, e.g. a desktop build copied to the robot) is discarded with a
warning and replaced, as trtexec does, never fatal. The
serialized engine is written from TensorRT's own buffer (no second host
copy: the language engine is 2.7 GB, which matters on 8 and 16 GB boards).

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
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from runtime.atomic import make_shareable
from runtime.cli import CommandError, exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.base import BackendError
from runtime.policy.backends.cuda_device import cuda_device_name, gpu_stack_problem
from runtime.policy.bundle import GRAPHS, BundleError, load_bundle
from runtime.policy.engines import (
    build_inputs,
    engine_files,
    head_profile,
    memory_bytes,
    missing_fp16_input,
    record_engines,
    swap_warning,
    workspace_rule,
)

TIMING_CACHE = "timing.cache"
log = logging.getLogger(__name__)


def default_workspace_gb() -> float:
    """This machine's builder pool (GiB) by runtime.policy.engines.WORKSPACE_RULES (4 where /proc/meminfo is
    unreadable)."""
    try:
        total, _ = memory_bytes()
    except OSError:
        return 4.0
    return workspace_rule(total)[0] / 1024


class EngineBuildError(RuntimeError):
    pass


def write_buffer(path: Path, buffer) -> None:
    """TensorRT's IHostMemory (or any buffer) to a file through a memoryview: no bytes() copy of it."""
    with open(path, "wb") as f:
        f.write(memoryview(buffer))


def build_engine(trt, onnx_path: Path, engine_path: Path, profile: dict | None, workspace_gb: float,
                 timing_cache: Path) -> float:
    """Parse ONNX into a strongly typed network, build the engine, write it to engine_path. Returns seconds."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: resolves external data next to it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    use_timing_cache(trt, config, timing_cache)
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
    write_buffer(engine_path, serialized)
    del serialized  # the engine's host copy, before the next build allocates its own
    write_buffer(timing_cache, config.get_timing_cache().serialize())
    seconds = time.perf_counter() - start
    log.info("built %s from %s in %.1f s", engine_path.name, onnx_path.name, seconds)
    return seconds


def use_timing_cache(trt, config, path: Path) -> None:
    """The bundle's timing cache, when TensorRT takes it; else a fresh one, with a warning (never fatal).

    A cache from another GPU or TensorRT version (a desktop build's, copied to the robot with the bundle) is
    refused by set_timing_cache(..., ignore_mismatch=False), which returns False, or not even deserialised;
    trtexec ignores the mismatch instead. Timings measured on another GPU would mislead the tactic choice
    here, so the stale cache is discarded and the build times its tactics afresh (and saves the new cache)."""
    data = path.read_bytes() if path.exists() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log.warning("%s: a timing cache TensorRT %s does not accept here (built on another GPU or TensorRT version?): "
                "discarded; this build times its tactics afresh and saves a new one", path, trt.__version__)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise EngineBuildError(f"{path}: TensorRT refused even an empty timing cache")


def _build_in_child(onnx_path: Path, engine_path: Path, profile, workspace_gb: float, timing_cache: Path,
                    level: int) -> None:
    import tensorrt as trt

    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        build_engine(trt, onnx_path, engine_path, profile, workspace_gb, timing_cache)
    except EngineBuildError as e:
        log.error("%s", e)
        raise SystemExit(1) from e


def build_with_timeout(onnx_path: Path, engine_path: Path, profile, workspace_gb: float, timing_cache: Path,
                       timeout: float) -> None:
    """build_engine in a child process, killed after `timeout` seconds: a TensorRT build cannot be interrupted
    from Python, and a real-size build that hangs (swapping on a small board) must not hold the run forever."""
    child = multiprocessing.get_context("spawn").Process(
        target=_build_in_child, name=f"build-{onnx_path.stem}",
        args=(onnx_path, engine_path, profile, workspace_gb, timing_cache, logging.getLogger().level))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        raise EngineBuildError(f"{onnx_path}: the engine build took longer than --build-timeout {timeout:g} s "
                               f"and was stopped")
    if child.exitcode != 0:
        raise EngineBuildError(f"{onnx_path}: the engine build failed (exit {child.exitcode}; see its log above)")


def build_all(bundle_dir: Path, workspace_gb: float | None = None, trt=None,
              build_timeout: float | None = None) -> dict:
    """Build the three engines under temporary names; rename and record them only if all succeeded.

    workspace_gb: the builder pool (None: this board's rule, default_workspace_gb). build_timeout: seconds per
    engine, each built in a child process it bounds (None: in this process)."""
    if trt is None:
        problem = gpu_stack_problem(("tensorrt",))
        if problem:
            raise BackendError(problem)
        import tensorrt as trt  # lazy: only on a machine with TensorRT
    bundle_dir = Path(bundle_dir)
    bundle = load_bundle(bundle_dir)
    gpu = cuda_device_name()  # before minutes of building: no GPU, no build
    cache = bundle_dir / TIMING_CACHE
    inputs, engines = build_inputs(bundle), engine_files(bundle)
    if missing_fp16_input(bundle):
        log.warning("%s", missing_fp16_input(bundle))
    if workspace_gb is None:
        workspace_gb = default_workspace_gb()
        with contextlib.suppress(OSError):
            if swap_warning(*memory_bytes()):
                log.warning("%s", swap_warning(*memory_bytes()))
    temps: dict[str, Path] = {}
    try:
        for graph in GRAPHS:
            fd, tmp = tempfile.mkstemp(prefix=f".{engines[graph]}.", suffix=".tmp", dir=bundle_dir)
            make_shareable(fd)  # the drive's account reads it (mkstemp's 0600 would refuse it)
            os.close(fd)
            temps[graph] = Path(tmp)
            profile = head_profile(bundle) if graph == "action_head" else None
            if build_timeout is None:
                build_engine(trt, bundle_dir / inputs[graph], temps[graph], profile, workspace_gb, cache)
            else:
                build_with_timeout(bundle_dir / inputs[graph], temps[graph], profile, workspace_gb, cache,
                                   build_timeout)
        for graph, tmp in temps.items():
            os.replace(tmp, bundle_dir / engines[graph])
        return record_engines(bundle_dir, {g: engines[g] for g in GRAPHS}, trt.__version__, gpu, "export.to_trt")
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@exits_on()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--workspace-gb", type=float,
                    help="builder memory pool in GiB (default: this board's rule, "
                         f"runtime.policy.engines.WORKSPACE_RULES: {default_workspace_gb():g} here)")
    ap.add_argument("--build-timeout", type=float,
                    help="seconds per engine build, each in a child process stopped after it (default: no limit)")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    try:
        build_all(args.bundle, args.workspace_gb, build_timeout=args.build_timeout)
    except (EngineBuildError, BackendError, BundleError) as e:
        raise CommandError(f"{e}; no engine recorded, {args.bundle / 'bundle.json'} unchanged") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
