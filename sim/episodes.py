"""Write episodes in the robot collector's HDF5 layout (docs/episode-format.md), with h5py.

    from sim.episodes import write_episode
    write_episode(Path("ep.h5"), images_bgr, actions, instruction="go to the bottle on the left")

One file per episode, datasets gzip-compressed:
- `images` uint8 (T, H, W, 3), BGR as OpenCV captured them
- `actions` float32 (T, 3) = (linear_x, linear_y, angular_z), +-1.15 per move
- `action_event_types` utf-8 strings: episode_start, start_action, stop_action
- `language_instruction` (1,) bytes S256, optional (added after collection)
- attributes: episode_name, total_duration, num_frames, action_chunk_size,
  obstacle_layout_type, time_period, collection_datetime, collection_hour,
  collection_minute
Used by the synthetic demonstrations and the tests, so they produce exactly
what the real collector produced. The robot only reads episodes
(runtime/episodes.py, the HDF5 replay camera); writing them is not robot code.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np


def write_episode(path: Path, images: np.ndarray, actions: np.ndarray, instruction: str | None = None,
                  event_types=None, layout: str = "synthetic", step_seconds: float = 0.4,
                  when: dt.datetime | None = None, action_chunk_size: int = 8) -> Path:
    import h5py

    images = np.asarray(images, dtype=np.uint8)
    actions = np.asarray(actions, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (T, H, W, 3), got {images.shape}")
    if actions.shape != (len(images), 3):
        raise ValueError(f"actions must be ({len(images)}, 3), got {actions.shape}")
    if event_types is None:
        event_types = ["episode_start"] + ["start_action"] * (len(images) - 1)
    when = when or dt.datetime(2025, 1, 1, 12, 0, 0)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=images, compression="gzip", compression_opts=4)
        f.create_dataset("actions", data=actions, compression="gzip")
        f.create_dataset("action_event_types", data=np.array(event_types, dtype=object),
                         dtype=h5py.string_dtype("utf-8"), compression="gzip")
        if instruction is not None:
            f.create_dataset("language_instruction", data=np.array([instruction.encode()], dtype="S256"))
        f.attrs.update({
            "episode_name": path.stem, "total_duration": float(len(images) * step_seconds),
            "num_frames": len(images), "action_chunk_size": action_chunk_size,
            "obstacle_layout_type": layout, "time_period": "day" if 6 <= when.hour < 18 else "night",
            "collection_datetime": when.isoformat(), "collection_hour": when.hour,
            "collection_minute": when.minute,
        })
    tmp.replace(path)
    return path
