"""What a robot command does with a signal: SIGINT, SIGTERM, SIGHUP and SIGQUIT ask its loop to stop (motors to
zero), from the moment the command starts, before anything is opened.

    stop = StopRequest(); install_signal_handlers(stop)   # first thing, before the bundle, motor, camera open
    ...; stop.attach(loop)                                # the loop sees a signal that came during start-up
"""

from __future__ import annotations

import signal

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class StopRequest:
    """What a signal asked, before and after the loop exists: drive() installs the handlers on one of these
    before it opens anything (a ROS motor side takes up to 9 s, a camera up to 5 s), then attaches the loop."""

    def __init__(self):
        self.reason = ""
        self.loop = None  # the DriveLoop (or Recorder) once it exists

    def request_stop(self, reason: str) -> None:  # a signal handler: plain attributes only
        self.reason = reason
        if self.loop is not None:
            self.loop.request_stop(reason)

    def attach(self, loop) -> None:
        self.loop = loop
        if self.reason:
            loop.request_stop(self.reason)


def install_signal_handlers(loop) -> None:
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT call `loop.request_stop(NAME)` (a DriveLoop, a Recorder or a
    StopRequest)."""
    def handler(signum, frame):
        loop.request_stop(signal.Signals(signum).name)

    # SIGHUP (the terminal or SSH session went away) and SIGQUIT (Ctrl-\) end the process by default
    # without running any cleanup, which would leave the last command on the motors.
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, handler)

