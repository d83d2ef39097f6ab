"""Camera-like frames made from a seed: texture, edges, lighting, no files.

    from runtime.cameras.sample_frames import sample_frame
    bgr = sample_frame(seed=0, height=720, width=1280)      # (720, 1280, 3) uint8, BGR

Used wherever a real camera is missing but a realistic frame matters: the
preprocessing test (resampling errors only show on edges and texture),
`train.presets.example_inputs`, export parity and the benchmarks.
"""

from __future__ import annotations

import cv2
import numpy as np


def sample_frame(seed: int = 0, height: int = 720, width: int = 1280) -> np.ndarray:
    """A BGR uint8 frame: a lit floor/wall gradient, fine noise texture, boxes and a bottle-like bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.35, 0.55)
    wall = np.array(rng.uniform(120, 220, 3), dtype=np.float32)
    floor = np.array(rng.uniform(40, 140, 3), dtype=np.float32)
    light = 0.75 + 0.25 * np.cos((xx / width - rng.uniform(0.3, 0.7)) * np.pi)
    img = np.where((yy < horizon)[..., None], wall, floor) * light[..., None]
    # Floor tiles give straight edges at many angles after perspective.
    tiles = ((xx // 37 + yy // 23) % 2)[..., None] * rng.uniform(8, 20)
    img += np.where((yy >= horizon)[..., None], tiles, 0.0)
    img += rng.normal(0, 6, img.shape).astype(np.float32)  # sensor-like fine texture
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 5))):
        x0 = int(rng.integers(0, width - width // 6))
        y0 = int(rng.integers(int(horizon) - height // 8, height - height // 5))
        w = int(rng.integers(width // 12, width // 5))
        h = int(rng.integers(height // 10, height // 4))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), color, thickness=-1)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (20, 20, 20), thickness=2)
    bx = int(rng.integers(width // 10, width - width // 10))
    top_left, bottom_right = (bx, int(horizon) - height // 6), (bx + width // 40, int(horizon) + height // 10)
    cv2.rectangle(img, top_left, bottom_right, (30, 160, 40), -1)
    cv2.putText(img, f"{seed}", (width // 20, height // 8), cv2.FONT_HERSHEY_SIMPLEX, height / 300, (250, 250, 250), 2)
    return img


def sample_frames(count: int, seed: int = 0, height: int = 720, width: int = 1280) -> np.ndarray:
    """(count, H, W, 3) uint8: `count` different frames from consecutive seeds."""
    return np.stack([sample_frame(seed + i, height, width) for i in range(count)])
