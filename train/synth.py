"""Synthetic demonstrations in exactly the collector's HDF5 layout, for tests and demos.

    python -m train.synth --episodes 40 --out episodes/ --task blocks

Task `blocks`: a coloured block sits in a textured scene for a whole episode
(its place and size jitter from frame to frame). Its colour says where to go:
red -> linear_y = +1.15 (left), blue -> -1.15 (right); its size says how
far: small (far) -> linear_x = +1.15, large (near) -> 0. The action is a
simple function of the image, so a policy that learns must look. Colour and
size, not the block's position, carry the signal because the tiny preset's
random, frozen vision tower pools patches almost uniformly and keeps little
of *where* things are; a pretrained Kosmos-2 has no such limit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from runtime.episodes import write_episode

MOVE = 1.15  # the collector's discrete move magnitude
BLOCK_INSTRUCTION = "move as the block colour says"


def blocks_frame(rng: np.random.Generator, left: bool, far: bool, height: int, width: int) -> np.ndarray:
    """`left` picks the colour (red: go left, blue: go right), `far` the size."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.uniform(60, 160, 3)
    img = base + 25 * np.sin(xx[..., None] / rng.uniform(5, 15)) * np.cos(yy[..., None] / rng.uniform(5, 15))
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    size = int((0.18 if far else 0.38) * min(height, width) * rng.uniform(0.85, 1.15))
    cx = int(width * rng.uniform(0.25, 0.75))
    cy = int(height * rng.uniform(0.35, 0.65))
    color = (30, 30, 220) if left else (220, 60, 30)  # BGR: red / blue
    cv2.rectangle(img, (cx - size // 2, cy - size // 2), (cx + size // 2, cy + size // 2), color, -1)
    return img


def blocks_episode(rng: np.random.Generator, frames: int = 18, height: int = 96, width: int = 128):
    left, far = bool(rng.integers(2)), bool(rng.integers(2))
    images = np.stack([blocks_frame(rng, left, far, height, width) for _ in range(frames)])
    actions = np.zeros((frames, 3), np.float32)
    actions[:, 0] = MOVE if far else 0.0
    actions[:, 1] = MOVE if left else -MOVE
    return images, actions


def write_blocks_episodes(out: Path, episodes: int, seed: int = 0, frames: int = 18, height: int = 96,
                          width: int = 128) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(episodes):
        images, actions = blocks_episode(rng, frames, height, width)
        paths.append(write_episode(out / f"episode_{i:04d}.h5", images, actions, instruction=BLOCK_INSTRUCTION,
                                   layout="blocks"))
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task", choices=("blocks",), default="blocks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=18)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    args = ap.parse_args(argv)
    paths = write_blocks_episodes(args.out, args.episodes, args.seed, args.frames, args.height, args.width)
    print(f"wrote {len(paths)} episodes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
