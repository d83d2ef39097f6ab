"""Episodes on one Rerun timeline: frames, actions, instruction, take-over segments and episode markers.

    python -m train.data view rec/episode_0003.h5          # the viewer with a display, else rec/episode_0003.rrd
    python -m train.data view rec/ --save rec.rrd          # every episode of a folder, one after the other
    python -m sim.evaluate --bundle bundle/ --episodes 20 --rerun eval.rrd

    timeline = EpisodeTimeline(RerunRecording("rec.rrd", "mobile_vla_episodes"))
    timeline.episode(read_episode_record(path))           # or, frame by frame:
    timeline.begin("room 3", instruction); timeline.frame(image_bgr, action); timeline.end("success")
    timeline.close()

Entities (timelines `frame`: the frame's number across all episodes, `time`:
seconds, the episodes one after another): `camera/image` (JPEG, BGR),
`camera/image/action` (the action as an arrow on the frame: up is forward,
left is left), `action/{linear_x,linear_y,angular_z}` (time series),
`instruction` (the episode's, at its first frame), `takeover` (1 while a
person drove, recorder files), `episode` (the episode's number, a step at
each boundary) and `events` (a line at each episode's start and end and at
each take-over's start and end). rerun-sdk is imported by RerunRecording
(runtime/recording/rerun_log.py) when a view is opened.
"""

from __future__ import annotations

import numpy as np

from runtime.recording.episodes import EpisodeRecord
from runtime.recording.rerun_log import AXES, RerunRecording, action_arrow, encode_jpeg

NO_INSTRUCTION = "(no instruction in the file)"  # what a view shows for an episode without one


class EpisodeTimeline:
    """Episodes logged one after the other on the `frame` and `time` timelines of one recording."""

    def __init__(self, recording: RerunRecording, jpeg_quality: int = 90, image_width: int = 0,
                 top_speed: float | None = None):
        self.recording, self.rr, self.stream = recording, recording.rr, recording.stream
        self.jpeg_quality, self.image_width = jpeg_quality, image_width
        self.top_speed = top_speed  # the arrow's full length; None: the largest |x|, |y| action of each episode
        self.frames = 0  # frames logged so far (the next frame's number)
        self.episodes = 0
        self._t = 0.0  # the next frame's time, s
        self._top = 1.0
        self._taking_over = False
        self._spacing = 0.4

    def _at(self, t: float) -> None:
        self.stream.set_time("frame", sequence=self.frames)
        self.stream.set_time("time", duration=t)

    def begin(self, name: str, instruction: str | None, frames: int | None = None, top_speed: float = 1.0,
              spacing: float = 0.4) -> None:
        """An episode starts at the next frame: its marker, its instruction."""
        rr = self.rr
        self._top = self.top_speed or top_speed
        self._spacing = spacing
        self._taking_over = False
        self._at(self._t)
        count = f", {frames} frames" if frames is not None else ""
        self.stream.log("events", rr.TextLog(f"{name} begins{count}: {instruction or NO_INSTRUCTION}", level="INFO"))
        self.stream.log("episode", rr.Scalars(float(self.episodes)))
        self.stream.log("instruction", rr.TextDocument(instruction or NO_INSTRUCTION))

    def frame(self, image_bgr: np.ndarray, action, t: float | None = None, intervention: bool | None = None) -> None:
        """One frame at `t` seconds from the episode's start (None: one spacing after the previous frame)."""
        rr = self.rr
        when = self._t if t is None else t
        self._at(when)
        h, w = image_bgr.shape[:2]
        sw = min(w, self.image_width) if self.image_width else w
        sh = max(1, round(h * sw / w))
        data = encode_jpeg(image_bgr, self.image_width or None, self.jpeg_quality)
        self.stream.log("camera/image", rr.EncodedImage(contents=data, media_type="image/jpeg"))
        action = np.asarray(action, np.float64).reshape(-1)
        origin, vector = action_arrow(action, sw, sh, self._top)
        self.stream.log("camera/image/action", rr.Arrows2D(origins=[origin], vectors=[vector], colors=[0, 200, 0]))
        for axis, value in zip(AXES, action):
            self.stream.log(f"action/{axis}", rr.Scalars(float(value)))
        if intervention is not None:
            self.stream.log("takeover", rr.Scalars(1.0 if intervention else 0.0))
            if bool(intervention) != self._taking_over:
                self._taking_over = bool(intervention)
                text = "take-over begins: a person drives" if intervention else "take-over ends: the policy drives"
                self.stream.log("events", rr.TextLog(text, level="WARN" if intervention else "INFO"))
        self.frames += 1
        self._t = when + self._spacing

    def end(self, text: str) -> None:
        """The episode's end marker, at its last frame."""
        self.stream.set_time("frame", sequence=max(0, self.frames - 1))
        self.stream.log("events", self.rr.TextLog(text, level="INFO"))
        self.episodes += 1

    def episode(self, record: EpisodeRecord) -> None:
        """A whole recorded episode: its frames at their capture times, the take-over flags when recorded."""
        top = float(np.abs(record.actions[:, :2]).max()) if len(record.actions) else 1.0
        spacing = record.frame_spacing_s
        start = self._t
        self.begin(record.path.name, record.instruction, len(record.images), top or 1.0, spacing)
        times = record.times()
        for i, image in enumerate(record.images):
            flag = None if record.intervention is None else bool(record.intervention[i])
            self.frame(image, record.actions[i], start + float(times[i]), flag)
        taken = "" if record.intervention is None else f", {int(record.intervention.sum())} taken over"
        self.end(f"{record.path.name} ends: {len(record.images)} frames{taken}")

    def close(self):
        return self.recording.close()
