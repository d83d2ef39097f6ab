"""The TensorRT path proven on a real GPU, in one run, with every figure in one JSON.

    bash jetson/gpu_check.sh                                 # the same, with a Jetson's power mode noted
    python -m benchmarks.gpu_check --out gpu-check.json      # tiny + real size (random weights) where memory allows
    python -m benchmarks.gpu_check --sizes tiny --steps 20 --out quick.json   # minutes: tiny only
    python -m benchmarks.gpu_check --bundle tiny-bundle/ --out jetson.json   # a bundle exported elsewhere (a Jetson)

For each size (`tiny`, and `kosmos2` with random weights = the real 1.66 B
model): export the bundle (fp32 ONNX + the fp16-weights engine inputs),
build the three engines (`python -m export.to_trt`), check them against
PyTorch with the fp16 bounds (`export.verify`'s `verify_bundle`, backend
trt), drive the simulated robot 50 steps through the real two-thread loop
with `--backend trt` (`python -m sim.drive`: the controller emulator on a
pty), and time the control step (`python -m benchmarks.latency --backend
trt`). Every step is timed and its outcome recorded; a failing step is
recorded with its error and the run goes on, so one JSON says what works.
Exit status 1 if any step failed. Each engine build has its own time limit
(`--build-timeout`, export.to_trt builds it in a child process it stops),
every other subprocess step `--timeout`.

Needs an NVIDIA GPU, TensorRT, pycuda and the export stack (torch,
transformers: `pip install -e .[train,export,runtime,bench]`), on a desktop
or a Jetson. The real size holds the PyTorch model (6.6 GB) next to the
engines while it checks them (the export peaks at 14.5 GB,
docs/performance.md), so `--sizes` defaults to tiny alone on a machine with
less than 20 GB of memory (`default_sizes`). A Jetson has no torch and no
export stack (JetPack ships no torch; transformers needs Python >= 3.11):
there `--bundle DIR` checks a bundle exported on another machine (the export
and the comparison with PyTorch are skipped and say so; the engine build,
the drive and the latency run). The JSON: {"versions": {...}, "gpu": name, "sizes": {SIZE:
{"steps": {STEP: {"ok", "seconds", ...figures or "error"}}}}, "ok": bool}.
Record the figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from export.to_trt import default_workspace_gb
from runtime.control.steplog import read_log
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.cuda_device import cuda_device_name
from runtime.policy.engines import memory_bytes
from train.config import preset_config

SIZES = ("tiny", "kosmos2")
REAL_SIZE_MEMORY = 20e9  # bytes a machine needs for the real size: the export's 14.5 GB peak and the OS beside it


def default_sizes(meminfo: Path = Path("/proc/meminfo")) -> list[str]:
    """Both sizes where memory holds the real size's export (REAL_SIZE_MEMORY), else tiny (an 8 or 16 GB board)."""
    try:
        total = memory_bytes(meminfo)[0]
    except OSError:
        return list(SIZES)
    return list(SIZES) if total >= REAL_SIZE_MEMORY else ["tiny"]
DRIVE = ["-m", "sim.drive"]  # the simulated robot behind runtime.drive's real loop
log = logging.getLogger(__name__)


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(), "platform": platform.platform()}
    for mod in ("tensorrt", "pycuda", "onnxruntime", "torch", "numpy"):
        try:
            out[mod] = str(__import__(mod).__version__ if mod != "pycuda" else __import__("pycuda").VERSION_TEXT)
        except Exception as e:  # absent, or a build without a version attribute
            out[mod] = f"unavailable ({type(e).__name__})"
    release = Path(os.environ.get("TEGRA_RELEASE", "/etc/nv_tegra_release"))
    out["l4t"] = release.read_text().splitlines()[0] if release.is_file() else None
    return out


def gpu() -> str:
    return cuda_device_name()


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return proc


