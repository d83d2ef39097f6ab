"""The motor link seen from the drive loop: down, back, reconnected, given up.

    watch = LinkWatch(motor, give_up_after=5.0, auto_resume=False)
    reason = watch.observe(motor.send_velocity(vx, vy, wz), time.monotonic())
    if reason:                  # "motor link down" / "motor link reconnected": the plan starts over
        loop.request_reset(reason)

A command that did not go out (`SentCommand.sent` False) marks the link down
from that moment; the first command that goes out again marks it back. A
link down for longer than `give_up_after` seconds raises `MotorLinkLost`
(the run ends with a message that says what to check) unless `auto_resume`,
which keeps trying for as long as it takes. A reconnect the motor side made
by itself (its `reconnects` counter moved) also starts the plan over: the
controller behind it may have rebooted and lost its watchdog state.
"""

from __future__ import annotations

import logging

from runtime.hardware import DeviceError, SentCommand

log = logging.getLogger(__name__)


class MotorLinkLost(DeviceError):
    """The motor link stayed down past --give-up-after: the run ends instead of resuming unattended."""


def link_counter(motor, name: str) -> int:
    """A motor side's counter (`missed_acks`, `refused`, `reconnects`, ...), 0 where it keeps none."""
    value = getattr(motor, name, 0)
    return value if isinstance(value, int) else 0


class LinkWatch:
    def __init__(self, motor, give_up_after: float, auto_resume: bool, describe=lambda: ""):
        self.motor = motor
        self.give_up_after = give_up_after  # s a link may stay down before the run ends
        self.auto_resume = auto_resume  # keep trying instead
        self.describe = describe  # callable -> the loop's counters, for the log line
        self.down_since: float | None = None  # time.monotonic() of the first command that did not go out
        self._reconnects = link_counter(motor, "reconnects")

    @property
    def up(self) -> bool:
        return self.down_since is None

    def observe(self, result: SentCommand, now: float) -> str | None:
        """What one command says about the link; returns why the plan must start over, or None."""
        reason = None
        reconnects = link_counter(self.motor, "reconnects")
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            reason = "motor link reconnected"
        if not result.sent:
            if self.down_since is None:
                self.down_since = now
                reason = reason or "motor link down"
                log.warning("motor link %s down: nothing reaches the robot (%s)", self.motor.name, self.describe())
            down = now - self.down_since
            if not self.auto_resume and down > self.give_up_after:
                raise MotorLinkLost(f"motor link {self.motor.name} down for {down:.1f} s (--give-up-after "
                                    f"{self.give_up_after:g}): check the cable and the controller's power, "
                                    f"then start again (--auto-resume keeps trying instead)")
        elif self.down_since is not None:
            log.warning("motor link %s back after %.1f s", self.motor.name, now - self.down_since)
            self.down_since = None
        return reason
