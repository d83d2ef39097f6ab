"""Look at recordings: Rerun's viewer (or an .rrd file), or an MP4 with the actions drawn on the frames.

    python -m train.data view rec/episode_0003.h5               # the viewer when there is a display, else an .rrd
    python -m train.data view rec/ --save rec.rrd                # every episode, one after the other
    python -m train.data view rec/episode_0003.h5 --mp4 ep3.mp4  # for people who do not use Rerun
    rerun rec.rrd                                                # open a saved view (the rerun-sdk extra's viewer)

    from train.data_view import ViewSpec, view
    view(ViewSpec(Path("rec"), save=Path("rec.rrd")))

The Rerun view (runtime/recording/rerun_episode.py): camera frames, the action as an
arrow on the frame and as time series, the instruction, take-over segments
and episode markers on one timeline. The MP4 (plotting/video.py) plays the
frames at their recorded spacing (one frame per 0.4 s move is 2.5 frames a
second), the action as an arrow and numbers, the episode and instruction on top.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plotting.video import annotate, write_mp4
from runtime.recording.episodes import read_episode_record
from runtime.recording.rerun_episode import NO_INSTRUCTION, EpisodeTimeline
from runtime.recording.rerun_log import RerunRecording

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewSpec:
    source: Path  # one .h5 episode or a folder of them
    save: Path | None = None  # write this .rrd (None: the viewer when there is a display, else SOURCE.rrd)
    mp4: Path | None = None  # also (or only, with no Rerun) write this MP4
    jpeg_quality: int = 90  # of the frames in the .rrd
    max_fps: float = 30.0  # the MP4's rate is the recording's, capped here


def episode_paths(source: Path) -> list[Path]:
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix in (".h5", ".hdf5"))
        if paths:
            return paths
        raise FileNotFoundError(f"{source}: no .h5 episodes found")
    raise FileNotFoundError(f"{source}: no such episode file or folder")


def has_display() -> bool:
    """A screen for the viewer: an X or Wayland display on Linux; macOS and Windows always have one."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def rerun_target(spec: ViewSpec) -> str:
    if spec.save is not None:
        return str(spec.save)
    if has_display():
        return "spawn"
    source = Path(spec.source)
    return str(source.with_suffix(".rrd") if source.is_file() else source.parent / f"{source.name}.rrd")


def write_view_mp4(paths: list[Path], out: Path, max_fps: float = 30.0) -> Path:
    frames, spacing = [], None
    for path in paths:
        record = read_episode_record(path)
        spacing = spacing or record.frame_spacing_s
        top = float(np.abs(record.actions[:, :2]).max()) or 1.0
        flags = record.intervention
        for i, image in enumerate(record.images):
            who = " (person)" if flags is not None and flags[i] else ""
            frames.append(annotate(image, record.actions[i], top,
                                   [f"{path.name}  frame {i + 1}/{len(record.images)}{who}",
                                    record.instruction or NO_INSTRUCTION]))
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"--mp4 {out}: the episodes' frames differ in size ({sorted(sizes)}); view one at a time")
    return write_mp4(out, frames, fps=min(max_fps, 1.0 / (spacing or 0.4)))


def view(spec: ViewSpec) -> dict:
    """The Rerun view (file or viewer) and/or the MP4; returns {"episodes", "frames", "rrd", "mp4"}."""
    paths = episode_paths(spec.source)
    out: dict = {"episodes": len(paths), "rrd": None, "mp4": None}
    if spec.mp4 is not None:
        out["mp4"] = str(write_view_mp4(paths, spec.mp4, spec.max_fps))
    if spec.mp4 is None or spec.save is not None:
        target = rerun_target(spec)
        timeline = EpisodeTimeline(RerunRecording(target, "mobile_vla_episodes"), jpeg_quality=spec.jpeg_quality)
        for path in paths:
            timeline.episode(read_episode_record(path))
        saved = timeline.close()
        out["rrd"] = str(saved) if saved else None
        out["frames"] = timeline.frames
    return out
