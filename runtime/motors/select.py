"""Which motor side `runtime.drive` talks to: `--motor` resolved to a connected `MotorController`.

    python -m runtime.drive --bundle b/ --serial /dev/ttyUSB0             # our serial protocol (same as --motor serial)
    python -m runtime.drive --bundle b/ --dry-run                         # print the commands (--motor dry-run)
    python -m runtime.drive --bundle b/ --motor ros2 --cmd-vel-stamped     # geometry_msgs/TwistStamped on /cmd_vel
    python -m runtime.drive --bundle b/ --motor mypackage.base:MyBase      # a vendor library in one class
    python -m runtime.drive --bundle b/ --motor mybase                     # an entry point in group mobile_vla.motors

A vendor class (`module:Class` or an entry point) must subclass
`runtime.hardware.MotorController`. It is constructed with no arguments and
then `connect()`ed: it reads its own settings (port, gains, calibration) from
its environment or its own configuration file, so the drive's command line
never has to know a vendor's options. docs/motors.md has a complete example.
Importing a vendor class runs its module's code: name only code you trust,
as with any Python import.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields

from runtime.hardware import MotorController, check_user_class, load_user_class
from runtime.motors.dry_run import DryRunMotor
from runtime.motors.serial_controller import SerialMotorController
from runtime.motors.serial_link import MotorError

BUILT_IN = ("serial", "dry-run", "ros2")
ENTRY_POINT_GROUP = "mobile_vla.motors"
WHEELS = ("mecanum", "omni3", "differential")
MOTOR_NEEDS = "connect, disconnect, is_connected, send_velocity -> SentCommand, stop"  # a vendor class's methods
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotorSpec:
    motor: str | None = None  # serial, dry-run, ros2, package.module:Class or an entry point; None: from below
    serial: str | None = None  # our serial controller's port (alone, it means motor="serial")
    dry_run: bool = False  # no motors: print the commands (alone, it means motor="dry-run")
    baudrate: int = 115200  # serial link speed; the firmware's default
    cmd_vel_topic: str = "cmd_vel"  # --motor ros2: the velocity topic; relative: in the node's namespace
    cmd_vel_stamped: bool = False  # --motor ros2: TwistStamped (Jazzy's base controllers) instead of Twist
    cmd_vel_frame: str = "base_link"  # --motor ros2 --cmd-vel-stamped: header.frame_id
    wheels: str | None = None  # serial: send wheel speeds for this base (WHEELS) instead of a body velocity
    # serial: drive a controller whose configuration cannot be checked (no QUERY_INFO answer, too old to say)
    allow_unverified_controller: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MotorSpec:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def add_motor_arguments(ap: argparse.ArgumentParser) -> None:
    """The motor-side options every command that moves the robot shares (runtime.drive, runtime.preflight,
    runtime.motor_stop, sim and the recorder)."""
    d = MotorSpec
    ap.add_argument("--motor", help="motor side: serial (with --serial PORT), dry-run, ros2, package.module:ClassName "
                                    "(a runtime.hardware.MotorController subclass, constructed with no arguments), "
                                    "or an entry point name in group mobile_vla.motors (docs/motors.md)")
    port = ap.add_mutually_exclusive_group()
    port.add_argument("--serial", help="motor controller port, e.g. /dev/ttyUSB0 or /dev/mobile-vla-motor "
                                       "(alone, it means --motor serial)")
    port.add_argument("--dry-run", action="store_true", help="no motors: print the commands (--motor dry-run)")
    ap.add_argument("--baudrate", type=int, default=d.baudrate)
    ap.add_argument("--cmd-vel-topic", default=d.cmd_vel_topic,
                    help="--motor ros2: the velocity topic (relative names follow --ros-args -r __ns:=/robot1)")
    ap.add_argument("--cmd-vel-stamped", action="store_true",
                    help="--motor ros2: publish geometry_msgs/TwistStamped (Jazzy's base controllers), "
                         "not Twist (Humble's)")
    ap.add_argument("--cmd-vel-frame", default=d.cmd_vel_frame,
                    help="--motor ros2 --cmd-vel-stamped: header.frame_id")
    ap.add_argument("--wheels", choices=WHEELS, help="send wheel speeds for this base instead of a body velocity")
    ap.add_argument("--allow-unverified-controller", action="store_true",
                    help="--serial: drive a controller that does not answer QUERY_INFO (or is too old to report its "
                         "base kind), unchecked; without it such a controller is refused (docs/motors.md: the risk)")


def motor_kind(spec: MotorSpec) -> str:
    """`--motor`, or the older `--serial PORT` / `--dry-run` spellings; a clear error when they disagree."""
    chosen, serial, dry_run = spec.motor, spec.serial, spec.dry_run
    if chosen is None:
        if serial:
            return "serial"
        if dry_run:
            return "dry-run"
        raise MotorError("no motor side chosen: give --serial PORT, --dry-run, --motor ros2, "
                         "--motor package.module:ClassName or --motor ENTRY_POINT")
    if chosen == "serial" and not serial:
        raise MotorError("--motor serial needs --serial PORT (e.g. /dev/ttyUSB0 or /dev/mobile-vla-motor)")
    if serial and chosen != "serial":
        raise MotorError(f"--serial {serial} is for --motor serial, but --motor {chosen} was given")
    if dry_run and chosen != "dry-run":
        raise MotorError(f"--dry-run and --motor {chosen} both choose a motor side; give one")
    return chosen


def _entry_points() -> dict:
    from importlib.metadata import entry_points  # noqa: PLC0415  ~20 ms of drive start-up; a vendor --motor only

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_motor_class(spec: str) -> type:
    """`package.module:ClassName` or the name of an entry point in group mobile_vla.motors -> the class."""
    if ":" in spec:
        return load_user_class(spec, "--motor", MotorController, MotorError, MOTOR_NEEDS)
    points = _entry_points()
    if spec not in points:
        names = ", ".join(sorted(points)) or "none installed"
        raise MotorError(f"--motor {spec}: not one of {', '.join(BUILT_IN)}, not package.module:ClassName, "
                         f"and no entry point of that name in group {ENTRY_POINT_GROUP} ({names})")
    try:
        cls = points[spec].load()
    except Exception as e:
        raise MotorError(f"--motor {spec}: entry point {points[spec].value} failed to load: "
                         f"{type(e).__name__}: {e}") from e
    return check_user_class(cls, spec, "--motor", MotorController, MotorError, MOTOR_NEEDS)


def open_motor(spec: MotorSpec, watchdog_s: float = 0.5, printer=None, max_speed=None,
               base: str | None = None) -> MotorController:
    """The spec's motor side, connected. `watchdog_s`: our serial controller zeroes by itself when no command
    arrived for this long (the drive's --cmd-timeout; the board caps it at 1 s). `max_speed`: the drive's
    --max-speed, which our serial controller's limits must allow; `base`: the drive's --base (omni, diff), which
    must be the board's base kind (both checked at every connect; None: not compared). Raises MotorError with
    what to check."""
    kind = motor_kind(spec)
    if kind == "dry-run":
        return DryRunMotor(printer=printer).connect()
    if kind == "serial":
        from runtime.motors.kinematics import make_base  # noqa: PLC0415  --wheels only; drive start-up

        wheels = make_base(spec.wheels) if spec.wheels else None
        motor = SerialMotorController(spec.serial, spec.baudrate, watchdog_ms=int(watchdog_s * 1000),
                                      wheels=wheels, max_speed=max_speed, base=base,
                                      allow_unverified=spec.allow_unverified_controller).connect()
        if not motor.ready:  # --allow-unverified-controller: still driven (a one-way link may work), but say so
            log.warning("%s: the motor controller did not answer within %.1f s (wrong port or --baudrate %d, no "
                        "firmware on the board, or a board that needs DTR: docs/firmware.md); every command will "
                        "be logged as unacknowledged", spec.serial, motor.ready_timeout_s, spec.baudrate)
        return motor
    if kind == "ros2":
        from runtime.motors.ros2 import Ros2MotorController  # noqa: PLC0415  ROS 2 only; robot start-up
        from runtime.ros2.node import Ros2Error  # noqa: PLC0415  ROS 2 only; robot start-up

        try:
            return Ros2MotorController(topic=spec.cmd_vel_topic, stamped=spec.cmd_vel_stamped,
                                       frame_id=spec.cmd_vel_frame).connect()
        except Ros2Error as e:
            raise MotorError(str(e)) from e
    cls = load_motor_class(kind)
    try:
        motor = cls()
        return motor.connect() or motor
    except MotorError:
        raise
    except Exception as e:  # a vendor library's own exception: name the class and keep its message
        raise MotorError(f"--motor {kind}: {cls.__name__}() failed to connect: {type(e).__name__}: {e}") from e
