"""The robot's one line for a person: rate, per-stage time, the command that went out, the step count.

    status = StatusLine(enabled=True)
    status.inferred(now, timings_ms)        # the inference thread finished a step
    status.show(command, steps)              # the control thread sent a command
    status.end()                             # a newline after the last update

It is written to the terminal (stderr) only, never to the log or the journal:
events go through `logging` (runtime.logs).
"""

from __future__ import annotations

import sys


class RateEstimate:
    """Steps per second, smoothed (exponential, 0.2 per new step); 0 until two steps have been seen."""

    def __init__(self, smoothing: float = 0.2):
        self.smoothing = smoothing
        self.hz = 0.0
        self._last: float | None = None

    def tick(self, now: float) -> float:
        if self._last is not None:
            instant = 1.0 / max(now - self._last, 1e-6)
            self.hz = instant if self.hz == 0.0 else (1 - self.smoothing) * self.hz + self.smoothing * instant
        self._last = now
        return self.hz


class StatusLine:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.rate = RateEstimate()
        self.stage_ms: dict[str, float] = {}
        self._shown = False

    def inferred(self, now: float, timings_ms: dict[str, float]) -> None:
        self.rate.tick(now)
        self.stage_ms = timings_ms

    def render(self, command, steps: int) -> str:
        t = self.stage_ms
        return (f"{self.rate.hz:5.1f} Hz | prep {t.get('preprocess', 0):5.1f} vis {t.get('vision', 0):6.1f} "
                f"lang {t.get('language', 0):6.1f} head {t.get('head', 0):5.1f} ms | "
                f"cmd {command[0]:+.2f} {command[1]:+.2f} {command[2]:+.2f} | step {steps}")

    def show(self, command, steps: int) -> None:
        if not self.enabled:
            return
        self.stream.write("\r" + self.render(command, steps))
        self.stream.flush()
        self._shown = True

    def end(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
