"""The robot collector's HDF5 episode layout (REFERENCE.md section 2), written and read with h5py only.

    write_episode(Path("ep.h5"), images_bgr, actions, instruction="go to the bottle on the left")

One file per episode, datasets gzip-compressed:
- `images` uint8 (T, H, W, 3), BGR as OpenCV captured them
- `actions` float32 (T, 3) = (linear_x, linear_y, angular_z), +-1.15 per move
- `action_event_types` utf-8 strings: episode_start, start_action, stop_action
- `language_instruction` (1,) bytes S256, optional (added after collection)
- attributes: episode_name, total_duration, num_frames, action_chunk_size,
  obstacle_layout_type, time_period, collection_datetime, collection_hour,
  collection_minute
Used by the synthetic demonstrations, the tests and the HDF5 replay camera, so
they all produce exactly what the real collector produced.

The author's later collector wrote another layout, recognised by the readers
(`episode_layout`): images under `observations/images` in RGB, actions float64
(T, 3) with rotations of +-0.20, five stop frames at the end, attributes
`scenario`, `pattern`, `distance`, no `action_event_types`. The channel order
comes from the layout; a file that looks like neither is refused with what
differs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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


class EpisodeFileError(ValueError):
    """An episode file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class EpisodeLayout:
    name: str  # "collector" (REFERENCE.md section 2) or "later-collector"
    images_key: str  # dataset path of the frames
    channel_order: str  # of the stored frames
    needs_event_types: bool  # whether `action_event_types` is part of the layout


COLLECTOR = EpisodeLayout("collector", "images", "bgr", True)
LATER_COLLECTOR = EpisodeLayout("later-collector", "observations/images", "rgb", False)
LATER_ATTRS = ("scenario", "pattern", "distance")


def episode_layout(f, path: Path) -> EpisodeLayout:
    """Which collector wrote this open h5py file; refuses a file that is neither, naming what differs."""
    has_images = "images" in f
    has_obs = "observations" in f and hasattr(f["observations"], "keys") and "images" in f["observations"]
    if has_images and has_obs:
        raise EpisodeFileError(f"{path}: has both 'images' (collector) and 'observations/images' (later collector); "
                               f"cannot tell which frames to use")
    if has_obs:
        missing = [a for a in LATER_ATTRS if a not in f.attrs]
        if missing:
            raise EpisodeFileError(
                f"{path}: frames under 'observations/images' as the later collector writes them, but its attributes "
                f"{', '.join(missing)} are missing (found: {', '.join(sorted(f.attrs)) or 'none'}); the channel order "
                f"of such a file is unknown, so it is not read")
        return LATER_COLLECTOR
    if has_images:
        return COLLECTOR
    raise EpisodeFileError(f"{path}: no 'images' (collector) or 'observations/images' (later collector) dataset "
                           f"(keys: {', '.join(sorted(f.keys()))})")


def read_episode_arrays(path: Path, need_actions: bool = True) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(images (T, H, W, 3) uint8 BGR as a camera gives them, actions (T, 3) float32 or None, instruction or None).
    Either collector's layout (`episode_layout`); the later collector's RGB frames are returned as BGR."""
    try:
        import h5py
    except ImportError as e:
        raise EpisodeFileError("reading .h5 episodes needs h5py (pip install h5py)") from e
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            layout = episode_layout(f, path)
            if need_actions and "actions" not in f:
                raise EpisodeFileError(f"{path}: no 'actions' dataset (keys: {', '.join(f.keys())})")
            images = f[layout.images_key][()]
            actions = np.asarray(f["actions"][()], np.float32) if "actions" in f else None
            instruction = None
            if "language_instruction" in f:
                raw = f["language_instruction"][()]
                raw = raw[0] if np.ndim(raw) else raw
                instruction = raw.decode() if isinstance(raw, bytes) else str(raw)
    except OSError as e:
        raise EpisodeFileError(f"{path}: not a readable HDF5 file: {e}") from e
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise EpisodeFileError(f"{path}: '{layout.images_key}' must be (T, H, W, 3) uint8, got {images.shape} "
                               f"{images.dtype}")
    if layout.channel_order == "rgb":
        images = np.ascontiguousarray(images[..., ::-1])  # callers get the camera's order (BGR) from every layout
    if actions is not None and (actions.ndim != 2 or len(actions) != len(images)):
        raise EpisodeFileError(f"{path}: 'actions' must be ({len(images)}, 3), got {actions.shape}")
    return images, actions, instruction
