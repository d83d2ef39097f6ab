"""Replayed cameras: a video file, a folder of images, an HDF5 episode, handed out one frame per read.

    cam = open_camera("run.mp4") / open_camera("frames/") / open_camera("episode.h5")   # runtime/cameras/select.py
    python -m runtime.drive --bundle bundle/ --dry-run --camera episode.h5 --max-steps 18

Frames come in order, stamped when read, and `EndOfStream` ends the replay
(the drive loop then ends normally). An episode is read by the episode
reader (runtime/recording/episodes.py), in the channel order it was written.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from runtime.hardware import Camera, CameraError, EndOfStream, Frame

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class ReplaySource(Camera):
    """Frames from memory, one per read; subclasses load them."""

    def __init__(self, frames, name: str):
        self.frames, self.name = frames, name
        self.index = 0

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, timeout: float = 0.5) -> Frame:
        if self.index >= len(self.frames):
            raise EndOfStream(f"{self.name}: end of replay after {self.index} frames")
        image = np.ascontiguousarray(self.frames[self.index])
        frame = Frame(image, time.monotonic(), self.index)
        self.index += 1
        return frame

    def disconnect(self) -> None:
        pass


def image_folder(path: Path) -> ReplaySource:
    import cv2  # noqa: PLC0415  cv2: only the sources that decode images

    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CameraError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")

    class _Lazy:
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            image = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if image is None:
                raise CameraError(f"{files[i]}: not a readable image")
            return image

    return ReplaySource(_Lazy(), str(path))


def video_file(path: Path) -> ReplaySource:
    import cv2  # noqa: PLC0415  cv2: only the sources that decode images

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CameraError(f"{path}: OpenCV cannot open this video")
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    if not frames:
        raise CameraError(f"{path}: no frames could be decoded")
    return ReplaySource(frames, str(path))


def hdf5_episode(path: Path) -> ReplaySource:
    """The collector's `images` dataset (T, H, W, 3) uint8, BGR as it was written."""
    from runtime.recording.episodes import (  # noqa: PLC0415  replay only; drive start-up
        EpisodeFileError,
        read_episode_arrays,
    )

    try:
        images, _, _ = read_episode_arrays(path, need_actions=False)
    except EpisodeFileError as e:
        raise CameraError(str(e)) from e
    return ReplaySource(images, str(path))

