"""Does batching robots' frames pay? The policy server's engine, batched against one frame at a time. Measured.

    python -m benchmarks.serve_batching --preset tiny --robots 8                 # exports a bundle with batch graphs
    python -m benchmarks.serve_batching --bundle bundle/ --robots 8 --window-ms 2 --backend ort-cuda   # on a GPU
    python -m benchmarks.serve_batching --preset small --robots 4 --frames 10 --json batching.json

R robots, each a thread that submits its next frame as soon as the previous
one is answered (the server saturated), through `serve.engine.Engine`:

- one by one: the bundle's batch-1 graphs, `--workers` threads (what
  `python -m serve` runs by default);
- batched: the batch graphs (`export.to_onnx --serve-batch B`), up to R
  frames per call, waiting up to `--window-ms` for them, one worker per
  `--workers`.

The two run by turns (`--repeats` rounds each; medians), so a shared
machine's load weighs on both alike. Prints frames per second and ms per
frame both ways and the speed-up, and
checks that a batched frame's feature is bit-identical to the same frame run
alone through the batch graphs (and within the fp32 tolerance of the batch-1
graphs). `--preset` exports a bundle of the preset (random weights: timing
does not depend on them) with batch graphs to a temporary folder; `--bundle`
needs one exported with `--serve-batch`. docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from runtime.cameras.sample_frames import sample_frames
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.registry import make_backend
from runtime.policy.bundle import load_bundle
from serve.engine import Engine, EngineConfig, Job


def export_preset(preset: str, out: Path, max_batch: int) -> Path:
    from export.to_onnx import ExportOptions, export_bundle  # noqa: PLC0415  torch: --preset only
    from train.config import preset_config  # noqa: PLC0415  torch: --preset only
    from train.model import build_model, load_tokenizer  # noqa: PLC0415  torch: --preset only

    config = preset_config(preset)
    return export_bundle(build_model(config), load_tokenizer(config), out / preset,
                         ExportOptions(origin=f"preset:{preset}", serve_batch=max_batch, engine_input=False,
                                       verify_seeds=(0,)))


def saturate(engine: Engine, jobs: list[list[Job]]) -> tuple[float, list]:
    """Each robot submits its jobs one after the other, as fast as they are answered: (seconds, results)."""
    results: list = [None] * len(jobs)

    def robot(i):
        out = []
        for job in jobs[i]:
            out.append(engine.submit(job).result(600)[0])
        results[i] = out

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(len(jobs))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, results


def make_jobs(engine: Engine, robots: int, frames: int) -> list[list[Job]]:
    ids, mask = engine.prompt_ids(None)
    return [[Job(engine.pixels(np.ascontiguousarray(f[..., ::-1])), ids, mask)
             for f in sample_frames(frames, seed=100 + r, height=240, width=320)] for r in range(robots)]


def measure(bundle_dir: Path, backend: str, robots: int, frames: int, window_ms: float, workers: int,
            repeats: int) -> dict:
    bundle = load_bundle(bundle_dir)
    batch = bundle.manifest.get("serving_batch")
    if not batch:
        raise SystemExit(f"{bundle_dir}: no batch graphs; export with --serve-batch {robots} (or use --preset)")
    robots = min(robots, int(batch["max_batch"]))
    configs = {"one_by_one": EngineConfig(backend, workers=workers),
               "batched": EngineConfig(backend, workers=workers, max_batch=robots, batch_window_ms=window_ms)}
    engines = {name: Engine(bundle, config) for name, config in configs.items()}
    seconds: dict = {name: [] for name in engines}
    try:
        for engine in engines.values():
            saturate(engine, make_jobs(engine, robots, 2))  # warm every shape
            engine.batches.clear()
        for _ in range(repeats):  # the two by turns: this machine's load weighs on both alike
            for name, engine in engines.items():
                jobs = make_jobs(engine, robots, frames)
                took, results = saturate(engine, jobs)
                seconds[name].append(took)
        batched = engines["batched"]
        with make_backend(bundle, backend, batched=True) as alone, make_backend(bundle, backend) as one:
            pairs = [(job, feature) for r in range(robots) for job, feature in zip(jobs[r], results[r])][:16]
            same = max(float(np.abs(f - alone.encode_frames(j.pixels, j.input_ids, j.attention_mask)).max())
                       for j, f in pairs)
            static = max(float(np.abs(f - one.encode_frame(j.pixels, j.input_ids, j.attention_mask)).max())
                         for j, f in pairs)
        mean_batch = round(float(np.mean(batched.batches)), 2)
    finally:
        for engine in engines.values():
            engine.close()
    figures = {name: {"ms_per_frame": round(float(np.median(s)) / (robots * frames) * 1e3, 2),
                      "frames_per_s": round(robots * frames / float(np.median(s)), 1)} for name, s in seconds.items()}
    figures["batched"].update(mean_batch=mean_batch, batched_vs_alone_max_abs=same, vs_batch1_graphs_max_abs=static)
    return {"bundle": str(bundle_dir), "backend": backend, "robots": robots, "frames_each": frames,
            "window_ms": window_ms, "workers": workers, "repeats": repeats, **figures,
            "speedup": round(figures["one_by_one"]["ms_per_frame"] / figures["batched"]["ms_per_frame"], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="a bundle exported with --serve-batch")
    source.add_argument("--preset", choices=("tiny", "small"), help="export this preset with batch graphs first")
    ap.add_argument("--backend", default="ort-cpu", help="ort-cpu, ort-cuda (a GPU), ort-trt")
    ap.add_argument("--robots", type=int, default=8, help="robots submitting at once (= the batch size)")
    ap.add_argument("--frames", type=int, default=40, help="frames each robot submits")
    ap.add_argument("--window-ms", type=float, default=2.0, help="the batching window")
    ap.add_argument("--workers", type=int, default=1, help="worker threads, both ways")
    ap.add_argument("--repeats", type=int, default=5, help="rounds of each, by turns (medians reported)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    with tempfile.TemporaryDirectory(prefix="mvla-batch-") as tmp:
        bundle = args.bundle or export_preset(args.preset, Path(tmp), args.robots)
        r = measure(bundle, args.backend, args.robots, args.frames, args.window_ms, args.workers, args.repeats)
    if args.preset:
        r["bundle"] = f"preset:{args.preset}"
    one, batched = r["one_by_one"], r["batched"]
    print(f"{r['robots']} robots, {args.backend}: one by one {one['ms_per_frame']:.2f} ms/frame "
          f"({one['frames_per_s']:.0f} frames/s), batched {batched['ms_per_frame']:.2f} ms/frame "
          f"({batched['frames_per_s']:.0f} frames/s, mean batch {batched['mean_batch']:.1f}): x{r['speedup']:.2f}; "
          f"batched vs alone max |d| {batched['batched_vs_alone_max_abs']:.1e}, vs the batch-1 graphs "
          f"{batched['vs_batch1_graphs_max_abs']:.1e}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
