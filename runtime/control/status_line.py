"""The robot's one line for a person: what the robot is doing and why, rate, stage times, command, counters.

    status = StatusLine(enabled=True)
    status.inferred(now, timings_ms)                       # the inference thread finished a step
    status.update(now, "zero: camera stale", command, steps, {"missed acks": 3})   # every control tick
    status.end()                                           # a newline after the last update

    zero: camera stale  |  19.8 Hz | prep  1.2 vis  40.1 lang  60.3 head  2.0 ms | cmd +0.00 +0.00 +0.00 | step 812
    | missed acks 3 refused 0 reconnects 1 zeros 14 resets 4

The state comes first: `driving`, or why the robot stands still (`zero:
camera stale`, `zero: inference stalled`, `zero: plan too old`, `zero:
non-finite action`, `link down`, `disarmed`, `e-stop (SOURCE)`, ...). The
line is redrawn on every control tick whose state, command or counters
changed, and at least every 0.25 s otherwise, from the first tick on: a
fault is on the line within one control period.

It is written to the terminal (stderr) only, never to the log or the journal:
events go through `logging` (runtime.logs).
"""

from __future__ import annotations

import sys

REDRAW_S = 0.25  # s: the line is redrawn at least this often (the rate and stage times move)


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
        self.source = ""  # which policy computed the newest step (remote / onboard), shown with --policy
        self._shown = False
        self._width = 0
        self._last_key = None
        self._last_draw = -float("inf")

    def inferred(self, now: float, timings_ms: dict[str, float], source: str = "") -> None:
        self.rate.tick(now)
        self.stage_ms = timings_ms
        self.source = source

    def render(self, command, steps: int, state: str = "driving", counters: dict | None = None) -> str:
        t = self.stage_ms
        line = (f"{state:<20} | {self.rate.hz:5.1f} Hz | prep {t.get('preprocess', 0):5.1f} "
                f"vis {t.get('vision', 0):6.1f} lang {t.get('language', 0):6.1f} head {t.get('head', 0):5.1f} ms | "
                f"cmd {command[0]:+.2f} {command[1]:+.2f} {command[2]:+.2f} | step {steps}"
                + (f" | {self.source}" if self.source else "")
                + (f" net {t.get('network', 0):5.1f} ms" if self.source == "remote" else ""))
        if counters:
            line += " | " + " ".join(f"{k} {v}" for k, v in counters.items())
        return line

    def show(self, command, steps: int, state: str = "driving", counters: dict | None = None) -> None:
        if not self.enabled:
            return
        line = self.render(command, steps, state, counters)
        self.stream.write("\r" + line + " " * max(0, self._width - len(line)))  # no tail of a longer line
        self.stream.flush()
        self._width = len(line)
        self._shown = True

    def update(self, now: float, state: str, command, steps: int, counters: dict) -> None:
        """Every control tick: redraw when something a person should see changed, else every 0.25 s."""
        key = (state, tuple(round(float(v), 2) for v in command), tuple(counters.values()))
        if key != self._last_key or now - self._last_draw >= REDRAW_S:
            self._last_key, self._last_draw = key, now
            self.show(command, steps, state, counters)

    def end(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
