"""The end-to-end demo on the embedded tiny model: no robot, no camera, no downloads.

    python -m export.demo --out demo        # (what `make demo` runs)

Builds the `tiny` Mobile-VLA from a seed, saves a checkpoint, exports the
bundle (three ONNX graphs, verified against PyTorch), then runs the robot's
runtime on that bundle over camera-like 1280x720 frames and prints the
velocities it would send with per-stage latency. The weights are random, so
the motion means nothing yet; training on demonstrations (`train.fit`) is
what makes it drive.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args(argv)

    from export.to_onnx import export_bundle
    from train.checkpoint import save_checkpoint
    from train.config import preset_config
    from train.model import build_model, load_tokenizer

    t0 = time.perf_counter()
    cfg = preset_config("tiny")
    model, tokenizer = build_model(cfg), load_tokenizer(cfg)
    total, trainable = model.parameter_counts()
    ckpt = save_checkpoint(model, args.out / "checkpoint", tokenizer, overwrite=True)
    print(f"[1/3] tiny Mobile-VLA: {total:,} parameters ({trainable:,} trainable) -> {ckpt}")
    bundle_dir = export_bundle(model, tokenizer, args.out / "bundle", source=str(ckpt), overwrite=True,
                               progress=lambda s: print("      " + s.replace("\n", "\n      ")))
    print(f"[2/3] bundle exported and verified -> {bundle_dir}")

    from runtime.backends.registry import make_backend
    from runtime.bundle import load_bundle
    from runtime.policy import Policy
    from runtime.sample_frames import sample_frame

    bundle = load_bundle(bundle_dir)
    with make_backend(bundle, "auto") as backend:
        policy = Policy(bundle, backend)
        print(f"[3/3] runtime on {backend.describe()}, instruction: {policy.instruction!r}")
        print(f"      {'step':>4} {'linear_x':>9} {'linear_y':>9}   {'prep':>6} {'vision':>7} {'lang':>7} {'head':>6} ms")
        for step in range(args.steps):
            out = policy.infer(sample_frame(seed=step, height=720, width=1280))
            t = {k: 1e3 * v for k, v in out.timings.items()}
            vx, vy = out.action[:2]
            print(f"      {step:>4} {vx:>9.3f} {vy:>9.3f}   {t['preprocess']:>6.1f} {t['vision']:>7.1f} "
                  f"{t['language']:>7.1f} {t['head']:>6.1f}")
    assert np.isfinite(out.action).all()
    print(f"done in {time.perf_counter() - t0:.1f} s: checkpoint {ckpt}, bundle {bundle_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
