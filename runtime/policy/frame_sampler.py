"""Which frames a recording keeps: one `spacing_s` apart on a fixed schedule, whatever rate they arrive at.

    sampler = FrameSampler(0.4)                   # the bundle's trained spacing
    for frame in frames_from_the_inference_thread:
        if sampler.take(frame.stamp):
            ...                                   # recorded: the frame nearest each due time

Due times step by exactly the spacing from the first frame kept (no drift), and
the frame nearest each due time is kept: one arriving within half a frame
period before it counts as on time. After a gap of more than one spacing (the
camera or the inference stalled) the schedule starts again from the next frame.
The drive's ring of features keeps its frames by this rule (runtime/policy/
onboard.py, `RingPacer`, a FrameSampler), and so does a take-over recording at
the bundle's spacing (runtime/recording/takeover.py): it holds frames the way
the model saw them. The recorder's continuous mode reads the camera on the
same kind of schedule (runtime/recording/recorder.py).
"""

from __future__ import annotations


class FrameSampler:
    """The frame nearest each due time, one `spacing_s` after the previous one kept."""

    def __init__(self, spacing_s: float):
        if not spacing_s > 0:
            raise ValueError(f"frame spacing must be > 0 s, got {spacing_s!r}")
        self.spacing_s = spacing_s
        self._due: float | None = None
        self._last_stamp: float | None = None
        self.kept = 0

    def reset(self) -> None:
        self._due = self._last_stamp = None

    def take(self, stamp: float) -> bool:
        """Whether the frame captured at `stamp` (s) is kept."""
        period = self.spacing_s if self._last_stamp is None else max(stamp - self._last_stamp, 0.0)
        self._last_stamp = stamp
        if self._due is not None and stamp < self._due - min(period, self.spacing_s) / 2:
            return False  # early: a later frame is nearer the due time
        behind = self._due is None or stamp - self._due >= self.spacing_s
        self._due = stamp + self.spacing_s if behind else self._due + self.spacing_s
        self.kept += 1
        return True
