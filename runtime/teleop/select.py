"""Which teleop source `--teleop SOURCE` names, opened: the built-in ones or a user's `module:Class`.

    source = open_teleop("keyboard", top_speed=(0.5, 0.5, 1.0))          # the terminal (works over ssh -t)
    source = open_teleop("keyboard:/dev/pts/3", top_speed)               # another terminal
    source = open_teleop("joystick:/dev/input/js0", top_speed)           # a gamepad (Linux joystick API)
    source = open_teleop("ros2-joy:/joy", top_speed)                     # sensor_msgs/Joy (runtime/teleop/ros2.py)
    source = open_teleop("ros2-twist:/cmd_vel_teleop", top_speed)        # any teleop node's Twist
    source = open_teleop("mypackage.pad:MyPad", top_speed)               # your own device, one class

A user's class must subclass `runtime.hardware.TeleopSource`; it is constructed
with no arguments and then `open(top_speed)`ed, as a vendor motor class is
(docs/recording.md). Importing it runs its module's code: name only code you
trust.
"""

from __future__ import annotations

from runtime.hardware import TeleopError, TeleopSource, load_user_class
from runtime.teleop.joystick import JoystickTeleop
from runtime.teleop.keyboard import KeyboardTeleop


def load_teleop_class(spec: str) -> type:
    """`package.module:ClassName` -> the class, a TeleopSource subclass; TeleopError naming what is wrong."""
    return load_user_class(spec, "--teleop", TeleopSource, TeleopError,
                           "open, close, poll -> [TeleopEvent], command -> TeleopCommand")


SOURCES = ("keyboard, keyboard:/dev/pts/N, joystick:/dev/input/jsN, ros2-joy:/joy, ros2-twist:/cmd_vel, "
           "package.module:Class")


def make_teleop(spec: str) -> TeleopSource:
    """The source named by `--teleop SPEC`, not opened yet."""
    kind, _, rest = spec.partition(":")
    if kind == "keyboard":
        return KeyboardTeleop(rest or None)
    if kind == "joystick":
        if not rest:
            raise TeleopError("--teleop joystick needs a device: joystick:/dev/input/js0")
        return JoystickTeleop(rest)
    if kind in ("ros2-joy", "ros2-twist"):
        from runtime.teleop.ros2 import Ros2JoyTeleop, Ros2TwistTeleop  # noqa: PLC0415  ROS 2 only; drive start-up

        if not rest.startswith("/"):
            example = "/joy" if kind == "ros2-joy" else "/cmd_vel"
            raise TeleopError(f"--teleop {spec}: expected a topic, e.g. {kind}:{example}")
        return Ros2JoyTeleop(rest) if kind == "ros2-joy" else Ros2TwistTeleop(rest)
    if rest and "." in kind or (rest and rest.isidentifier()):
        cls = load_teleop_class(spec)
        try:
            return cls()
        except Exception as e:
            raise TeleopError(f"--teleop {spec}: {cls.__name__}() failed: {type(e).__name__}: {e}") from e
    raise TeleopError(f"--teleop {spec}: expected one of {SOURCES}")


def open_teleop(spec: str, top_speed=(0.5, 0.5, 1.0)) -> TeleopSource:
    """`make_teleop(spec)`, opened with the top speed per axis (m/s, m/s, rad/s)."""
    source = make_teleop(spec)
    try:
        return source.open(top_speed) or source
    except TeleopError:
        raise
    except Exception as e:  # a user's class: keep its message, name the source
        raise TeleopError(f"--teleop {spec}: open() failed: {type(e).__name__}: {e}") from e
