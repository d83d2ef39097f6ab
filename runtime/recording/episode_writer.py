"""Write episodes in the collector's HDF5 layout (docs/episode-format.md), frame by frame or all at once.

    with EpisodeWriter(Path("rec/episode_0003.h5"), instruction="go to the bottle") as ep:
        ep.append(frame.image, (0.5, 0.0, 0.0), captured=frame.stamp, event="start_action")
        ...
        ep.finish()                      # renamed to episode_0003.h5; without finish() it stays .partial

    write_episode(Path("ep.h5"), images_bgr, actions, instruction="...")   # whole arrays (synthetic data, tests)

Nothing half-written under a final name: frames go into `.NAME.partial`
(hidden, and not an .h5 suffix, so `train.data` never picks it up), flushed
after every frame, and only `finish()` renames it to NAME. A crash or a
SIGKILL leaves the partial file (its frames up to the last flush, attribute
`complete` False); a stop by signal closes it as partial too, so the person
decides whether to keep it (rename it) or re-record.

Datasets (all gzip): `images` uint8 (T, H, W, 3) BGR as the camera gave
them; `actions` float32 (T, 3) body velocity (m/s, m/s, rad/s);
`action_event_types` utf-8; `language_instruction` (1,) S256. Extras old
readers ignore: `capture_time` float64 (T,) (time.monotonic() of each frame's
capture, s), `intervention` uint8 (T,) (1: the person's command, 0: the
policy's). h5py is imported when a file is written, so `import runtime.drive`
never loads it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import re
import threading
from pathlib import Path

import numpy as np

EVENT_TYPES = ("episode_start", "start_action", "stop_action")
PARTIAL_SUFFIX = ".partial"
EPISODE_NAME = "episode_{:04d}.h5"  # the recorder's names; numbers go on across runs (--resume)
EPISODE_PATTERN = re.compile(r"episode_(\d+)\.h5$")


def existing_episodes(folder: Path) -> list[int]:
    """The numbers of the finished episodes in `folder`, sorted."""
    return sorted(int(m.group(1)) for p in Path(folder).glob("episode_*.h5") if (m := EPISODE_PATTERN.match(p.name)))


def partial_path(path: Path) -> Path:
    """Where an episode is written until it is finished: a hidden sibling no reader takes for an episode."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def collection_attrs(name: str, frames: int, duration_s: float, when: dt.datetime, layout: str,
                     action_chunk_size: int) -> dict:
    """The collector's attributes (docs/episode-format.md)."""
    return {
        "episode_name": name, "total_duration": float(duration_s), "num_frames": int(frames),
        "action_chunk_size": int(action_chunk_size), "obstacle_layout_type": layout,
        "time_period": "day" if 6 <= when.hour < 18 else "night", "collection_datetime": when.isoformat(),
        "collection_hour": when.hour, "collection_minute": when.minute,
    }


class EpisodeWriter:
    """One episode written as it is recorded: append frames, then finish (rename) or abandon (stay partial)."""

    def __init__(self, path: Path, instruction: str | None = None, attrs: dict | None = None,
                 compression: int = 4, when: dt.datetime | None = None, layout: str = "recorded",
                 action_chunk_size: int = 8, flush_each_frame: bool = True):
        import h5py  # noqa: PLC0415  h5py: optional on the robot (recording only)

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: an episode of that name exists; recordings are never overwritten "
                                  f"(use --resume to continue a folder's numbering)")
        self.tmp = partial_path(self.path)
        self.when = when or dt.datetime.now()
        self.layout, self.action_chunk_size = layout, action_chunk_size
        self.frames = 0
        self.flush_each_frame = flush_each_frame  # off for whole-array writes: nothing to lose there
        self.first_capture: float | None = None
        self.last_capture: float | None = None
        self._file = h5py.File(self.tmp, "w")
        self._compression = compression
        self._string = h5py.string_dtype("utf-8")
        self._images = None
        f = self._file
        self._actions = f.create_dataset("actions", (0, 3), np.float32, maxshape=(None, 3), chunks=(256, 3),
                                         compression="gzip")
        self._events = f.create_dataset("action_event_types", (0,), self._string, maxshape=(None,), chunks=(256,),
                                        compression="gzip")
        self._captured = f.create_dataset("capture_time", (0,), np.float64, maxshape=(None,), chunks=(256,),
                                          compression="gzip")
        self._intervention = f.create_dataset("intervention", (0,), np.uint8, maxshape=(None,), chunks=(256,),
                                              compression="gzip")
        if instruction is not None:
            f.create_dataset("language_instruction", data=np.array([instruction.encode()], dtype="S256"))
        f.attrs.update(attrs or {})
        f.attrs["complete"] = False
        self._write_attrs()
        f.flush()

    def _write_attrs(self) -> None:
        duration = 0.0 if self.first_capture is None else self.last_capture - self.first_capture
        self._file.attrs.update(collection_attrs(self.path.stem, self.frames, duration, self.when, self.layout,
                                                 self.action_chunk_size))

    def append(self, image: np.ndarray, action, captured: float, event: str | None = None,
               intervention: bool = False) -> None:
        """One frame (H, W, 3) uint8 BGR, the action (vx, vy, wz) stored for it, its capture time."""
        image = np.asarray(image, np.uint8)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{self.path}: a frame must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self._images is None:
            h, w, _ = image.shape
            self._images = self._file.create_dataset("images", (0, h, w, 3), np.uint8, maxshape=(None, h, w, 3),
                                                     chunks=(1, h, w, 3), compression="gzip",
                                                     compression_opts=self._compression)
        elif image.shape != self._images.shape[1:]:
            raise ValueError(f"{self.path}: frame {self.frames} is {image.shape}, the episode's frames are "
                             f"{self._images.shape[1:]}; a camera must not change size within an episode")
        event = event or ("episode_start" if self.frames == 0 else "start_action")
        if event not in EVENT_TYPES:
            raise ValueError(f"event {event!r}: expected one of {', '.join(EVENT_TYPES)}")
        i = self.frames
        for ds in (self._images, self._actions, self._events, self._captured, self._intervention):
            ds.resize(i + 1, axis=0)
        self._images[i] = image
        self._actions[i] = np.asarray(action, np.float32).reshape(3)
        self._events[i] = event
        self._captured[i] = float(captured)
        self._intervention[i] = 1 if intervention else 0
        self.frames += 1
        self.first_capture = captured if self.first_capture is None else self.first_capture
        self.last_capture = captured
        if self.flush_each_frame:
            self._write_attrs()
            self._file.flush()  # a SIGKILL after this keeps the frame in the partial file

    def set_attrs(self, **attrs) -> None:
        """Attributes learnt while recording (e.g. the measured frame spacing)."""
        self._file.attrs.update(attrs)

    def has_attr(self, name: str) -> bool:
        return name in self._file.attrs

    def finish(self, duration_s: float | None = None) -> Path:
        """Close and rename to the final name. An episode without frames is refused (and left partial)."""
        if self.frames == 0:
            raise ValueError(f"{self.path}: no frames recorded; nothing to save")
        self._write_attrs()
        if duration_s is not None:
            self._file.attrs["total_duration"] = float(duration_s)
        self._file.attrs["complete"] = True
        self._file.close()
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the frames are on disk before the name says the episode is complete
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        return self.path

    def abandon(self, keep: bool = True) -> Path | None:
        """Close without the final name: kept as the partial file (marked incomplete) or deleted."""
        with contextlib.suppress(Exception):
            self._file.close()
        if keep and self.frames:
            return self.tmp
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        return None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._file.id.valid:  # not finished: an error or an early exit leaves it partial
            self.abandon(keep=True)