def step_export(size: str, work: Path, ctx: dict) -> dict:
    from export.to_onnx import ExportOptions, export_bundle  # noqa: PLC0415  torch: the export step only
    from train.model import build_model, load_tokenizer  # noqa: PLC0415  torch: the export step only

    cfg = preset_config(size, random_weights=size != "tiny")
    ctx["model"], ctx["tokenizer"] = build_model(cfg), load_tokenizer(cfg)
    ctx["bundle"] = work / f"{size}-bundle"
    # The ONNX Runtime parity check of the export is skipped at the real size (minutes of CPU): verify_trt
    # compares the engines with PyTorch right after, which is the check that matters here.
    export_bundle(ctx["model"], ctx["tokenizer"], ctx["bundle"],
                  ExportOptions(origin=f"preset:{size}", overwrite=True, verify=size == "tiny", verify_seeds=(0,)))
    return {"bundle_bytes": sum(p.stat().st_size for p in ctx["bundle"].iterdir() if p.is_file())}


def step_build(size: str, work: Path, ctx: dict, args) -> dict:
    # each of the three builds is bounded by --build-timeout inside export.to_trt; this bound only catches a hang
    # around them
    run(["-m", "export.to_trt", str(ctx["bundle"]), "--workspace-gb", str(args.workspace_gb),
         "--build-timeout", str(args.build_timeout)], 3 * args.build_timeout + args.timeout)
    manifest = json.loads((ctx["bundle"] / "bundle.json").read_text())
    return {"engines": {e["graph"]: {"bytes": manifest["files"][e["file"]]["bytes"], "gpu": e["gpu"],
                                     "tensorrt_version": e["tensorrt_version"]} for e in manifest["engines"]}}


def step_verify(size: str, work: Path, ctx: dict, args) -> dict:
    from export.verify import verify_bundle  # noqa: PLC0415  torch: the export step only

    report = verify_bundle(ctx["bundle"], ctx["model"], ctx["tokenizer"], backend="trt", seeds=(0,),
                           progress=lambda s: None)["fp16-engine"]
    if not report["passed"]:
        raise RuntimeError(f"fp16 engines outside the bounds {report['tolerance']}: {json.dumps(report)[:1500]}")
    return {"passed": True, "tolerance": report["tolerance"]}


