"""TensorRT engines of a bundle, on the robot's side: names, build inputs, the head's profile, recording.

    python -m runtime.engines BUNDLE --head-shape       # "INPUT_NAME HIDDEN WINDOW" (for jetson/*.sh)
    python -m runtime.engines BUNDLE --build-inputs     # "GRAPH ONNX_FILE ENGINE_FILE" per graph: what trtexec parses
    python -m runtime.engines BUNDLE --engines          # "GRAPH ENGINE_FILE" per recorded engine (jetson/bench.sh)
    python -m runtime.engines BUNDLE --workspace-mb     # this board's builder pool (MiB); warns if swap is short
    python -m runtime.engines BUNDLE --record vision=vision.fp16.engine ... --trt-version 10.3.0 --gpu Orin

Engines are built on the robot (they only run on the TensorRT version and
GPU that built them), by `jetson/build_engines.sh` (trtexec) or `python -m
export.to_trt` (TensorRT's Python API); both record them here, with the
version, the GPU (`runtime.policy.backends.cuda_device`) and the sha256, in one
atomic rewrite of bundle.json. Lives in runtime/ so a robot install (which
has no export/ or train/) can build and record its engines.

Build inputs: the fp16-weights ONNX graphs export writes for this purpose
(`engine_build` in bundle.json): TensorRT's parser holds every weight of the
graph it parses in host memory, 3.3 GB in fp16 instead of 6.6 GB in fp32 for
the real model, which is what lets an 8 GB Orin Nano build (jetson/README.md).
Bundles without that field (exported with `--no-engine-input`, or before it
existed) fall back to the fp32 graphs, with a warning: the engines are then
fp32, twice the memory to build and to run, and are named and recorded so
(`GRAPH.fp32.engine`, `"precision": "fp32"`). The head is always built from
its fp32 graph: `action_head.fp32.engine`.

The builder's memory pool, one rule per board (`WORKSPACE_RULES`, the same
in jetson/build_engines.sh, `export.to_trt` and jetson/README.md's memory
table): an 8 GB Orin (Nano or NX) 1024 MiB with an 8 GB swap file, a 16 GB
Orin NX 2048 MiB, an AGX Orin (32 or 64 GB) or a desktop 4096 MiB.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.atomic import atomic_write_text
from runtime.policy.bundle import GRAPHS, load_bundle, sha256_file

FP16_INPUT_SUFFIX = ".fp16.onnx"  # export's mixed-precision build inputs (export.variants.make_fp16)
NO_FP16_INPUT = ("{bundle}: no fp16 engine-build inputs (bundle.json has no 'engine_build'; exported with "
                 "--no-engine-input or by an older version): building fp32 engines from the fp32 graphs, twice the "
                 "memory to build and to run; re-export without --no-engine-input for fp16 engines")
# (boards with at most this much memory in GB, builder pool in MiB, swap in GB the build needs, boards): the
# language engine's build peaks at ~9.9 GB with a 1 GiB pool, ~10.9 with 2, ~12.9 with 4 (jetson/README.md)
WORKSPACE_RULES = ((9, 1024, 8, "Orin Nano 8 GB / Orin NX 8 GB"), (17, 2048, 0, "Orin NX 16 GB"),
                   (None, 4096, 0, "AGX Orin 32/64 GB, desktops"))


def engine_name(graph: str, precision: str = "fp16") -> str:
    return f"{graph}.{precision}.engine"


def build_inputs(bundle) -> dict[str, str]:
    """ONNX file per graph that an engine build parses (file names relative to the bundle)."""
    files = bundle.manifest.get("engine_build", {}).get("files")
    return dict(files) if files else dict(bundle.manifest["variants"]["fp32"]["files"])


def engine_precisions(bundle) -> dict[str, str]:
    """The precision each graph's strongly typed engine has: its build input's (fp16 for export's mixed-precision
    files, fp32 for a plain fp32 graph such as the head's)."""
    return {graph: "fp16" if file.endswith(FP16_INPUT_SUFFIX) else "fp32"
            for graph, file in build_inputs(bundle).items()}


def engine_files(bundle) -> dict[str, str]:
    """The engine file each graph's build writes: GRAPH.PRECISION.engine."""
    return {graph: engine_name(graph, precision) for graph, precision in engine_precisions(bundle).items()}


def missing_fp16_input(bundle) -> str | None:
    """The warning for a bundle whose engines can only be fp32, else None."""
    return None if bundle.manifest.get("engine_build") else NO_FP16_INPUT.format(bundle=bundle.root)


def memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(MemTotal, SwapTotal) in bytes from /proc/meminfo."""
    values = {}
    for line in Path(meminfo).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "SwapTotal"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("MemTotal", 0), values.get("SwapTotal", 0)


def workspace_rule(total_bytes: int) -> tuple[int, int, str]:
    """(builder pool in MiB, swap in GB the build needs, which boards) for a machine with this much memory."""
    for limit_gb, workspace_mb, swap_gb, boards in WORKSPACE_RULES:
        if limit_gb is None or total_bytes <= limit_gb * 1e9:
            return workspace_mb, swap_gb, boards
    raise AssertionError("the last rule has no limit")


def swap_warning(total_bytes: int, swap_bytes: int) -> str | None:
    _, swap_gb, boards = workspace_rule(total_bytes)
    if swap_gb and swap_bytes < swap_gb * 0.95e9:
        return (f"{total_bytes / 1e9:.1f} GB of memory ({boards}) and {swap_bytes / 1e9:.1f} GB of swap: the language "
                f"engine's build needs a {swap_gb} GB swap file (jetson/README.md, Memory budget), no desktop and "
                f"nothing else running, or it is killed for memory")
    return None


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
    precisions = engine_precisions(bundle)
    for graph, file in engines.items():
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; expected one of {', '.join(GRAPHS)}")
        path = Path(bundle_dir) / file
        if not path.is_file() or path.stat().st_size == 0:
            raise FileNotFoundError(f"{path}: engine file not found or empty")
        kept.append({"graph": graph, "file": file, "precision": precisions[graph], "tensorrt_version": trt_version,
                     "gpu": gpu, "builder": builder})
        manifest["files"][file] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest["engines"] = sorted(kept, key=lambda e: GRAPHS.index(e["graph"]))
    atomic_write_text(Path(bundle_dir) / "bundle.json", json.dumps(manifest, indent=2) + "\n")
    return manifest
