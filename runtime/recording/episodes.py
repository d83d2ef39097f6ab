"""Read an episode in the robot collector's HDF5 layout (docs/episode-format.md): the replay camera's source.

    images, actions, instruction = read_episode_arrays(Path("ep.h5"))
    record = read_episode_record(Path("ep.h5"))   # + event types, capture times, take-over flags, attributes

h5py is imported when a file is read, so `import runtime.drive` never loads it.
The writer (the recorder, synthetic demonstrations, tests) is
runtime/recording/episode_writer.py; the training reader with every check is train/data.py.

The author's later collector wrote another layout, recognised by the readers
(`episode_layout`): images under `observations/images` in RGB, actions float64
(T, 3) with rotations of +-0.20, five stop frames at the end, attributes
`scenario`, `pattern`, `distance`, no `action_event_types`. The channel order
comes from the layout; a file that looks like neither is refused with what
differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class EpisodeFileError(ValueError):
    """An episode file that cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class EpisodeLayout:
    name: str  # "collector" (docs/episode-format.md) or "later-collector"
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


def read_episode_arrays(path: Path, need_actions: bool = True, allow_incomplete: bool = False
                        ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(images (T, H, W, 3) uint8 BGR as a camera gives them, actions (T, 3) float32 or None, instruction or None).
    Either collector's layout (`episode_layout`); the later collector's RGB frames are returned as BGR. A recorder
    file whose `complete` is False (stopped before its end) is refused unless `allow_incomplete`."""
    try:
        import h5py  # noqa: PLC0415  h5py: optional on the robot; a clear error without it
    except ImportError as e:
        raise EpisodeFileError("reading .h5 episodes needs h5py (pip install h5py)") from e
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            layout = episode_layout(f, path)
            if "complete" in f.attrs and not bool(f.attrs["complete"]) and not allow_incomplete:
                raise EpisodeFileError(f"{path}: recorded but never finished (complete=False); check it and keep it "
                                       f"with `python -m train.data recover` first")
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


@dataclass
class EpisodeRecord:
    """Everything an episode file holds, for a person to look at (train.data view) or to convert (LeRobot)."""

    path: Path
    images: np.ndarray  # (T, H, W, 3) uint8 BGR, as a camera gives them (either layout)
    actions: np.ndarray  # (T, 3) float32 (linear_x, linear_y, angular_z)
    instruction: str | None  # None when the file has none
    events: list[str]  # action_event_types, or "" per frame when the layout has none
    capture_time: np.ndarray | None  # (T,) s (recorder files), None otherwise
    intervention: np.ndarray | None  # (T,) bool (recorder files), None otherwise
    attrs: dict

    @property
    def frame_spacing_s(self) -> float:
        """The spacing the recorder states, else the collector's one frame per 0.4 s move."""
        return float(self.attrs.get("frame_spacing_s", 0.4))

    def times(self) -> np.ndarray:
        """(T,) seconds from the first frame: the capture times when recorded, else frames x spacing."""
        if self.capture_time is not None and len(self.capture_time) == len(self.images):
            return np.asarray(self.capture_time, np.float64) - float(self.capture_time[0])
        return np.arange(len(self.images)) * self.frame_spacing_s


def read_episode_record(path: Path) -> EpisodeRecord:
    """The frames, actions and instruction (read_episode_arrays) plus the event types, capture times, take-over
    flags and attributes; a dataset of the wrong length is refused naming it."""
    import h5py  # noqa: PLC0415  h5py: optional on the robot; read_episode_arrays said so already if missing

    path = Path(path)
    images, actions, instruction = read_episode_arrays(path)
    frames = len(images)
    with h5py.File(path, "r") as f:
        extras = {}
        for key in ("action_event_types", "capture_time", "intervention"):
            if key in f:
                extras[key] = f[key][()]
                if len(extras[key]) != frames:
                    raise EpisodeFileError(f"{path}: '{key}' has {len(extras[key])} entries for {frames} frames")
        attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.attrs.items()}
    raw = extras.get("action_event_types")
    events = [e.decode() if isinstance(e, bytes) else str(e) for e in raw] if raw is not None else [""] * frames
    flags = extras.get("intervention")
    return EpisodeRecord(path, images, actions, instruction.strip("\0 ") if instruction else None, events,
                         extras.get("capture_time"), None if flags is None else np.asarray(flags, bool), attrs)
