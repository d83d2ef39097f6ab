"""What the robot is doing and why: the drive loop's state, its zero events and counters, and /diagnostics.

    health = LoopHealth(motor)
    health.set_state(command_state(result, refused=False, lateral_refused=False))   # "driving"
    health.zeroed(now, "camera: no frame within 0.5 s", was_moving=True)           # -> True: a new event
    health.counters()      # {"missed acks": 3, "refused": 0, "reconnects": 1, "zeros": 14, "resets": 4}

The state is one short phrase: `driving`, or why the robot stands still
(`zero: camera stale`, `zero: inference stalled`, `link down`, `disarmed`,
`e-stop (SOURCE)`, ...). Every change of it is a logged event (info when
driving again, a warning otherwise) carrying the counters, so the journal
says why the robot stopped without the step log. The status line
(runtime/control/status_line.py) and /diagnostics (runtime/control/ros2.py) show the
same state and counters.

Zero events are counted forever and the newest ZERO_EVENTS_KEPT kept in
memory (an hour of faults must not grow the process); all of them go to the
step log.
"""

from __future__ import annotations

import logging
from collections import deque

from runtime.control.link_watch import link_counter
from runtime.hardware import SentCommand

log = logging.getLogger(__name__)
ZERO_EVENTS_KEPT = 1000  # the newest zero events kept in memory (all of them go to the step log)
DIAGNOSTICS_S = 1.0  # s between two /diagnostics reports
LINK_COUNTERS = {"missed_acks": "missed acks", "refused": "refused", "reconnects": "reconnects",
                 "failed_publishes": "failed publishes"}  # a motor side's counters shown, where it has them


def zero_state(reason: str, result: SentCommand) -> str:
    """The state for a zero sent for `reason`."""
    if not result.sent:
        return "link down"
    if reason.startswith(("disarmed", "e-stop", "fault", "armed")):  # the motion authority's own words
        return reason
    if reason.startswith("camera"):
        return "zero: camera stale"
    return {"command timeout": "zero: inference stalled", "no action yet": "waiting for a frame",
            "step done": "driving"}.get(reason, f"zero: {reason}")


def command_state(result: SentCommand, refused: bool, lateral_refused: bool) -> str:
    """The state after a command went out (or did not)."""
    if not result.sent:
        return "link down"
    if refused:
        return "zero: refused by controller"
    if result.acknowledged is False:
        return "no acknowledgement"
    if lateral_refused:
        return "zero: lateral refused"
    return "driving"


class LoopHealth:
    def __init__(self, motor):
        self.motor = motor  # its counters (LINK_COUNTERS) are shown where it keeps them
        self.state = "starting"
        self.zero_events: deque[tuple[float, str]] = deque(maxlen=ZERO_EVENTS_KEPT)  # (time, reason), newest
        self.zero_count = 0  # every zero event, also those no longer in zero_events
        self.resets = 0  # behaviours and ring reset after a fault
        self._last_diagnostics = -float("inf")

    def counters(self) -> dict:
        found = {label: link_counter(self.motor, attr) for attr, label in LINK_COUNTERS.items()
                 if hasattr(self.motor, attr)}
        return dict(found, zeros=self.zero_count, resets=self.resets)

    def counters_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.counters().items())

    def set_state(self, state: str) -> None:
        if state != self.state:
            level = logging.INFO if state == "driving" else logging.WARNING
            log.log(level, "state: %s (%s)", state, self.counters_text())
            self.state = state

    def zeroed(self, now: float, reason: str, was_moving: bool) -> bool:
        """A zero went out for `reason`; True when it is a new event (the robot was moving, or a new reason)."""
        if was_moving or not self.zero_events or self.zero_events[-1][1] != reason:
            self.zero_events.append((now, reason))
            self.zero_count += 1
            return True
        return False

    def diagnostics_due(self, now: float) -> bool:
        """True once a DIAGNOSTICS_S: the time for the next /diagnostics report."""
        if now - self._last_diagnostics >= DIAGNOSTICS_S:
            self._last_diagnostics = now
            return True
        return False

    def level(self) -> str:
        """/diagnostics level of the state: error for an e-stop or a lost link, ok while driving, else warn."""
        if self.state.startswith(("e-stop", "link down", "fault")):
            return "error"
        return "ok" if self.state == "driving" else "warn"
