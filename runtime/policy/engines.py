"""TensorRT engines of a bundle, on the robot's side: names, build inputs, the head's profile, recording.

    python -m runtime.engines BUNDLE --head-shape       # "INPUT_NAME HIDDEN WINDOW" (for jetson/*.sh)
    python -m runtime.engines BUNDLE --build-inputs     # "GRAPH ONNX_FILE" per graph: what trtexec parses
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
Bundles exported before that field existed fall back to the fp32 graphs.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.atomic import atomic_write_text
from runtime.policy.bundle import GRAPHS, load_bundle, sha256_file

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

