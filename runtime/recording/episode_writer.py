"""Write episodes in the collector's HDF5 layout (docs/episode-format.md), frame by frame or all at once.

    with EpisodeWriter(Path("rec/episode_0003.h5"), instruction="go to the bottle") as ep:
        ep.append(frame.image, (0.5, 0.0, 0.0), captured=frame.stamp, event="start_action")
        ...
        ep.finish()                      # renamed to episode_0003.h5; without finish() it stays .partial

    write_episode(Path("ep.h5"), images_bgr, actions, instruction="...")   # whole arrays (synthetic data, tests)
    path = folder / EPISODE_NAME.format(next_episode_number(folder))        # the next number nothing uses yet

Nothing half-written under a final name, and nothing recorded ever
overwritten: frames go into `.NAME.partial` (hidden, and not an .h5 suffix,
so `train.data` never picks it up), flushed after every frame, and only
`finish()` renames it to NAME. A writer refuses a name whose episode or
partial file exists, and `next_episode_number` counts finished, partial and
set-aside (`.dropped`) episodes, so a crashed episode's partial file is kept
until the person decides (`python -m train.data recover`, or delete it). A
crash or a SIGKILL leaves the partial file (its frames up to the last flush,
attribute `complete` False); a stop by signal closes it as partial too.

A full disk: while recording, a spare file (`.NAME.spare`, 16 MiB) holds room
for the episode's last metadata. A write that fails (h5py raises RuntimeError
or OSError; ENOSPC: the disk is full) raises `EpisodeWriteError` naming the
file and the frame; the spare file is then released so the partial file can
still be closed cleanly with the frames written before (HDF5 cannot close a
file whose metadata it cannot flush, and the process would crash at exit).
The recorder also stops before the disk is full (runtime/recording/recorder.py,
`--min-free-gb`).

Datasets: `images` uint8 (T, H, W, 3) BGR as the camera gave them, one
frame per chunk, compressed as `frame_compression` says (gzip as the
collector, lzf or none for fast continuous recording: `default_compression`);
`actions` float32 (T, 3) body velocity (m/s, m/s, rad/s);
`action_event_types` utf-8; `language_instruction` (1,) S256. Extras old
readers ignore: `capture_time` float64 (T,) (time.monotonic() of each frame's
capture, s), `intervention` uint8 (T,) (1: the person's command, 0: the
policy's). h5py is imported when a file is written, so `import runtime.drive`
never loads it. A writer thread that keeps the control loop off the disk:
runtime/recording/background_writer.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import re
from pathlib import Path

import numpy as np

EVENT_TYPES = ("episode_start", "start_action", "stop_action")
PARTIAL_SUFFIX = ".partial"
SPARE_SUFFIX = ".spare"
DROPPED_SUFFIX = ".dropped"  # an episode set aside by `python -m train.data drop` (rename back to undo)
EPISODE_NAME = "episode_{:04d}.h5"  # the recorder's names; numbers go on across runs (--resume)
EPISODE_PATTERN = re.compile(r"episode_(\d+)\.h5$")
ANY_EPISODE_PATTERN = re.compile(r"\.?episode_(\d+)\.h5(?:\.partial|\.dropped)?$")  # finished, partial, set aside
SPARE_BYTES = 16 << 20  # room held back for the episode's last frame and metadata when the disk fills up
# The collector's `time_period`: the hour of the episode's end in four six-hour bands
TIME_PERIODS = ((0, "dawn"), (6, "morning"), (12, "evening"), (18, "night"))
# Compression of the frames: gzip's cost at 1280x720 does not fit a 10 Hz recording on 2 cores (docs/recording.md)
COMPRESSIONS = ("gzip", "gzip:N (0-9)", "lzf", "none")


class EpisodeWriteError(OSError):
    """A frame could not be written (the disk is full, the file system failed); names the file and the frame."""


def existing_episodes(folder: Path) -> list[int]:
    """The numbers of the finished episodes in `folder`, sorted."""
    return sorted(int(m.group(1)) for p in Path(folder).glob("episode_*.h5") if (m := EPISODE_PATTERN.match(p.name)))


def partial_episodes(folder: Path) -> list[Path]:
    """The unfinished episodes (`.episode_NNNN.h5.partial`) in `folder`, sorted."""
    return sorted(Path(folder).glob(f".episode_*.h5{PARTIAL_SUFFIX}"))


def next_episode_number(folder: Path) -> int:
    """One after every number in use in `folder`: finished, partial and set-aside episodes, so a new episode
    never takes the name of a crashed one's partial file."""
    numbers = [int(m.group(1)) for p in Path(folder).glob("*episode_*.h5*") if (m := ANY_EPISODE_PATTERN.match(p.name))]
    return max(numbers) + 1 if numbers else 0


def partial_path(path: Path) -> Path:
    """Where an episode is written until it is finished: a hidden sibling no reader takes for an episode."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def time_period(when: dt.datetime) -> str:
    """The collector's label of the hour: dawn (0-6 h), morning (6-12), evening (12-18), night (18-24)."""
    return [name for start, name in TIME_PERIODS if when.hour >= start][-1]


