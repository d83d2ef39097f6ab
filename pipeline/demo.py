"""The whole pipeline on the embedded tiny model, in the simulated room: no robot, camera, GPU or download.

    python -m pipeline --out demo        # (what `make demo` runs; about 4 minutes on 2 cores)

1. demonstrations: the scripted expert drives around the box to the bottle in
   200 random rooms, written in the robot collector's HDF5 layout
   (`sim.synth`), plus 20 held-out ones from other rooms;
2. fine-tunes tiny Mobile-VLA on them with LoRA (`train.fit`, Lightning);
3. merges the LoRA weights (`train.merge`);
4. exports the bundle (fp32, fp16 and int8) and checks it against PyTorch
   (`export.to_onnx`);
5. offline accuracy on the held-out recordings, the variants against each
   other and against a random policy (`sim.evaluate --episodes DIR`);
6. closed loop on 50 rooms it has never seen, next to a random policy and the
   expert (`sim.evaluate --episodes 50`), with the trajectories plotted;
7. drives one simulated episode live through the real serial driver and the
   controller emulator, with the status line (`sim.drive`).

Each stage calls the library function under its command (`train.fit.fit`,
`train.merge.merge_checkpoint`, `export.to_onnx.export_bundle`,
`sim.evaluate.evaluate`); the live drive runs `python -m sim.drive` as a user
would, with the bundle's driving record as its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from runtime.logs import add_log_level_argument, setup_logging
from sim.evaluate import EvaluationSpec, evaluate
from sim.synth import write_sim_episodes

log = logging.getLogger("pipeline.demo")


def fit_options(data: Path, epochs: int, out: Path, name: str = "sim", progress: bool = True):
    """The recipe `make demo` trains with (why each value: docs/evaluation.md): tiny, chunk 4, a batch of 2
    whole episodes (~20 windows), no LoRA dropout; the head's 1e-3 and LoRA's 2e-5 are train.fit's defaults."""
    from train.fit import FitOptions  # noqa: PLC0415  torch, lightning: seconds; not for --help

    return FitOptions(data=data, preset="tiny", chunk=4, lora_dropout=0.0, batch_size=2, max_epochs=epochs,
                      out=out, name=name, progress=progress)


def step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--episodes", type=int, default=200, help="demonstrations to train on")
    ap.add_argument("--held-out", type=int, default=20, help="recorded episodes kept for the offline check")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--eval-episodes", type=int, default=50, help="unseen rooms for the closed loop")
    ap.add_argument("--drive-seed", type=int, default=1, help="the room driven live at the end")
    ap.add_argument("--workers", type=int, default=2, help="processes rendering demonstrations")
    ap.add_argument("--no-progress", action="store_true")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    t0 = time.perf_counter()
    total = 7
    out = args.out


    episodes, held_out = out / "episodes", out / "held_out"
    write_sim_episodes(episodes, args.episodes, seed=0, workers=args.workers, progress=not args.no_progress)
    write_sim_episodes(held_out, args.held_out, seed=1, workers=args.workers)
    step(1, total, f"{args.episodes} expert demonstrations -> {episodes}, {args.held_out} held out -> {held_out} "
                   f"({time.perf_counter() - t0:.0f} s)")

    from train.fit import fit  # noqa: PLC0415  torch, lightning: seconds; not for --help

    runs = out / "runs"
    step(2, total, f"fine-tuning tiny with LoRA for {args.epochs} epochs (Lightning) ...")
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # Lightning's banners; the progress bar is on stderr
        result = fit(fit_options(episodes, args.epochs, runs, progress=not args.no_progress))
    print(f"      val loss {result.first_val_loss:.3f} -> {result.best_val_loss:.3f} "
          f"in {time.perf_counter() - t:.0f} s on {result.accelerator}; curves {result.curves}")

    from train.merge import merge_checkpoint  # noqa: PLC0415  torch: seconds; not for --help

    merged = out / "checkpoint"
    merge_checkpoint(result.best, merged, overwrite=True)
    step(3, total, f"merged LoRA into the base -> {merged}")

    from export.to_onnx import ExportOptions, export_bundle  # noqa: PLC0415  torch: seconds; not for --help
    from train.checkpoint import load_checkpoint  # noqa: PLC0415  torch: seconds; not for --help

    model, tokenizer, meta = load_checkpoint(merged)
    options = ExportOptions(origin=str(merged), overwrite=True, fp16=True, int8=True, int8_scope="ffn")
    bundle_dir = export_bundle(model, tokenizer, out / "bundle", options, ckpt_meta=meta)
    from export.verify import format_report  # noqa: PLC0415  torch: seconds; not for --help

    variants = json.loads((bundle_dir / "bundle.json").read_text())["variants"]
    print("      " + format_report({v: r["parity"] for v, r in variants.items()}).replace("\n", "\n      "))
    step(4, total, f"bundle exported and verified -> {bundle_dir}")


    step(5, total, "offline: the bundle on the held-out recordings, frame by frame")
    report = evaluate(EvaluationSpec(bundle=bundle_dir, episodes=str(held_out), json=out / "offline.json"))
    print(report["table"])
    step(6, total, f"closed loop: {args.eval_episodes} rooms the policy has never seen")
    closed = evaluate(EvaluationSpec(bundle=bundle_dir, episodes=str(args.eval_episodes),
                                     json=out / "closed_loop.json", progress=not args.no_progress))
    print(closed["table"])

    step(7, total, f"driving simulated room {args.drive_seed} live: serial driver -> controller emulator (pty)")
    # mode, snapping and move duration: the bundle's driving record (what the evaluation above used)
    drive = [sys.executable, "-m", "sim.drive", "--bundle", str(bundle_dir), "--seed", str(args.drive_seed),
             "--dead-zone", "0.1", "--max-steps", "25", "--log", str(out / "drive.jsonl")]
    code = subprocess.call(drive)
    if code:
        return code
    results = {r["policy"]: r for r in closed["results"]}
    print(f"\ndone in {time.perf_counter() - t0:.0f} s. Closed-loop success: policy "
          f"{results['policy']['success_rate']:.2f}, random {results['random']['success_rate']:.2f}, "
          f"expert {results['expert']['success_rate']:.2f}")
    print(f"  trajectories  {closed.get('plot')}")
    print(f"  offline       {report.get('plot')}")
    print(f"  curves        {result.curves}")
    print(f"  bundle        {bundle_dir}")
    print(f"next: python -m sim.drive --bundle {bundle_dir} --seed 7 --dead-zone 0.1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
