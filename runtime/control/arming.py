"""Arm before moving, and an e-stop that latches: the switch the drive loop asks before every command.

    python -m runtime.drive --bundle b/ --serial /dev/ttyUSB0 --start-disarmed        # 'a' arms, space stops
    python -m runtime.drive --bundle b/ --motor ros2 --start-disarmed --gamepad /dev/input/js0 \\
        --arm-button 7 --estop-button 1 --estop-gpio /sys/class/gpio/gpio17/value

    switch = ArmSwitch(armed=False)
    sources = open_arm_sources(ArmSpec(gamepad="/dev/input/js0", arm_button=7), switch)   # arm_sources.py
    switch.armed            # False until a source arms; an e-stop latches False until the next arm
    for s in sources: s.close()

`ArmSwitch` holds the state; sources change it from their own threads
(runtime/control/arm_sources.py: the terminal's keys, a gamepad's buttons,
GPIO lines; the ROS 2 services and topic are runtime/control/ros2.py).

An e-stop latches: only an explicit arm (never a timeout, a reconnect or a
restart) clears it. A process that starts with `start_disarmed` (the default
of the systemd unit) sends zeros until armed, so a crash-restart comes back
disarmed.
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass, fields

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ArmSpec:
    start_disarmed: bool = False  # zeros until a source arms (the systemd unit's default)
    arm_key: str = "a"  # terminal key that arms (read only when stdin is a terminal)
    estop_key: str = " "  # terminal key that e-stops
    gamepad: str | None = None  # Linux joystick device, e.g. /dev/input/js0
    arm_button: int | None = None  # --gamepad: button number that arms
    estop_button: int | None = None  # --gamepad: button number that e-stops
    arm_gpio: str | None = None  # file holding 0/1 (sysfs GPIO value): its rising edge arms
    estop_gpio: str | None = None  # file holding 0/1: e-stop while it reads 1 (--estop-gpio-active-low: 0)
    estop_gpio_active_low: bool = False  # a normally-closed e-stop button pulls the line low when pressed

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ArmSpec:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def add_arm_arguments(ap: argparse.ArgumentParser) -> None:
    d = ArmSpec
    ap.add_argument("--start-disarmed", action="store_true",
                    help="send zeros until armed (a key, a gamepad button, a GPIO line or the ROS service ~/arm); "
                         "the systemd unit's default, so a crash-restart comes back disarmed")
    ap.add_argument("--arm-key", default=d.arm_key, help="terminal key that arms (default 'a'; 'd' disarms)")
    ap.add_argument("--estop-key", default=d.estop_key, help="terminal key that e-stops (default space)")
    ap.add_argument("--gamepad", help="joystick device for --arm-button / --estop-button, e.g. /dev/input/js0")
    ap.add_argument("--arm-button", type=int, help="--gamepad button number that arms")
    ap.add_argument("--estop-button", type=int, help="--gamepad button number that e-stops")
    ap.add_argument("--arm-gpio", help="file holding 0/1, e.g. /sys/class/gpio/gpio17/value: a rising edge arms")
    ap.add_argument("--estop-gpio", help="file holding 0/1: e-stop while it reads 1")
    ap.add_argument("--estop-gpio-active-low", action="store_true",
                    help="--estop-gpio reads 0 when pressed (a normally-closed button)")


class ArmSwitch:
    """Armed, disarmed or e-stopped; thread-safe, any source may change it."""

    def __init__(self, armed: bool = True):
        self._lock = threading.Lock()
        self._armed = armed
        self._estop = ""  # the source of a latched e-stop, "" when none
        self.changes = 0  # how often the state changed (the status line and diagnostics show it)

    @property
    def armed(self) -> bool:
        return self._armed and not self._estop

    @property
    def state(self) -> str:
        """"armed", "disarmed" or "e-stop (SOURCE)"."""
        if self._estop:
            return f"e-stop ({self._estop})"
        return "armed" if self._armed else "disarmed"

    def arm(self, source: str) -> None:
        """Arm; also the only way to clear a latched e-stop."""
        with self._lock:
            if self.armed:
                return
            self._armed, self._estop = True, ""
            self.changes += 1
        log.warning("armed by %s: the robot may move", source)

    def disarm(self, source: str) -> None:
        with self._lock:
            if not self._armed:
                return
            self._armed = False
            self.changes += 1
        log.warning("disarmed by %s: zeros until armed", source)

    def estop(self, source: str) -> None:
        """Latch zero until the next arm."""
        with self._lock:
            if self._estop:
                return
            self._estop = source or "e-stop"
            self.changes += 1
        log.error("E-STOP by %s: zeros until re-armed", source)

