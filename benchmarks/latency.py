"""Where every millisecond of a control step goes, and how that compares with the alternatives.

    python -m benchmarks.latency --preset tiny                         # builds + exports tiny, seconds
    python -m benchmarks.latency --preset small --compare --variants fp32 int8 --save
    python -m benchmarks.latency --bundle bundle/ --ckpt CKPT --backend trt --compare
    python -m benchmarks.latency --preset kosmos2 --random-weights --steps 20      # real size, no download

Per stage (capture when --camera is given, preprocess from a 1280x720 BGR
frame, vision, language, head, post-processing + safety, serial write to the
controller emulator on a real pty) and end to end: mean, p50, p90, p99, max
and the control rate they allow. `--compare` runs, on the same weights and
frames and alternating step by step so machine drift hits all alike:
- original: PyTorch eager, prompt padded to 256 tokens, one frame per call
  (how the original stack served, docs/original-stack.md);
- eager: PyTorch eager with our prompt layout and the ACT ring, no export;
- naive_window: our runtime, but re-encoding all W frames every step;
- runtime: the bundle on each --backend/--variant with the ACT ring;
and stores ratio_vs_original, ratio_vs_naive, ratio_vs_eager per runtime
entry. Also: peak RSS and start-up time of the runtime alone (a separate
process, no torch) and GPU memory where there is one. Output: a table, JSON
(--json), CSV (--csv), a PNG of the latency distributions (--plot), and
benchmarks/results/<machine>-<date>.json with --save.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from benchmarks.machine import describe, short_name
from plotting import pyplot
from runtime.cameras.sample_frames import sample_frame
from runtime.cameras.select import open_camera
from runtime.cli import CommandError, exits_on
from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.logs import add_log_level_argument, setup_logging
from runtime.motors.serial_controller import SerialMotorController
from runtime.policy.backends.registry import make_backend, resolve_backend_name
from runtime.policy.behaviours import CHUNK_MODES, with_behaviours
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy
from runtime.policy.preprocess import preprocess_with
from runtime.policy.prompt import prompt_length
from runtime.policy.select import BACKENDS, PolicySpec
from train.config import preset_config

log = logging.getLogger(__name__)
STAGES = ("capture", "preprocess", "vision", "language", "head", "post", "serial", "overhead", "end_to_end")
ORIGINAL_PROMPT_TOKENS = 256


def stats(samples_s) -> dict:
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {}
    return {"n": int(ms.size), "mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}


@dataclass(frozen=True)
class BenchmarkSpec:
    bundle: Path | None = None  # measure this bundle; None: build and export `preset` first
    preset: str = "tiny"  # tiny, small or kosmos2, when no bundle is given
    ckpt: Path | None = None  # with a bundle and `compare`: the checkpoint it was exported from (eager paths)
    random_weights: bool = False  # kosmos2 at full size without downloading
    backend: tuple[str, ...] = ("ort-cpu",)  # runtime.policy.select.BACKENDS, each measured
    variants: tuple[str, ...] = ("fp32",)  # ONNX variants for ONNX Runtime backends: fp32 fp16 int8
    chunk_mode: str = PolicySpec.chunk_mode  # the behaviour around the policy, as runtime.drive composes it
    discrete: bool = PolicySpec.discrete  # snap to the demonstrated moves, as runtime.drive --discrete
    steps: int = 30  # measured steps
    warmup: int = 5  # steps run first and not measured (at least W with `compare`: the naive window fills)
    compare: bool = False  # also the original / eager / naive-window paths
    camera: str | None = None  # measure capture too, from this camera (runtime.cameras); None: sample frames
    serial: bool = True  # write each command to the controller emulator on a real pty
    memory: bool = True  # peak RSS and start-up of the runtime alone, in a separate process
    work: Path | None = None  # where a preset's bundle is exported (None: a temp folder)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchmarkSpec:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values.update(backend=tuple(args.backend), variants=tuple(args.variants), serial=not args.no_serial,
                      memory=not args.no_memory, preset=args.preset or cls.preset)
        return cls(**values)


class GraphCalls:
    """Graph runs of a backend since the last reset (Backend.calls counts them where they are timed)."""

    def __init__(self, backend):
        self.backend = backend
        self.base: Counter = Counter()

    def reset(self) -> None:
        self.base = Counter(self.backend.calls)

    @property
    def counts(self) -> dict:
        return {g: self.backend.calls[g] - self.base[g] for g in ("vision", "language", "action_head")}


# ---------------------------------------------------------------------------------- paths
class RuntimePath:
    """The product: bundle + backend + ACT ring + safety + serial write."""

    def __init__(self, bundle, backend, motor=None, chunk_mode: str = "first", discrete: bool = False):
        self.backend = backend
        self.policy = with_behaviours(Policy(bundle, backend), chunk_mode, discrete)  # as runtime.drive composes it
        self.gate = SafetyGate(SafetyConfig())
        self.motor = motor
        self.samples = {s: [] for s in STAGES}
        self.calls = GraphCalls(backend)

    def reset_counts(self) -> None:
        self.calls.reset()

    def step(self, frame, record: bool, capture_s: float = 0.0) -> float:
        t0 = time.perf_counter()
        out = self.policy.infer(frame)
        t1 = time.perf_counter()
        cmd = self.gate.filter(out.action, time.monotonic())
        t2 = time.perf_counter()
        if self.motor is not None:
            self.motor.send_velocity(*cmd)
        t3 = time.perf_counter()
        total = t3 - t0 + capture_s
        if record:
            t = out.timings
            graphs = t["vision"] + t["language"] + t["head"]
            for k in ("preprocess", "vision", "language", "head"):
                self.samples[k].append(t[k])
            self.samples["post"].append(t["post"] + (t2 - t1))
            self.samples["serial"].append(t3 - t2)
            if capture_s:
                self.samples["capture"].append(capture_s)
            self.samples["overhead"].append(total - capture_s - graphs)
            self.samples["end_to_end"].append(total)
        return total


class NaiveWindowPath:
    """Our runtime, but every step re-encodes all W frames (W vision + language calls)."""

    def __init__(self, bundle, backend):
        self.bundle, self.backend, self.pre = bundle, backend, bundle.preprocess
        self.preprocess = preprocess_with
        p = bundle.manifest["prompt"]
        self.ids = np.asarray([p["default_input_ids"]], np.int64)
        self.mask = np.asarray([p["default_attention_mask"]], np.int64)
        self.window: list = []
        self.calls = GraphCalls(backend)

    def reset_counts(self) -> None:
        self.calls.reset()

    def step(self, frame, record: bool, capture_s: float = 0.0) -> float:
        t0 = time.perf_counter()
        self.window = (self.window + [frame])[-self.bundle.window:]
        feats = [self.backend.encode_frame(self.preprocess(self.pre, f)[None], self.ids, self.mask)
                 for f in self.window]
        self.backend.predict_chunk(np.concatenate(feats)[None])
        return time.perf_counter() - t0


class EagerPath:
    """PyTorch eager: one frame per call through vision + language, a ring of features, the head."""

    def __init__(self, model, tokenizer, total_tokens: int):
        import torch  # noqa: PLC0415  torch: the PyTorch baseline only

        from train.model import PromptTensors, make_prompt  # noqa: PLC0415  torch: the PyTorch baseline only

        cfg = model.config
        max_text = total_tokens - prompt_length(cfg.latent_query_num, 0, cfg.prompt_layout)

        self.prompt = PromptTensors.from_prompt(make_prompt(replace(cfg, max_text_tokens=max_text), tokenizer))
        assert self.prompt.input_ids.shape[1] == total_tokens
        self.model, self.torch = model.eval(), torch
        self.pre, self.preprocess = cfg.preprocess_config(), preprocess_with
        self.ring: list = []
        self.vision_calls = 0

    def reset_counts(self) -> None:
        self.vision_calls = 0

    def step(self, frame, record: bool, capture_s: float = 0.0) -> float:
        torch = self.torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = torch.from_numpy(self.preprocess(self.pre, frame)[None])
            feat = self.model.frame_features(pixels, self.prompt)
            self.vision_calls += 1
            self.ring = (self.ring + [feat])[-self.model.config.window:]
            self.model.predict_chunk(torch.stack(self.ring, dim=1))
        return time.perf_counter() - t0


# ------------------------------------------------------------------------------ measuring
def frames_for(spec: BenchmarkSpec, n: int):
    if spec.camera:
        return None
    return [sample_frame(seed=i, height=720, width=1280) for i in range(n)]


def run_alternating(paths: dict, frames, steps: int, warmup: int, camera=None) -> dict:
    """Each step runs every path on the same frame, in rotating order; returns seconds per path."""
    names = list(paths)
    samples = {n: [] for n in names}
    for i in range(warmup + steps):
        if i == warmup:  # count calls in the measured steps only (the naive window is full by then)
            for p in paths.values():
                p.reset_counts()
        capture_s = 0.0
        if camera is not None:
            t = time.perf_counter()
            frame = camera.read(timeout=2.0).image
            capture_s = time.perf_counter() - t
        else:
            frame = frames[i % len(frames)]
        order = names[i % len(names):] + names[: i % len(names)]
        for n in order:
            took = paths[n].step(frame, record=i >= warmup, capture_s=capture_s)
            if i >= warmup:
                samples[n].append(took)
    return samples


def memory_probe(bundle_dir: Path, backend: str, variant: str) -> dict:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.runtime_probe", "--bundle", str(bundle_dir),
                           "--backend", backend, "--variant", variant, "--t0", repr(t0)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_emulator():
    """The controller emulator in its own process (as real hardware would be: no shared GIL)."""
    link = Path(tempfile.mkdtemp(prefix="mvla-motor-")) / "motor"
    proc = subprocess.Popen([sys.executable, "-m", "sim.controller_emulator", "--link", str(link)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not link.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the controller emulator did not start")
        time.sleep(0.02)
    return proc, SerialMotorController(str(link)).connect()


def prepare(spec: BenchmarkSpec):
    """-> (bundle_dir, torch model or None, tokenizer or None)."""
    if spec.bundle:
        model = tok = None
        if spec.compare:
            if not spec.ckpt:
                raise CommandError("--compare with --bundle needs --ckpt (the PyTorch weights for the eager paths)")
            from train.checkpoint import load_checkpoint  # noqa: PLC0415  torch: the PyTorch baseline only

            model, tok, _ = load_checkpoint(spec.ckpt, merge=True)
        return Path(spec.bundle), model, tok
    from export.to_onnx import ExportOptions, export_bundle  # noqa: PLC0415  torch: the PyTorch baseline only
    from train.model import build_model, load_tokenizer  # noqa: PLC0415  torch: the PyTorch baseline only

    cfg = preset_config(spec.preset, random_weights=spec.random_weights)
    model, tok = build_model(cfg), load_tokenizer(cfg)
    out = Path(spec.work or tempfile.mkdtemp(prefix="mvla-bench-")) / f"{spec.preset}-bundle"
    start = time.perf_counter()
    export_bundle(model, tok, out, ExportOptions(
        origin=f"preset:{spec.preset}", int8="int8" in spec.variants,
        engine_input="trt" in spec.backend,  # the fp16-weights build input only matters for engines
        fp16="fp16" in spec.variants, overwrite=True, verify_seeds=(0,), strict_variants=False))
    log.info("exported %s to %s in %.0f s", spec.preset, out, time.perf_counter() - start)
    return out, model, tok


def build_parser() -> argparse.ArgumentParser:
    d = BenchmarkSpec
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--bundle", type=Path)
    src.add_argument("--preset", choices=("tiny", "small", "kosmos2"), default=None,
                     help=f"build and export this preset first (default {d.preset} when no --bundle)")
    ap.add_argument("--ckpt", type=Path, help="with --bundle --compare: the checkpoint it was exported from")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--backend", nargs="+", default=list(d.backend), choices=BACKENDS)
    ap.add_argument("--variants", nargs="+", default=list(d.variants),
                    help="ONNX variants for ORT backends: fp32 fp16 int8")
    ap.add_argument("--chunk-mode", default=d.chunk_mode, choices=CHUNK_MODES,
                    help="the behaviour wrapped around the policy, as runtime.drive --chunk-mode "
                         "(chunk skips the head)")
    ap.add_argument("--discrete", action="store_true",
                    help="snap to the demonstrated moves, as runtime.drive --discrete")
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--warmup", type=int, default=d.warmup)
    ap.add_argument("--compare", action="store_true", help="also run original / eager / naive-window paths")
    ap.add_argument("--camera", help="measure capture too, from this camera spec (see runtime.cameras)")
    ap.add_argument("--no-serial", action="store_true", help="skip the serial write to the controller emulator")
    ap.add_argument("--no-memory", action="store_true", help="skip the separate-process RSS/start-up probe")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/<machine>-<date>.json")
    ap.add_argument("--work", type=Path, help="where --preset exports its bundle (default: a temp folder)")
    add_log_level_argument(ap)
    return ap


def open_paths(spec: BenchmarkSpec, bundle, model, tok, motor, stack) -> tuple[dict, list]:
    """The paths to measure, side by side: one per backend and variant, and the alternatives with `compare`.
    Every backend activated is deactivated by `stack` (a contextlib.ExitStack)."""
    paths, entries = {}, []
    for name in spec.backend:
        resolved = resolve_backend_name(bundle, name)
        for variant in (spec.variants if resolved.startswith("ort") else ["fp16-engine"]):
            if resolved.startswith("ort") and variant not in bundle.variants:
                log.warning("skipping %s:%s: not in the bundle", resolved, variant)
                continue
            backend = stack.enter_context(make_backend(bundle, resolved, variant=variant))
            key = f"{resolved}:{variant}"
            paths[f"runtime:{key}"] = RuntimePath(bundle, backend, motor, spec.chunk_mode, spec.discrete)
            entries.append(key)
    if spec.compare:
        naive_backend = stack.enter_context(make_backend(
            bundle, resolve_backend_name(bundle, spec.backend[0]),
            variant=spec.variants[0] if spec.variants[0] in bundle.variants else "fp32"))
        paths["naive_window"] = NaiveWindowPath(bundle, naive_backend)
        total = bundle.manifest["prompt"]["total_tokens"]
        paths["eager"] = EagerPath(model, tok, total)
        paths["original"] = EagerPath(model, tok, ORIGINAL_PROMPT_TOKENS)
    return paths, entries


def measure(spec: BenchmarkSpec) -> tuple[dict, dict, list, dict]:
    """Run the benchmark. Returns (result, paths, runtime entries, end-to-end seconds per path): the result
    is what --json writes; the rest feeds the plot."""
    info = describe()
    log.info("machine: %s (%s cores), GPU %s, power mode %s, %s", info["cpu"], info["cores"], info["gpu"] or "none",
             info["power_mode"] or "n/a", ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    bundle_dir, model, tok = prepare(spec)
    bundle = load_bundle(bundle_dir)
    if spec.compare and spec.warmup < bundle.window:
        spec = replace(spec, warmup=bundle.window)  # the naive path is only measured once its window is full
    with ExitStack() as stack:
        camera = None
        if spec.camera:
            camera = open_camera(spec.camera)
            stack.callback(camera.disconnect)
        motor = None
        if spec.serial:
            emulator, motor = start_emulator()
            stack.callback(lambda: (emulator.terminate(), emulator.wait(timeout=5)))
            stack.callback(motor.disconnect)
        paths, entries = open_paths(spec, bundle, model, tok, motor, stack)
        samples = run_alternating(paths, frames_for(spec, 8), spec.steps, spec.warmup, camera)
        # GPU memory while the engines are loaded, asked on the backend's own CUDA thread
        gpu_used = [p.backend.device_memory_used_mb() for p in paths.values()
                    if hasattr(getattr(p, "backend", None), "device_memory_used_mb")]

    result = {"machine": info, "created": dt.datetime.now().isoformat(timespec="seconds"),
              "bundle": str(bundle_dir), "preset": None if spec.bundle else spec.preset,
              "steps": spec.steps, "warmup": spec.warmup, "frame": "camera" if spec.camera else [720, 1280],
              "window": bundle.window, "runtime": {}, "compare": {}}
    if spec.bundle:
        result["preset"] = bundle.manifest.get("model", {}).get("preset")
    for key in entries:
        path = paths[f"runtime:{key}"]
        st = {s: stats(v) for s, v in path.samples.items() if v}
        result["runtime"][key] = {"stages": st,
                                  "control_rate_hz": {"mean": 1e3 / st["end_to_end"]["mean"],
                                                      "p99": 1e3 / st["end_to_end"]["p99"]},
                                  "calls_per_step": {g: c / spec.steps for g, c in path.calls.counts.items()}}
    if spec.compare:
        result["compare"] = compare_paths(paths, entries, samples, spec.steps)
        result.update(result["compare"]["ratios"][entries[0]])  # the first backend's ratios at the top level too
    if spec.memory:
        result["memory"] = memory_probe(bundle_dir, spec.backend[0], spec.variants[0])
        if gpu_used:
            result["memory"]["gpu_used_mb"] = max(gpu_used)
    return result, paths, entries, samples


def compare_paths(paths: dict, entries: list, samples: dict, n: int) -> dict:
    comp = {name: stats(v) for name, v in samples.items()}
    calls = {"naive_window": {g: c / n for g, c in paths["naive_window"].calls.counts.items()},
             "eager": {"vision": paths["eager"].vision_calls / n},
             "original": {"vision": paths["original"].vision_calls / n, "prompt_tokens": ORIGINAL_PROMPT_TOKENS}}
    ratios = {}
    for key in entries:
        mine = comp[f"runtime:{key}"]["mean"]
        ratios[key] = {"ratio_vs_original": mine / comp["original"]["mean"],
                       "ratio_vs_naive": mine / comp["naive_window"]["mean"],
                       "ratio_vs_eager": mine / comp["eager"]["mean"]}
    return {"paths": comp, "calls_per_step": calls, "ratios": ratios}


@exits_on()
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    result, paths, entries, samples = measure(BenchmarkSpec.from_args(args))
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.csv:
        write_csv(result, args.csv)
    if args.plot:
        plot(paths, entries, args.plot, samples)
    if args.save:
        out = Path(__file__).parent / "results" / f"{short_name(result['machine'])}-{dt.date.today().isoformat()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {out}")
    return 0


def format_table(result: dict) -> str:
    lines = []
    for key, entry in result["runtime"].items():
        lines.append(f"\n{key}  (ms; W={result['window']}, frame {result['frame']})")
        lines.append(f"{'stage':<12}{'mean':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
        for stage in STAGES:
            s = entry["stages"].get(stage)
            if s:
                lines.append(f"{stage:<12}" + "".join(f"{s[k]:>9.2f}" for k in ("mean", "p50", "p90", "p99", "max")))
        r = entry["control_rate_hz"]
        lines.append(f"control rate {r['mean']:.1f} Hz at the mean, {r['p99']:.1f} Hz at p99")
    if result.get("compare"):
        c = result["compare"]
        lines.append(f"\n{'path':<26}{'mean':>9}{'p50':>9}{'p99':>9}   calls/step")
        for name, s in c["paths"].items():
            calls = c["calls_per_step"].get(name) or result["runtime"].get(name.removeprefix("runtime:"), {}).get(
                "calls_per_step", {})
            lines.append(f"{name:<26}{s['mean']:>9.2f}{s['p50']:>9.2f}{s['p99']:>9.2f}   "
                         + ", ".join(f"{k} {v:g}" for k, v in calls.items()))
        for key, r in c["ratios"].items():
            lines.append(f"{key}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    if result.get("memory"):
        m = result["memory"]
        if "error" in m:
            lines.append(f"memory probe failed: {m['error']}")
        else:
            lines.append(f"\nruntime process: peak RSS {m['peak_rss_mb']:.0f} MB, start-up to first action "
                         f"{m['startup_s']:.2f} s, torch loaded: {bool(m['heavy_modules'])}")
    return "\n".join(lines)


def write_csv(result: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["entry", "stage", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "n"])
        for key, entry in result["runtime"].items():
            for stage, s in entry["stages"].items():
                w.writerow([f"runtime:{key}", stage] + [round(s[k], 4) for k in ("mean", "p50", "p90", "p99", "max")]
                           + [s["n"]])
        for name, s in result.get("compare", {}).get("paths", {}).items():
            w.writerow([name, "end_to_end"] + [round(s[k], 4) for k in ("mean", "p50", "p90", "p99", "max")] + [s["n"]])


def plot(paths: dict, entries: list, out: Path, end_to_end: dict) -> None:
    """ECDFs: per stage for the first runtime entry; end to end for every path (`end_to_end`: seconds)."""
    plt = pyplot()
    if plt is None:
        return

    compare = len(paths) > 1
    fig, axes = plt.subplots(1, 2 if compare else 1, figsize=(12 if compare else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    first = paths[f"runtime:{entries[0]}"]
    for stage in STAGES:
        v = np.sort(np.asarray(first.samples[stage]) * 1e3)
        if v.size:
            ax.plot(v, np.linspace(0, 1, v.size), label=stage)
    ax.set_xscale("log")
    ax.set_title(f"per stage, {entries[0]}")
    if compare:
        ax2 = axes[0][1]
        for name in paths:
            v = np.sort(np.asarray(end_to_end[name])) * 1e3
            if v.size:
                ax2.plot(v, np.linspace(0, 1, v.size), label=name)
        ax2.set_xscale("log")
        ax2.set_title("end to end, side by side")
    for a in axes[0]:
        a.set_xlabel("latency (ms, log)")
        a.set_ylabel("fraction of steps")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
