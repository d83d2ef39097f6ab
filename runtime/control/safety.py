"""What stands between the policy and the motors.

    gate = SafetyGate(SafetyConfig(max_speed=(0.5, 0.5, 1.0), max_accel=(1.0, 1.0, 2.0), dead_zone=0.1))
    command = gate.filter(action, now)      # limited, rate-limited, dead-zoned; zero on NaN/inf
    gate.zero(now)                          # on timeout, camera stall, exception, signal, exit

The rules:
- per-axis speed limits (clip) and acceleration limits (slew rate per second);
  slowing down is never rate-limited: stopping is always allowed at once, and a
  direction reversal brakes to zero at once, then ramps in the new direction;
- a dead zone: |v| below it is 0 (the original stack used 0.1: docs/original-stack.md);
- `--base diff` (a differential base, which ignores linear.y): a lateral
  intent becomes a rotation toward it, full |vy| as full |wz| (`--lateral
  rotate`), or is refused and the robot stops (`--lateral refuse`); so the
  command logged and sent is the one the base executes;
- NaN/inf anywhere in an action -> zero and counted;
- `CommandWatchdog`: an action older than its timeout (the drive's
  `--cmd-timeout`, default 0.5 s as ros2_control's diff_drive_controller) is
  not executed: zero instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SafetyConfig:
    max_speed: tuple[float, float, float] = (0.5, 0.5, 1.0)  # |vx|, |vy| m/s, |wz| rad/s after un-normalising
    max_accel: tuple[float, float, float] = (2.0, 2.0, 4.0)  # m/s^2, m/s^2, rad/s^2; inf disables
    dead_zone: float = 0.0  # per axis, same units as the command; 0.1 reproduces the original rig
    base: str = "omni"  # omni: vx, vy, wz as predicted; diff: a base that cannot move sideways (BASES)
    lateral: str = "rotate"  # --base diff: what a lateral intent becomes (LATERAL: rotate or refuse)

    @classmethod
    def from_args(cls, args) -> SafetyConfig:
        return cls(tuple(args.max_speed), tuple(args.max_accel), args.dead_zone, args.base, args.lateral)


BASES = ("omni", "diff")
LATERAL = ("rotate", "refuse")


def add_safety_arguments(ap) -> None:
    d = SafetyConfig
    ap.add_argument("--max-speed", type=float, nargs=3, default=d.max_speed, metavar=("VX", "VY", "WZ"),
                    help="per-axis speed limits: m/s, m/s, rad/s")
    ap.add_argument("--max-accel", type=float, nargs=3, default=d.max_accel, metavar=("AX", "AY", "AW"),
                    help="per-axis acceleration limits: m/s^2, m/s^2, rad/s^2 (braking is never limited)")
    ap.add_argument("--dead-zone", type=float, default=d.dead_zone, help="|v| below this is sent as 0")
    ap.add_argument("--base", default=d.base, choices=BASES,
                    help="omni: holonomic (mecanum, omni wheels); diff: differential drive (TurtleBot-class), "
                         "which cannot move sideways: see --lateral (docs/motors.md)")
    ap.add_argument("--lateral", default=d.lateral, choices=LATERAL,
                    help="--base diff: a lateral intent (vy) becomes a rotation toward it (rotate: wz += vy / "
                         "max vy * max wz), or the command is refused and the robot stops (refuse)")


class SafetyGate:
    def __init__(self, config: SafetyConfig = SafetyConfig()):
        self.config = config
        self.last = np.zeros(3)
        self.last_time: float | None = None
        self.nonfinite = 0  # actions refused for NaN/inf
        self.refused_lateral = 0  # --base diff --lateral refuse: actions refused for a lateral intent

    def _pad(self, action) -> np.ndarray:
        a = np.zeros(3)
        values = np.asarray(action, dtype=np.float64).reshape(-1)[:3]
        a[: len(values)] = values
        return a

    def for_base(self, a: np.ndarray) -> np.ndarray | None:
        """--base diff: the command a differential base can execute; None when it must be refused."""
        if self.config.base != "diff" or abs(a[1]) <= self.config.dead_zone:
            a[1] = 0.0 if self.config.base == "diff" else a[1]
            return a
        if self.config.lateral == "refuse":
            return None
        vy_max, wz_max = self.config.max_speed[1], self.config.max_speed[2]
        # left (+vy) turns left (+wz): full lateral intent becomes full rotation, then the limits apply
        a[2] += a[1] / vy_max * wz_max if vy_max > 0 else 0.0
        a[1] = 0.0
        return a

    def filter(self, action, now: float) -> np.ndarray:
        """Action (2 or 3 axes, robot units) -> the (vx, vy, wz) command that may be sent now."""
        a = self._pad(action)
        if not np.isfinite(a).all():
            self.nonfinite += 1
            return self.zero(now)
        a = self.for_base(a)
        if a is None:
            self.refused_lateral += 1
            return self.zero(now)
        limit = np.asarray(self.config.max_speed, dtype=np.float64)
        a = np.clip(a, -limit, limit)
        a[np.abs(a) < self.config.dead_zone] = 0.0
        if self.last_time is not None:
            dt = max(now - self.last_time, 0.0)
            accel = np.asarray(self.config.max_accel, dtype=np.float64)
            # an unlimited axis (inf) allows any step, also at dt == 0 where inf * 0 would be NaN
            step = np.where(np.isinf(accel), np.inf, np.where(np.isinf(accel), 0.0, accel) * dt)
            # Stopping is always allowed at once: slowing down in the same direction goes straight to
            # the command, and a reversal brakes to zero at once (not slewed through zero, which kept
            # the robot moving the old way); only speed gained away from zero is rate-limited.
            reversal = np.sign(a) * np.sign(self.last) < 0
            start = np.where(reversal, 0.0, self.last)
            braking = ~reversal & (np.abs(a) < np.abs(self.last))
            a = np.where(braking, a, start + np.clip(a - start, -step, step))
        self.last, self.last_time = a, now
        return a.copy()

    def zero(self, now: float) -> np.ndarray:
        self.last, self.last_time = np.zeros(3), now
        return self.last.copy()


class CommandWatchdog:
    """Is the newest action fresh enough to execute?"""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.stamp = -math.inf

    def feed(self, stamp: float) -> None:
        self.stamp = stamp

    def fresh(self, now: float) -> bool:
        return now - self.stamp <= self.timeout