def collection_attrs(name: str, frames: int, duration_s: float, when: dt.datetime, layout: str,
                     action_chunk_size: int) -> dict:
    """The collector's attributes (docs/episode-format.md); `when` is the episode's end, as the collector wrote."""
    return {
        "episode_name": name, "total_duration": float(duration_s), "num_frames": int(frames),
        "action_chunk_size": int(action_chunk_size), "obstacle_layout_type": layout,
        "time_period": time_period(when), "collection_datetime": when.isoformat(),
        "collection_hour": when.hour, "collection_minute": when.minute,
    }


def frame_compression(value) -> dict:
    """`--compression` -> h5py's keyword arguments for the frames: "gzip" (level 4, the collector's), "gzip:N" or
    a bare level N (0-9), "lzf" (h5py's own fast filter: 3x cheaper than gzip, frames ~20 % larger) or "none"."""
    text = str(value).strip().lower()
    if text in ("none", "off"):
        return {}
    if text == "lzf":
        return {"compression": "lzf"}
    level = text.split(":", 1)[1] if text.startswith("gzip:") else "4" if text == "gzip" else text
    if level.isdigit() and 0 <= int(level) <= 9:
        return {"compression": "gzip", "compression_opts": int(level)}
    raise ValueError(f"--compression {value!r}: expected one of {', '.join(COMPRESSIONS)}")


def default_compression(frame_spacing_s: float) -> str:
    """The compression a frame spacing affords on a 2-core robot computer, with a 3x margin: gzip (~100 ms per
    1280x720 frame, measured in docs/recording.md) from 0.3 s apart, lzf (~35 ms) from 0.1 s, none closer."""
    if frame_spacing_s >= 0.3:
        return "gzip"
    return "lzf" if frame_spacing_s >= 0.1 else "none"


def _reason(error: BaseException) -> str:
    text = str(error)
    if getattr(error, "errno", None) == errno.ENOSPC or "errno = 28" in text or "No space left" in text:
        return "the disk is full (No space left on device)"
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