class BackgroundWriter:
    """An EpisodeWriter fed through a queue: a thread compresses and writes the frames, so the control loop
    never waits on the disk (gzip of one 1280x720 frame takes 120-150 ms on a desktop CPU; HDF5 compresses
    without holding Python's lock, so the loop keeps its rate). `finish` and `abandon` write what is queued
    first. A SIGKILL loses what was still queued (at most `depth` frames) and keeps the rest."""

    def __init__(self, writer: EpisodeWriter, depth: int = 16):
        self.writer = writer
        self.path = writer.path
        self.frames = 0  # accepted (queued or written)
        self.first_capture: float | None = None
        self.last_capture: float | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)  # full: append waits (the disk is too slow)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"writer:{writer.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:
                    self.writer.append(*item)
            except BaseException as e:  # handed to the caller at its next append / finish
                self._error = e
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def append(self, image, action, captured: float, event: str | None = None, intervention: bool = False) -> None:
        self._raise()
        image = np.asarray(image, np.uint8)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{self.path}: a frame must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        self._queue.put((image, tuple(float(v) for v in np.asarray(action).reshape(3)), float(captured), event,
                         bool(intervention)))
        self.frames += 1
        self.first_capture = captured if self.first_capture is None else self.first_capture
        self.last_capture = captured

    def _drain(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def set_attrs(self, **attrs) -> None:
        self._queue.join()
        self.writer.set_attrs(**attrs)

    def has_attr(self, name: str) -> bool:
        self._queue.join()
        return self.writer.has_attr(name)

    def finish(self, duration_s: float | None = None) -> Path:
        self._drain()
        self._raise()
        return self.writer.finish(duration_s)

    def abandon(self, keep: bool = True) -> Path | None:
        self._drain()
        return self.writer.abandon(keep)


def write_episode(path: Path, images: np.ndarray, actions: np.ndarray, instruction: str | None = None,
                  event_types=None, layout: str = "synthetic", step_seconds: float = 0.4,
                  when: dt.datetime | None = None, action_chunk_size: int = 8, capture_times=None,
                  intervention=None) -> Path:
    """A whole episode at once (synthetic demonstrations, tests); `step_seconds` apart unless `capture_times`."""
    images = np.asarray(images, dtype=np.uint8)
    actions = np.asarray(actions, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (T, H, W, 3), got {images.shape}")
    if actions.shape != (len(images), 3):
        raise ValueError(f"actions must be ({len(images)}, 3), got {actions.shape}")
    if event_types is None:
        event_types = ["episode_start"] + ["start_action"] * (len(images) - 1)
    times = np.arange(len(images)) * step_seconds if capture_times is None else np.asarray(capture_times)
    flags = np.zeros(len(images), bool) if intervention is None else np.asarray(intervention, bool)
    path = Path(path)
    path.unlink(missing_ok=True)  # whole-array writes replace (synthetic data is regenerated)
    writer = EpisodeWriter(path, instruction, layout=layout, when=when or dt.datetime(2025, 1, 1, 12, 0, 0),
                           action_chunk_size=action_chunk_size, flush_each_frame=False)
    with writer:
        for i in range(len(images)):
            writer.append(images[i], actions[i], float(times[i]), event_types[i], bool(flags[i]))
        return writer.finish(duration_s=len(images) * step_seconds)