def step_drive(size: str, work: Path, ctx: dict, args) -> dict:
    log = work / f"{size}-drive.jsonl"
    log.unlink(missing_ok=True)
    cmd = [*DRIVE, "--bundle", str(ctx["bundle"]), "--backend", "trt", "--max-steps", str(args.steps),
           "--mode", "continuous", "--quiet", "--log", str(log)]
    proc = run(cmd, args.timeout)
    steps = [r for r in read_log(log) if r["type"] == "step"]
    if not steps:  # fewer than --steps is fine: a random policy may hit a wall, which ends the episode
        raise RuntimeError(f"drive logged no step: {proc.stderr[-1500:]}")
    ended = [line for line in proc.stderr.splitlines() if line.startswith(("sim:", "stopped"))]
    infer_ms = sorted((r["t_action"] - r["t_infer_start"]) * 1e3 for r in steps)
    stages = {k: sum(r["timings_ms"].get(k, 0.0) for r in steps) / len(steps)
              for k in ("preprocess", "vision", "language", "head")}
    return {"steps": len(steps), "ended": ended, "infer_ms_mean": sum(infer_ms) / len(infer_ms),
            "infer_ms_p50": infer_ms[len(infer_ms) // 2], "infer_ms_max": infer_ms[-1], "stage_ms_mean": stages}


def step_latency(size: str, work: Path, ctx: dict, args) -> dict:
    out = work / f"{size}-latency.json"
    run(["-m", "benchmarks.latency", "--bundle", str(ctx["bundle"]), "--backend", "trt", "--steps", str(args.steps),
         "--warmup", "5", "--no-memory", "--json", str(out)], args.timeout)
    entry = next(iter(json.loads(out.read_text())["runtime"].values()))
    return {"stages_ms": {k: v["mean"] for k, v in entry["stages"].items()},
            "end_to_end_ms": entry["stages"]["end_to_end"], "control_rate_hz": entry["control_rate_hz"]}


def step_prepared(bundle: Path, ctx: dict) -> dict:
    """--bundle: a bundle exported elsewhere, copied so the engines are built into the copy."""
    ctx["bundle"] = bundle
    return {"skipped": f"exported on another machine: {bundle}",
            "bundle_bytes": sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())}


NO_TORCH = "skipped: no PyTorch on this machine (--bundle); compare the engines on the exporting machine instead"


def check_size(size: str, work: Path, args, bundle: Path | None = None) -> dict:
    ctx: dict = {}
    plan = [("export", lambda: step_export(size, work, ctx) if bundle is None else step_prepared(bundle, ctx)),
            ("build_engines", lambda: step_build(size, work, ctx, args)),
            ("verify_trt", lambda: step_verify(size, work, ctx, args) if bundle is None else {"skipped": NO_TORCH}),
            ("drive", lambda: step_drive(size, work, ctx, args)),
            ("latency", lambda: step_latency(size, work, ctx, args))]
    results = {}
    for name, fn in plan:
        needs = [] if name == "export" else ["export"] if name == "build_engines" else ["export", "build_engines"]
        if not all(results[n]["ok"] for n in needs):
            results[name] = {"ok": False, "seconds": 0.0, "error": "skipped: an earlier step failed"}
            continue
        start = time.perf_counter()
        try:
            results[name] = {"ok": True, **fn()}
        except Exception as e:  # recorded, and the run goes on: one JSON says what works and what does not
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()[-3000:]}
        results[name]["seconds"] = round(time.perf_counter() - start, 3)
        log.info("%-8s %-20s %s %.1f s", size, name, "OK" if results[name]["ok"] else "FAIL", results[name]["seconds"])
    return {"steps": results}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write")
    ap.add_argument("--sizes", nargs="+", choices=SIZES, default=default_sizes(),
                    help="which sizes to export and check (default here: %(default)s; the real size only with "
                         f"{REAL_SIZE_MEMORY / 1e9:.0f} GB of memory or more)")
    ap.add_argument("--bundle", type=Path,
                    help="check this bundle (exported elsewhere, e.g. for a Jetson) instead of exporting --sizes")
    ap.add_argument("--steps", type=int, default=50, help="drive and latency steps per run")
    ap.add_argument("--work", type=Path, help="where bundles and logs go (default: a temp folder)")
    ap.add_argument("--workspace-gb", type=float, default=default_workspace_gb(),
                    help="TensorRT builder memory pool in GiB (default: this board's rule, runtime.policy.engines)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per subprocess step (drive, latency)")
    ap.add_argument("--build-timeout", type=float, default=1800,
                    help="seconds per engine build (the real language engine takes minutes on a desktop GPU)")
    add_log_level_argument(ap)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.steps < 1:
        raise SystemExit("error: --steps must be at least 1")
    work = args.work or Path(tempfile.mkdtemp(prefix="mvla-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
              "args": {"sizes": args.sizes, "steps": args.steps, "workspace_gb": args.workspace_gb}, "sizes": {}}
    try:
        result["gpu"] = gpu()
    except Exception as e:
        result["gpu"] = None
        result["error"] = f"no usable CUDA device: {e}"
    start = time.perf_counter()
    if result["gpu"] is not None and args.bundle is not None:
        copy = work / args.bundle.resolve().name
        shutil.copytree(args.bundle, copy, dirs_exist_ok=True)
        preset = json.loads((copy / "bundle.json").read_text())["model"]["preset"]
        result["sizes"][preset] = check_size(preset, work, args, bundle=copy)
    elif result["gpu"] is not None:
        for size in args.sizes:
            result["sizes"][size] = check_size(size, work, args)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["ok"] = result["gpu"] is not None and all(
        s["ok"] for size in result["sizes"].values() for s in size["steps"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'all steps passed' if result['ok'] else 'some steps FAILED'}; figures in {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
