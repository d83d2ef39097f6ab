"""An episode written behind the control loop: a thread compresses and writes the frames; the loop never waits.

    writer = BackgroundWriter(partial(EpisodeWriter, path, instruction, compression="lzf"), path=path)  # made there
    if not writer.append(frame.image, action, frame.stamp, event):   # never blocks
        ...                                                           # dropped: the disk is too slow (counted)
    mean, spread = writer.spacing()                                   # of the frames accepted, s
    writer.finish(duration_s=12.3, frame_spacing_s=mean)              # what is queued first, then renamed
    future = writer.finish_later(duration_s=12.3)                     # the same behind the loop: a Future

The control loop hands a frame over and goes on: HDF5 compresses and writes
without holding Python's lock, so the loop keeps its rate (measured: a control
loop's p99 within a few ms of not recording, docs/recording.md). When the
queue is full (the disk or the compression cannot keep up), the frame is
dropped, never waited for: `append` returns False, `dropped` counts it, a
warning says so, and the episode stores `dropped_frames` (the recorder shows
the count on its status line). A SIGKILL loses what was still queued (at
most `depth` frames) and keeps the rest. A write error (a full disk) is handed
to the caller at its next `append` or at `finish` (runtime/recording/episode_writer.py,
`EpisodeWriteError`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from runtime.recording.episode_writer import EpisodeWriter

log = logging.getLogger(__name__)


class BackgroundWriter:
    """An EpisodeWriter fed through a bounded queue by the control loop, written by its own thread.

    `writer` is an EpisodeWriter, or a function that makes one (`functools.partial(EpisodeWriter, path, ...)`), with
    `path`: it is then made on the writer's thread too, so the loop never calls h5py, whose one global lock a
    writer thread holds for a whole frame's compression (a new episode's file, made on the loop while the last
    one's frames were still written, cost a tick 145 ms at 1280x720 with gzip). A failure to make it (a file of
    that name, a full disk) is handed to the caller at its next `append` or at `finish`."""

    def __init__(self, writer: EpisodeWriter | Callable[[], EpisodeWriter], depth: int = 16, path: Path | None = None):
        self._make = None if isinstance(writer, EpisodeWriter) else writer
        self.writer = writer if self._make is None else None
        self.path = Path(path) if path is not None else writer.path
        self.depth = depth  # frames queued at most (16 frames of 1280x720: 44 MB)
        self.frames = 0  # accepted (queued or written)
        self.dropped = 0  # refused because the queue was full
        self.captures: list[float] = []  # capture times of the accepted frames: the measured spacing
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"writer:{self.path.name}", daemon=True)
        self._thread.start()

    @property
    def first_capture(self) -> float | None:
        return self.captures[0] if self.captures else None

    @property
    def last_capture(self) -> float | None:
        return self.captures[-1] if self.captures else None

    def _run(self) -> None:
        if self._make is not None:
            try:
                self.writer = self._make()
            except BaseException as e:  # handed to the caller at its next append / finish
                self._error = e
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

    @property
    def error(self) -> BaseException | None:
        """The write error waiting for the caller (a full disk), if any."""
        return self._error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def append(self, image, action, captured: float, event: str | None = None, intervention: bool = False) -> bool:
        """Queue a frame; False (and counted in `dropped`) when the queue is full. Never blocks."""
        self._raise()
        image = np.asarray(image, np.uint8)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"{self.path}: a frame must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        try:
            self._queue.put_nowait((image, tuple(float(v) for v in np.asarray(action).reshape(3)), float(captured),
                                    event, bool(intervention)))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10 == 0:
                log.warning("%s: %d frame(s) dropped: the writer is %d frames behind (the disk or the compression "
                            "is too slow for this rate; see --compression)", self.path.name, self.dropped, self.depth)
            return False
        self.frames += 1
        self.captures.append(float(captured))
        return True

    def spacing(self) -> tuple[float, float]:
        """(mean, standard deviation) of the time between the accepted frames' captures, s; (0, 0) below 2 frames."""
        if len(self.captures) < 2:
            return 0.0, 0.0
        gaps = np.diff(np.asarray(self.captures))
        return float(gaps.mean()), float(gaps.std())

    def _drain(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def wait_written(self) -> None:
        """Block until every queued frame is written (tests, and callers about to read the partial file)."""
        self._queue.join()

    def set_attrs(self, **attrs) -> None:
        self._queue.join()
        self._raise()
        self.writer.set_attrs(**attrs)

    def has_attr(self, name: str) -> bool:
        self._queue.join()
        self._raise()
        return self.writer.has_attr(name)

    def finish(self, duration_s: float | None = None, **attrs) -> Path:
        self._drain()
        self._raise()
        return self.writer.finish(duration_s, dropped_frames=self.dropped, **attrs)

    def finish_later(self, duration_s: float | None = None, **attrs) -> Future:
        """`finish` on a thread of its own: the control loop goes on while the queue is written and the file
        renamed (up to `depth` frames: half a second at 1280x720). The future holds the path or the error."""
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(self.finish(duration_s, **attrs))
            except BaseException as e:  # the caller keeps the partial file (abandon) and says why
                future.set_exception(e)

        threading.Thread(target=run, name=f"finish:{self.path.name}", daemon=True).start()
        return future

    def abandon(self, keep: bool = True, **attrs) -> Path | None:
        self._drain()
        if self.writer is None:  # it could not even be made: nothing to keep
            return None
        return self.writer.abandon(keep, dropped_frames=self.dropped, **attrs)
