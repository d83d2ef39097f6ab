"""The episodes of one recording, as files: the one being written, those written out behind the loop, the saved.

    files = EpisodeFiles(RecordConfig(out=Path("rec")))
    files.start()                         # the folder made and numbered (--resume); refused on a nearly full disk
    path = files.open(instruction)        # the episode's writer, made on its own thread
    files.append(frame, velocity)         # labelled episode_start, start_action, stop_action; False: dropped
    files.save(duration_s, "end")         # written out and renamed behind the loop; or files.discard()
    files.reap()                          # every tick: the episodes whose writing finished are saved
    files.keep_partial(); files.reap(wait=True)     # a signal or an error: the open one kept partial, the rest saved

What the recording loop (runtime/recording/recorder.py) hands its frames to.
Frames are written behind the loop (runtime/recording/background_writer.py):
the loop never waits on the disk; a frame the writer cannot take is dropped,
counted (`dropped`, shown on the status line) and stored in `dropped_frames`.
Each episode is written to a hidden `.NAME.partial` file and renamed when it
ends (runtime/recording/episode_writer.py): a crash or a kill leaves every
finished episode and the partial one, which no later run opens for writing.
A saved episode is written out and renamed on a thread of its own while the
loop goes on; a discarded one is deleted and its number recorded again.
`check_disk` stops recording (the episode kept as a partial file) before the
disk holds less than `min_free_gb`, and `check_writer` hands over a write that failed
anyway (the disk filled from elsewhere), the frame named.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from functools import partial
from pathlib import Path

from runtime.cli import CommandError
from runtime.recording.background_writer import BackgroundWriter
from runtime.recording.episode_writer import (
    EPISODE_NAME,
    EpisodeWriteError,
    EpisodeWriter,
    default_compression,
    existing_episodes,
    next_episode_number,
    partial_episodes,
)

log = logging.getLogger(__name__)
DISK_CHECK_S = 1.0  # s between two looks at the free disk space


def first_index(out: Path, resume: bool) -> int:
    """The number of the first episode to write: after every finished, partial and set-aside episode of the folder,
    so no partial file is ever opened again. Refuses to mix into a folder of finished episodes without --resume."""
    numbers = existing_episodes(out)
    if numbers and not resume:
        raise CommandError(f"--out {out}: already holds {len(numbers)} episode(s) (up to "
                           f"{EPISODE_NAME.format(numbers[-1])}); pass --resume to continue its numbering, or "
                           f"choose a new folder")
    partial = partial_episodes(out)
    if partial:
        log.warning("%s: %d unfinished episode(s) from an earlier run (%s), kept as they are: not training data "
                    "until recovered (python -m train.data recover %s NAME) or deleted", out, len(partial),
                    ", ".join(p.name for p in partial), out)
    return next_episode_number(out)


class EpisodeFiles:
    """The episodes of one recording in `config.out` (a runtime.recording.recorder.RecordConfig): at most one open."""

    def __init__(self, config):
        self.config = config
        self.saved: list[Path] = []
        self._closing: list = []  # (writer, future, duration, why) of episodes being written out
        self._discarding: threading.Thread | None = None  # the discarded episode's queue emptied and file deleted
        self.discarded = 0
        self.dropped = 0  # frames the writer could not take, over the whole run
        self.index = 0  # the number the next episode gets
        self.writer: BackgroundWriter | None = None  # the open episode's
        self.captures: deque = deque(maxlen=20)  # the last frames taken: the rate on the status line
        self._disk_at = -float("inf")
        self.free_gb = float("inf")

    def start(self) -> None:
        """The folder made, the first number chosen; refused when the disk is already under --min-free-gb."""
        self.config.out.mkdir(parents=True, exist_ok=True)
        self.index = first_index(self.config.out, self.config.resume)
        if self.disk_low(time.monotonic()):
            raise CommandError(f"--out {self.config.out}: {self.free_gb:.2f} GB free, under --min-free-gb "
                               f"{self.config.min_free_gb:g}: free some space or lower --min-free-gb")

    # -- the disk ----------------------------------------------------------------------
    def disk_low(self, now: float) -> bool:
        """Whether the free space fell under --min-free-gb (looked at once a second)."""
        if now - self._disk_at >= DISK_CHECK_S:
            self._disk_at = now
            self.free_gb = shutil.disk_usage(self.config.out).free / 1e9
        return self.free_gb < self.config.min_free_gb

    def check_disk(self, now: float) -> None:
        if self.disk_low(now):
            raise EpisodeWriteError(f"{self.config.out}: {self.free_gb:.2f} GB free, under --min-free-gb "
                                    f"{self.config.min_free_gb:g}: recording stopped before the disk is full")

    def check_writer(self) -> None:
        if self.writer is not None and self.writer.error is not None:
            raise self.writer.error  # the disk filled up under the writer: stop, the frame is named

    # -- the open episode --------------------------------------------------------------
    def open(self, instruction: str) -> Path:
        self._discarded_gone()  # the number a discarded episode had is recorded again: its file must be gone
        config = self.config
        path = config.out / EPISODE_NAME.format(self.index)
        attrs = dict(config.attrs, recording_mode=config.mode, frame_spacing_s=config.frame_spacing_s,
                     control_rate_hz=config.control_rate, recorder="runtime.record")
        compression = config.compression or default_compression(config.frame_spacing_s)
        # the file is made on the writer's thread: the loop never waits for h5py (recording/background_writer.py)
        self.writer = BackgroundWriter(partial(EpisodeWriter, path, instruction, attrs=attrs, compression=compression),
                                       path=path)
        return path

    @property
    def frames(self) -> int:
        """Frames the open episode took so far (0 with none open)."""
        return self.writer.frames if self.writer is not None else 0

    def append(self, frame, velocity, intervention: bool = False) -> bool:
        """Hand a frame to the writer (never waits); False when it could not take it (dropped, counted)."""
        event = "episode_start" if self.writer.frames == 0 else ("start_action" if any(velocity) else "stop_action")
        if self.writer.append(frame.image, velocity, frame.stamp, event, intervention):
            self.captures.append(frame.stamp)
            return True
        self.dropped += 1
        return False

    def rate(self) -> float:
        """Frames per second over the last frames taken; 0 below two."""
        times = self.captures
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def save(self, duration: float, why: str) -> None:
        """The open episode written out and renamed behind the loop (`reap` says when); one with no frames is
        dropped."""
        writer = self.writer
        if writer.frames == 0:
            self.writer = None
            writer.abandon(keep=False)
            log.info("episode %s ended (%s) with no frames: nothing saved", writer.path.name, why)
            return
        # written out and renamed behind the loop (the queue may hold half a second of frames)
        future = writer.finish_later(duration_s=duration, **self._spacing_attrs(writer))
        self._closing.append((writer, future, duration, why))
        self.writer = None
        self.index = next_episode_number(self.config.out)

    def discard(self) -> None:
        """The open episode deleted behind the loop (its queue may hold half a second of frames to write first, and
        the loop must send its zero now): its number is recorded again, once the file is gone."""
        writer, self.writer = self.writer, None
        self._discarded_gone()
        self._discarding = threading.Thread(target=writer.abandon, kwargs={"keep": False},
                                            name=f"discard:{writer.path.name}", daemon=True)
        self._discarding.start()
        self.discarded += 1
        log.info("discarded %s (%d frames): recording it again", writer.path.name, writer.frames)

    def _discarded_gone(self) -> None:
        if self._discarding is not None:
            self._discarding.join()
            self._discarding = None

    def keep_partial(self) -> None:
        """A signal or an error mid-episode: its frames stay, marked partial, under a name no run reuses."""
        writer, self.writer = self.writer, None
        kept = writer.abandon(keep=True, **self._spacing_attrs(writer))
        if kept:
            log.warning("episode stopped before its end: %d frames kept in %s (not training data until recovered: "
                        "python -m train.data recover %s %s)", writer.frames, kept, kept.parent, kept.name)

    def _spacing_attrs(self, writer) -> dict:
        """Continuous: the measured spacing and its spread (step mode keeps the move's duration)."""
        if self.config.mode == "step" or writer.error is not None or writer.frames < 2:
            return {}
        mean, spread = writer.spacing()
        return {"frame_spacing_s": mean, "frame_spacing_spread_s": spread}

    # -- the episodes being written out -------------------------------------------------
    def reap(self, wait: bool = False) -> None:
        """Episodes whose writing finished: saved, or (a write error) kept partial and the error raised."""
        if wait:
            self._discarded_gone()
        failed = None
        for item in list(self._closing):
            writer, future, duration, why = item
            if not (wait or future.done()):
                continue
            self._closing.remove(item)
            try:
                path = future.result()
            except BaseException as e:
                kept = writer.abandon(keep=True)
                log.error("%s could not be saved (%s): its frames stay in %s", writer.path.name, e, kept)
                failed = failed or e
                continue
            self.saved.append(path)
            dropped = f", {writer.dropped} frame(s) dropped (the disk was too slow)" if writer.dropped else ""
            log.info("saved %s: %d frames, %.1f s (%s)%s", path.name, writer.frames, duration, why, dropped)
        if failed is not None:
            raise failed

    @property
    def ended(self) -> int:
        """Episodes ended and kept: saved, or being written out."""
        return len(self.saved) + len(self._closing)
