"""The drive loop's settings (mode, rates, timeouts, link give-up) and their command-line options.

    config = DriveConfig(mode="step", cmd_timeout=0.5)
    add_loop_arguments(ap); config = DriveConfig.from_args(ap.parse_args())

The defaults live here once: `runtime.drive`'s options, the recorder's and the simulator's read them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

MODES = ("continuous", "step")
@dataclass(frozen=True)
class DriveConfig:
    mode: str = "continuous"  # "continuous" or "step"
    rate: float = 20.0  # control loop Hz (continuous mode); also how often step mode checks the clock
    step_duration: float = 0.4  # s per move in step mode (the recordings' 0.4 s keypress moves)
    cmd_timeout: float = 0.5  # s: zero when no fresh action arrived within this (ros2_control's default)
    camera_timeout: float = 0.5  # s: a camera read that waits longer, or a frame older, counts as a stall
    max_steps: int | None = None  # stop after this many inference steps
    status: bool = True  # one live status line on stderr
    give_up_after: float = 5.0  # s a motor link may stay down before the run ends (MotorLinkLost)
    auto_resume: bool = False  # never give up on the link: resume whenever it comes back
    quiet_when_disarmed: bool = False  # a ROS 2 motor side publishes nothing while disarmed (twist_mux hand-over)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DriveConfig:
        return cls(args.mode, args.rate, args.step_duration, args.cmd_timeout, args.camera_timeout,
                   args.max_steps, status=not args.quiet, give_up_after=args.give_up_after,
                   auto_resume=args.auto_resume, quiet_when_disarmed=args.quiet_when_disarmed)


def add_loop_arguments(ap: argparse.ArgumentParser) -> None:
    d = DriveConfig
    # --mode and --step-duration default to the bundle's driving record (spec_from_args), not to DriveConfig's
    ap.add_argument("--mode", choices=MODES, help="default: the bundle's driving record (step for key-press "
                                                  "recordings; runtime/policy/driving.py)")
    ap.add_argument("--rate", type=float, default=d.rate, help="control loop Hz")
    ap.add_argument("--step-duration", type=float,
                    help="--mode step: seconds per move (default: the bundle's frame spacing, 0.4 s when unrecorded)")
    ap.add_argument("--cmd-timeout", type=float, default=d.cmd_timeout,
                    help="zero when the newest action's frame is older than this (s); also the serial "
                         "controller's own watchdog")
    ap.add_argument("--camera-timeout", type=float, default=d.camera_timeout,
                    help="a camera read that waits longer, or a frame older, is a stall (s)")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    ap.add_argument("--give-up-after", type=float, default=d.give_up_after,
                    help="end the run when the motor link stays down this long (s), rather than moving again by "
                         "itself when a cable is re-plugged")
    ap.add_argument("--auto-resume", action="store_true",
                    help="never give up on the motor link: resume whenever it comes back")
    ap.add_argument("--quiet-when-disarmed", action="store_true",
                    help="--motor ros2: publish nothing while disarmed, so that twist_mux hands the base to a "
                         "lower-priority input (docs/motors.md)")

