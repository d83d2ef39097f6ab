"""The motor link seen from the drive loop: down or silent, back, reconnected, given up.

    watch = LinkWatch(motor, give_up_after=5.0, auto_resume=False)
    event = watch.observe(motor.send_velocity(vx, vy, wz), time.monotonic())   # "down", "up" or None
    if watch.reconnected(): ...                    # the motor side reopened its port since the last look

A command that did not go out (`SentCommand.sent` False) marks the link down
from that moment, and so do `SILENT_AFTER` commands in a row that went out and
were never answered (`acknowledged` False without a refusal: the controller
is deaf, rebooting, or another board sits on the port); the first command that
goes out and is answered again (or goes out on a link without
acknowledgements) marks it back. The drive holds the motion authority in
`fault` while the link is down, so only zeros go out, and after a reboot the
controller's first command is a zero. A link down for longer than
`give_up_after` seconds raises `MotorLinkLost` (the run ends with a message
that says what to check) unless `auto_resume`, which keeps trying for as long
as it takes. A reconnect the motor side made by itself (its `reconnects`
counter moved) is reported by `reconnected()`: the plan starts over.
"""

from __future__ import annotations

import logging

from runtime.hardware import DeviceError, SentCommand

log = logging.getLogger(__name__)
SILENT_AFTER = 3  # unanswered commands in a row (150 ms at 20 Hz) that make a controller silent: the link is down


class MotorLinkLost(DeviceError):
    """The motor link stayed down past --give-up-after: the run ends instead of resuming unattended."""


def link_counter(motor, name: str) -> int:
    """A motor side's counter (`missed_acks`, `refused`, `reconnects`, ...), 0 where it keeps none."""
    value = getattr(motor, name, 0)
    return value if isinstance(value, int) else 0


class LinkWatch:
    def __init__(self, motor, give_up_after: float, auto_resume: bool, describe=lambda: ""):
        self.motor = motor
        self.give_up_after = give_up_after  # s a link may stay down (or silent) before the run ends
        self.auto_resume = auto_resume  # keep trying instead
        self.describe = describe  # callable -> the loop's counters, for the log line
        self.down_since: float | None = None  # time.monotonic() of the first command that did not go out
        self.silent = 0  # commands in a row sent and never answered
        self._reconnects = link_counter(motor, "reconnects")
        self._refused = link_counter(motor, "refused")

    @property
    def up(self) -> bool:
        return self.down_since is None

    def reconnected(self) -> bool:
        """The motor side reopened its link since the last call."""
        reconnects = link_counter(self.motor, "reconnects")
        moved, self._reconnects = reconnects != self._reconnects, reconnects
        return moved

    def observe(self, result: SentCommand, now: float) -> str | None:
        """What one command says about the link: "down" when it just went down, "up" when it just came back,
        else None. Raises MotorLinkLost once it has been down longer than give_up_after."""
        refused = link_counter(self.motor, "refused")
        answered = result.acknowledged is not False or refused != self._refused  # a refusal is an answer
        self._refused = refused
        self.silent = 0 if (answered or not result.sent) else self.silent + 1
        working = result.sent and (answered or self.silent < SILENT_AFTER)
        event = None
        if not working:
            if self.down_since is None:
                self.down_since = now
                event = "down"
                why = "nothing reaches the robot" if not result.sent else \
                    f"the controller answered none of the last {self.silent} commands"
                log.warning("motor link %s down: %s (%s)", self.motor.name, why, self.describe())
            down = now - self.down_since
            if not self.auto_resume and down > self.give_up_after:
                raise MotorLinkLost(f"motor link {self.motor.name} down for {down:.1f} s (--give-up-after "
                                    f"{self.give_up_after:g}): check the cable and the controller's power, "
                                    f"then start again (--auto-resume keeps trying instead)")
        elif self.down_since is not None and answered:
            log.warning("motor link %s back after %.1f s", self.motor.name, now - self.down_since)
            self.down_since = None
            event = "up"
        return event
