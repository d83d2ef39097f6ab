"""What went to the motors, and when: the label a recorded frame gets.

    history = CommandHistory()
    history.add(time.monotonic(), motor.send_velocity(0.2, 0.0, 0.0), person=True)
    velocity, person = history.in_force(frame.stamp)             # continuous mode: the command at the capture
    velocity, person = history.move_between(frame.stamp, nxt)    # step mode: the move that followed the frame

One rule for the recorder (runtime/recording/recorder.py) and a take-over
recording (runtime/recording/takeover.py), so a demonstration and a
correction are labelled alike. A command that did not go out counts as zero:
the label says what the robot did, not what was asked. Thread-safe: the drive
adds from its control thread and reads from its inference thread.
"""

from __future__ import annotations

import threading
from collections import deque

from runtime.hardware import SentCommand

ZERO = (0.0, 0.0, 0.0)


class CommandHistory:
    """The newest `maxlen` commands sent, with their time and whether a person drove them."""

    def __init__(self, maxlen: int = 512):
        self._lock = threading.Lock()
        self._sent: deque = deque(maxlen=maxlen)  # (time.monotonic() sent, velocity that went out, by a person)

    def add(self, t: float, result: SentCommand, person: bool = False) -> None:
        with self._lock:
            self._sent.append((t, result.velocity if result.sent else ZERO, person))

    def in_force(self, t: float) -> tuple[tuple[float, float, float], bool]:
        """The velocity that went out last at or before `t` (zeros before the first) and whether a person sent it."""
        velocity, person = ZERO, False
        with self._lock:
            for at, v, p in self._sent:
                if at > t:
                    break
                velocity, person = v, p
        return velocity, person

    def move_between(self, start: float, end: float) -> tuple[tuple[float, float, float], bool]:
        """The move sent after `start` up to `end` (its last non-zero command; zeros if it stood still), and
        whether a person drove any of it."""
        velocity, person = ZERO, False
        with self._lock:
            for at, v, p in self._sent:
                if start < at <= end:
                    person = person or p
                    if any(v):
                        velocity = v
        return velocity, person
