"""The end-to-end demo on the embedded tiny model: no robot, no camera, no downloads (about 2 minutes).

    python -m export.demo --out demo        # (what `make demo` runs)

1. writes 20 synthetic demonstrations in the robot collector's HDF5 layout
   (`train.synth`: a red block means "move left", a blue one "move right"),
2. fine-tunes the tiny Mobile-VLA on them with LoRA (`train.fit`, Lightning),
3. merges the LoRA weights (`train.merge`),
4. exports the bundle and checks it against PyTorch (`export.to_onnx`),
5. runs the robot's runtime on that bundle (ONNX Runtime, no torch in the
   loop) over fresh camera frames, printing the velocity it would send, the
   per-stage latency and how often it moved the demonstrated way.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    from train.synth import BLOCK_INSTRUCTION, blocks_frame, write_blocks_episodes

    episodes = args.out / "episodes"
    write_blocks_episodes(episodes, args.episodes, seed=0, frames=8)
    print(f"[1/5] {args.episodes} demonstrations -> {episodes}")

    from train import fit

    runs = args.out / "runs"
    print(f"[2/5] fine-tuning tiny with LoRA for {args.epochs} epochs (Lightning) ...")
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet):  # Lightning's banners; the progress bar is not needed here
        code = fit.main(["--data", str(episodes), "--preset", "tiny", "--window", "4", "--chunk", "4",
                         "--lr", "3e-3", "--lora-dropout", "0", "--max-epochs", str(args.epochs),
                         "--out", str(runs), "--name", "blocks", "--no-progress"])
    if code:
        print(quiet.getvalue()[-3000:])
        return code

    from train.merge import merge_checkpoint

    merged = args.out / "checkpoint"
    merge_checkpoint(runs / "blocks" / "checkpoints" / "best", merged, overwrite=True)
    print(f"[3/5] merged LoRA into the base -> {merged}")

    from export.to_onnx import export_bundle
    from train.checkpoint import load_checkpoint

    model, tokenizer, meta = load_checkpoint(merged)
    bundle_dir = export_bundle(model, tokenizer, args.out / "bundle", meta, source=str(merged), overwrite=True,
                               progress=lambda s: print("      " + s.replace("\n", "\n      ")))
    print(f"[4/5] bundle exported and verified -> {bundle_dir}")

    from runtime.backends.registry import make_backend
    from runtime.bundle import load_bundle
    from runtime.policy import Policy

    bundle = load_bundle(bundle_dir)
    rng = np.random.default_rng(2024)
    agree = 0
    with make_backend(bundle, "auto") as backend:
        policy = Policy(bundle, backend, instruction=BLOCK_INSTRUCTION)
        print(f"[5/5] runtime on {backend.describe()}, instruction {policy.instruction!r}")
        print(f"      {'step':>4} {'block':>5} {'linear_x':>9} {'linear_y':>9}   "
              f"{'prep':>6} {'vision':>7} {'lang':>7} {'head':>6} ms")
        for step in range(args.steps):
            if step % 4 == 0:
                policy.reset()  # a new "episode" every 4 frames, with a new block
                left, far = bool(rng.integers(2)), bool(rng.integers(2))
            out = policy.infer(blocks_frame(rng, left, far, 96, 128))
            t = {k: 1e3 * v for k, v in out.timings.items()}
            vx, vy = out.action[:2]
            agree += (vy > 0) == left
            print(f"      {step:>4} {'red' if left else 'blue':>5} {vx:>9.3f} {vy:>9.3f}   {t['preprocess']:>6.1f} "
                  f"{t['vision']:>7.1f} {t['language']:>7.1f} {t['head']:>6.1f}")
    assert np.isfinite(out.action).all()
    print(f"moved the demonstrated way (red: left, blue: right) on {agree}/{args.steps} frames")
    print(f"done in {time.perf_counter() - t0:.0f} s: training curves {runs / 'blocks' / 'curves.png'}, "
          f"checkpoint {merged}, bundle {bundle_dir}")
    print(f"next: python -m runtime.drive --bundle {bundle_dir} --dry-run --camera {episodes}/episode_0000.h5 "
          f"--instruction {BLOCK_INSTRUCTION!r} --mode step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
