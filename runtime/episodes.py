"""Read an episode in the robot collector's HDF5 layout (REFERENCE.md section 2): the replay camera's source.

    images, actions, instruction = read_episode_arrays(Path("ep.h5"))

h5py is imported when a file is read, so `import runtime.drive` never loads it.
The writer (synthetic demonstrations, tests) is sim/episodes.py; the training
reader with every check is train/data.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class EpisodeFileError(ValueError):
    """An episode file that cannot be read; the message names the file and the problem."""


def read_episode_arrays(path: Path, need_actions: bool = True) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(images (T, H, W, 3) uint8 as stored, actions (T, 3) float32 or None, instruction or None)."""
    try:
        import h5py
    except ImportError as e:
        raise EpisodeFileError("reading .h5 episodes needs h5py (pip install h5py)") from e
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("images", "actions")[: 2 if need_actions else 1] if k not in f]
            if missing:
                raise EpisodeFileError(f"{path}: no {', '.join(repr(k) for k in missing)} dataset "
                                       f"(keys: {', '.join(f.keys())})")
            images = f["images"][()]
            actions = np.asarray(f["actions"][()], np.float32) if "actions" in f else None
            instruction = None
            if "language_instruction" in f:
                raw = f["language_instruction"][()]
                raw = raw[0] if np.ndim(raw) else raw
                instruction = raw.decode() if isinstance(raw, bytes) else str(raw)
    except OSError as e:
        raise EpisodeFileError(f"{path}: not a readable HDF5 file: {e}") from e
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise EpisodeFileError(f"{path}: 'images' must be (T, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if actions is not None and (actions.ndim != 2 or len(actions) != len(images)):
        raise EpisodeFileError(f"{path}: 'actions' must be ({len(images)}, 3), got {actions.shape}")
    return images, actions, instruction