class EpisodeWriter:
    """One episode written as it is recorded: append frames, then finish (rename) or abandon (stay partial)."""

    def __init__(self, path: Path, instruction: str | None = None, attrs: dict | None = None,
                 compression="gzip", when: dt.datetime | None = None, layout: str = "recorded",
                 action_chunk_size: int = 8, flush_each_frame: bool = True, spare_bytes: int = SPARE_BYTES):
        import h5py  # noqa: PLC0415  h5py: optional on the robot (recording only)

        self.path = Path(path)
        self.tmp = partial_path(self.path)
        for existing in (self.path, self.tmp):
            if existing.exists():
                raise FileExistsError(f"{existing}: an episode of that name exists; recordings are never overwritten "
                                      f"(runtime.record numbers new episodes after every finished and partial one)")
        self._storage = frame_compression(compression)
        self.when = when  # None: the time of each write, so a finished episode carries its end (the collector's)
        self.layout, self.action_chunk_size = layout, action_chunk_size
        self.frames = 0
        self.flush_each_frame = flush_each_frame  # off for whole-array writes: nothing to lose there
        self.first_capture: float | None = None
        self.last_capture: float | None = None
        self.error: EpisodeWriteError | None = None  # the first write that failed; the file is then only closed
        self.spare = self.path.with_name(f".{self.path.name}{SPARE_SUFFIX}") if spare_bytes else None
        if self.spare is not None:
            self._hold_spare(spare_bytes)
        try:
            self._file = h5py.File(self.tmp, "x")  # "x": fails if it exists, never truncates a partial file
        except (OSError, RuntimeError) as e:
            self._release_spare()
            raise EpisodeWriteError(f"{self.tmp}: cannot create the episode: {_reason(e)}") from e
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

    # -- the spare room for a full disk ------------------------------------------------------------
    def _hold_spare(self, size: int) -> None:
        try:
            fd = os.open(self.spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # left by a killed recorder: ours to reuse
            fd = os.open(self.spare, os.O_WRONLY)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            os.close(fd)
            self._release_spare()
            raise EpisodeWriteError(f"{self.spare}: cannot hold {size >> 20} MiB for the episode: {_reason(e)}") from e
        os.close(fd)

    def _release_spare(self) -> None:
        if self.spare is not None:
            with contextlib.suppress(FileNotFoundError):
                self.spare.unlink()

    # -- frames ------------------------------------------------------------------------------------
    def _write_attrs(self) -> None:
        duration = 0.0 if self.first_capture is None else self.last_capture - self.first_capture
        self._file.attrs.update(collection_attrs(self.path.stem, self.frames, duration, self.when or dt.datetime.now(),
                                                 self.layout, self.action_chunk_size))

    def append(self, image: np.ndarray, action, captured: float, event: str | None = None,
               intervention: bool = False) -> None:
        """One frame (H, W, 3) uint8 BGR, the action (vx, vy, wz) stored for it, its capture time."""
        if self.error is not None:
            raise self.error
        image = np.asarray(image, np.uint8)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{self.path}: a frame must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self._images is not None and image.shape != self._images.shape[1:]:
            raise ValueError(f"{self.path}: frame {self.frames} is {image.shape}, the episode's frames are "
                             f"{self._images.shape[1:]}; a camera must not change size within an episode")
        event = event or ("episode_start" if self.frames == 0 else "start_action")
        if event not in EVENT_TYPES:
            raise ValueError(f"event {event!r}: expected one of {', '.join(EVENT_TYPES)}")
        i = self.frames
        try:
            if self._images is None:
                h, w, _ = image.shape
                self._images = self._file.create_dataset("images", (0, h, w, 3), np.uint8, maxshape=(None, h, w, 3),
                                                         chunks=(1, h, w, 3), **self._storage)
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
        except (OSError, RuntimeError) as e:
            self.frames = i  # the frames before it are the episode's
            self.error = EpisodeWriteError(
                f"{self.tmp}: frame {i} could not be written: {_reason(e)}; the {i} frames before it stay in that "
                f"partial file")
            raise self.error from e

    def set_attrs(self, **attrs) -> None:
        """Attributes learnt while recording (e.g. the measured frame spacing)."""
        self._file.attrs.update(attrs)

    def has_attr(self, name: str) -> bool:
        return name in self._file.attrs

    # -- the end -----------------------------------------------------------------------------------
    def _close(self) -> bool:
        """Close the file; after a failed write, with the spare room released first so the close can flush."""
        if not self._file.id.valid:
            return True
        if self.error is not None:
            self._release_spare()
        try:
            self._file.close()
        except (OSError, RuntimeError):
            self._release_spare()
            try:
                self._file.close()
            except (OSError, RuntimeError):
                return False
        if self.error is not None:
            self._drop_failed_row()
        return True

    def _drop_failed_row(self) -> None:
        """After a failed write: the row made for the failed frame goes, so the partial file holds exactly the
        frames written (HDF5 refuses to shrink the dataset whose chunk failed until the file is opened again)."""
        import h5py  # noqa: PLC0415  h5py: optional on the robot (recording only)

        with contextlib.suppress(OSError, RuntimeError, KeyError), h5py.File(self.tmp, "r+") as f:
            for key in ("images", "actions", "action_event_types", "capture_time", "intervention"):
                if key in f and f[key].shape[0] > self.frames:
                    f[key].resize(self.frames, axis=0)
            f.attrs["num_frames"] = self.frames

    def finish(self, duration_s: float | None = None, **attrs) -> Path:
        """Close and rename to the final name (after storing `attrs`). An episode without frames is refused (and left
        partial), as is one whose writes failed."""
        if self.error is not None:
            raise self.error
        if self.frames == 0:
            raise ValueError(f"{self.path}: no frames recorded; nothing to save")
        try:
            self._write_attrs()
            if duration_s is not None:
                self._file.attrs["total_duration"] = float(duration_s)
            self._file.attrs.update(attrs)
            self._file.attrs["complete"] = True
            self._file.close()
        except (OSError, RuntimeError) as e:
            self.error = EpisodeWriteError(f"{self.tmp}: the episode could not be closed: {_reason(e)}; its "
                                           f"{self.frames} frames stay in that partial file")
            with contextlib.suppress(OSError, RuntimeError):
                self._file.attrs["complete"] = False
            self._close()
            raise self.error from e
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the frames are on disk before the name says the episode is complete
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        self._release_spare()
        return self.path

    def abandon(self, keep: bool = True, **attrs) -> Path | None:
        """Close without the final name: kept as the partial file (marked incomplete, `attrs` stored) or deleted."""
        if self._file.id.valid and self.error is None:
            with contextlib.suppress(OSError, RuntimeError):
                self._file.attrs.update(attrs)
        closed = self._close()
        self._release_spare()
        if keep and (self.frames or not closed):
            return self.tmp
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        return None

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._file.id.valid:  # not finished: an error or an early exit leaves it partial
            self.abandon(keep=True)


def write_episode(path: Path, images: np.ndarray, actions: np.ndarray, instruction: str | None = None,
                  event_types=None, layout: str = "synthetic", step_seconds: float = 0.4,
                  when: dt.datetime | None = None, action_chunk_size: int = 8, capture_times=None,
                  intervention=None, attrs: dict | None = None, compression="gzip") -> Path:
    """A whole episode at once (synthetic demonstrations, tests); `step_seconds` apart unless `capture_times`.
    It replaces an episode of that name (synthetic data is regenerated)."""
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
    path.unlink(missing_ok=True)
    partial_path(path).unlink(missing_ok=True)
    writer = EpisodeWriter(path, instruction, attrs=attrs, layout=layout, compression=compression,
                           when=when or dt.datetime(2025, 1, 1, 12, 0, 0), action_chunk_size=action_chunk_size,
                           flush_each_frame=False, spare_bytes=0)
    with writer:
        for i in range(len(images)):
            writer.append(images[i], actions[i], float(times[i]), event_types[i], bool(flags[i]))
        return writer.finish(duration_s=len(images) * step_seconds)
