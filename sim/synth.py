"""Synthetic demonstrations in exactly the collector's HDF5 layout, for tests and demos.

    python -m sim.synth --episodes 200 --out episodes/                  # the simulated room (default)
    python -m sim.synth --episodes 40 --out episodes/ --task blocks     # the one-look block task

Task `sim` (sim/world.py, sim/task.py): a room with a box and a
beverage bottle; the scripted expert passes the box on the side the
instruction names ("Navigate around obstacles and reach the front of the
beverage bottle on the left/right") and stops in front of the bottle, in the
collector's discrete moves (+-1.15 on x and/or y for 0.4 s, one frame per
move), ending with `--stop-frames` frames of a zero action. Layout seeds are
1_000_000 + 10_000 * seed + i, so they never meet `sim.evaluate`'s
(10_000 * seed + i, seed < 100). `--noise P` executes a random move instead of
the expert's with probability P while still recording the expert's move for
that frame: the demonstrations then show how to recover from drifting off
the expert's path, which a policy in closed loop needs (DART, Laskey 2017).
Frames are rendered at --width x --height (the rig's 1280x720 works; 256x144
is 20x faster and the model sees 224x224 either way).

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
import multiprocessing
from pathlib import Path

import cv2
import numpy as np

from runtime.logs import add_log_level_argument, setup_logging
from sim.episodes import write_episode
from sim.task import MOVE, ScriptedExpert, instruction_for, random_decider, rollout
from sim.world import random_layout, render

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


def sim_episode(layout_seed: int, noise: float = 0.0, stop_frames: int = 2, width: int = 256, height: int = 144,
                max_steps: int = 40):
    """(images, actions, instruction, success) of one expert demonstration in a random room."""
    layout = random_layout(layout_seed)
    expert = ScriptedExpert(layout)
    noisy = random_decider(layout_seed)
    rng = np.random.default_rng(layout_seed)
    labels = []

    def demonstrate(frame, pose):
        move = expert(frame, pose)
        labels.append(move)
        if any(move) and rng.random() < noise:
            random_move = noisy(frame, pose)
            return random_move if any(random_move) else move
        return move

    result = rollout(layout, demonstrate, max_steps=max_steps, width=width, height=height, record=True,
                     seed=layout_seed)
    images = [image for image, _ in result.frames]
    actions = list(labels)
    if result.ended_by == "stop":
        pose = result.path[-1]
        for k in range(stop_frames):  # the stop, seen again with fresh sensor noise
            images.append(render(layout, pose, width, height, seed=layout_seed * 1000 + 900 + k))
            actions.append(np.zeros(3, np.float32))
    return np.stack(images), np.stack(actions).astype(np.float32), instruction_for(layout.side), result.success


def sim_layout_seed(seed: int, i: int) -> int:
    return 1_000_000 + 10_000 * seed + i


def _sim_job(job):
    layout_seed, noise, width, height = job
    return sim_episode(layout_seed, noise, width=width, height=height)


def write_sim_episodes(out: Path, episodes: int, seed: int = 0, noise: float = 0.2, width: int = 256,
                       height: int = 144, progress: bool = False, workers: int = 1) -> list[Path]:
    """Expert demonstrations that end stopped in front of the bottle; noisy ones that collide are skipped.
    `workers` > 1 renders in that many processes; the files are the same either way (seeded per layout)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    bar = _progress(episodes, "demonstrations") if progress else None
    pool = None
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(workers)
    next_seed = 0
    try:
        while len(paths) < episodes:  # in blocks: a few noisy demonstrations collide and are redone
            block = [(sim_layout_seed(seed, i), noise, width, height)
                     for i in range(next_seed, next_seed + episodes - len(paths) + 4)]
            next_seed += len(block)
            results = pool.imap(_sim_job, block) if pool else map(_sim_job, block)
            for images, actions, instruction, success in results:
                if not success or len(paths) == episodes:
                    continue  # a random move ran it into something: not a demonstration
                side = instruction.rsplit(" ", 1)[-1]
                paths.append(write_episode(out / f"episode_{len(paths):04d}.h5", images, actions,
                                           instruction=instruction, layout=f"sim-{side}"))
                if bar is not None:
                    bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()
    return paths


def _progress(total: int, unit: str):
    try:
        from tqdm import tqdm  # noqa: PLC0415  tqdm: optional (train extra); the progress bar only
    except ImportError:
        return None
    return tqdm(total=total, unit=" " + unit, leave=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task", choices=("sim", "blocks"), default="sim")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=18, help="blocks: frames per episode")
    ap.add_argument("--noise", type=float, default=0.2, help="sim: probability of a random executed move")
    ap.add_argument("--workers", type=int, default=1, help="sim: rendering processes")
    ap.add_argument("--height", type=int, help="image height (sim 144, blocks 96)")
    ap.add_argument("--width", type=int, help="image width (sim 256, blocks 128)")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    if args.task == "sim":
        paths = write_sim_episodes(args.out, args.episodes, args.seed, args.noise, args.width or 256,
                                   args.height or 144, progress=True, workers=args.workers)
    else:
        paths = write_blocks_episodes(args.out, args.episodes, args.seed, args.frames, args.height or 96,
                                      args.width or 128)
    print(f"wrote {len(paths)} episodes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
