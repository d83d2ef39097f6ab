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

import importlib
import sys

from runtime.hardware import MotorController
from runtime.motor import MotorError

BUILT_IN = ("serial", "dry-run", "ros2")
ENTRY_POINT_GROUP = "mobile_vla.motors"


def motor_kind(args) -> str:
    """`--motor`, or the older `--serial PORT` / `--dry-run` spellings; a clear error when they disagree."""
    chosen = getattr(args, "motor", None)
    serial, dry_run = getattr(args, "serial", None), getattr(args, "dry_run", False)
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
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_motor_class(spec: str) -> type:
    """`package.module:ClassName` or the name of an entry point in group mobile_vla.motors -> the class."""
    if ":" in spec:
        module_name, _, class_name = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise MotorError(f"--motor {spec}: cannot import {module_name} ({type(e).__name__}: {e}); "
                             f"is its package installed, or its folder on PYTHONPATH?") from e
        cls = getattr(module, class_name, None)
        if cls is None:
            raise MotorError(f"--motor {spec}: module {module_name} ({module.__file__}) has no {class_name}")
    else:
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
    if not (isinstance(cls, type) and issubclass(cls, MotorController)):
        raise MotorError(f"--motor {spec}: {cls!r} is not a subclass of runtime.hardware.MotorController "
                         f"(connect, disconnect, is_connected, send_velocity -> SentCommand, stop)")
    return cls


def open_motor(args, printer=None) -> MotorController:
    """The motor side named on the command line, connected. Raises MotorError with what to check."""
    kind = motor_kind(args)
    if kind == "dry-run":
        from runtime.motor import DryRunMotor

        return DryRunMotor(printer=printer).connect()
    if kind == "serial":
        from runtime.kinematics import make_base
        from runtime.motor import SerialMotorController

        wheels = make_base(args.wheels) if getattr(args, "wheels", None) else None
        motor = SerialMotorController(args.serial, args.baudrate, watchdog_ms=int(args.cmd_timeout * 1000),
                                      wheels=wheels).connect()
        if not motor.ready:  # still driven (a one-way link may work), but nobody should think it is fine
            print(f"warning: {args.serial}: the motor controller did not answer within {motor.ready_timeout_s:.1f} s "
                  f"(wrong port or --baudrate {args.baudrate}, no firmware on the board, or a board that needs "
                  f"DTR: docs/firmware.md); every command will be logged as unacknowledged", file=sys.stderr)
        return motor
    if kind == "ros2":
        from runtime.ros2 import Ros2Error, Ros2MotorController

        try:
            return Ros2MotorController(topic=args.cmd_vel_topic, stamped=args.cmd_vel_stamped,
                                       frame_id=args.cmd_vel_frame).connect()
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
