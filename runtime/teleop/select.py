"""Which teleop source `--teleop SOURCE` names, opened: the built-in ones or a user's `module:Class`.

    source = open_teleop("keyboard", top_speed=(0.5, 0.5, 1.0))          # the terminal (works over ssh -t)
    source = open_teleop("keyboard:/dev/pts/3", top_speed)               # another terminal
    source = open_teleop("joystick:/dev/input/js0", top_speed)           # a gamepad (Linux joystick API)
    source = open_teleop("ros2-joy:/joy", top_speed)                     # sensor_msgs/Joy (runtime/teleop/ros2.py)
    source = open_teleop("ros2-twist:/cmd_vel_teleop", top_speed)        # any teleop node's Twist
    source = open_teleop("mypackage.pad:MyPad", top_speed)               # your own device, one class
    source = open_teleop("ros2-joy:/joy", top_speed, joy_map="game_controller_node")   # another gamepad layout

A user's class must subclass `runtime.hardware.TeleopSource`; it is constructed
with no arguments and then `open(top_speed)`ed, as a vendor motor class is
(docs/recording.md). Importing it runs its module's code: name only code you
trust.
"""

from __future__ import annotations

from runtime.hardware import TeleopError, TeleopSource, load_user_class
from runtime.teleop.joystick import GAMEPAD_MAPS, JOY_NODE, XPAD, JoystickTeleop, gamepad_map
from runtime.teleop.keyboard import KeyboardTeleop


def load_teleop_class(spec: str) -> type:
    """`package.module:ClassName` -> the class, a TeleopSource subclass; TeleopError naming what is wrong."""
    return load_user_class(spec, "--teleop", TeleopSource, TeleopError,
                           "open, close, poll -> [TeleopEvent], command -> TeleopCommand")


__all__ = ["GAMEPAD_MAPS", "SOURCES", "add_joy_map_argument", "load_teleop_class", "make_teleop", "open_teleop"]
SOURCES = ("keyboard, keyboard:/dev/pts/N, joystick:/dev/input/jsN, ros2-joy:/joy, ros2-twist:/cmd_vel, "
           "package.module:Class")


def make_teleop(spec: str, joy_map: str | None = None) -> TeleopSource:
    """The source named by `--teleop SPEC`, not opened yet; `joy_map` (--joy-map) is a gamepad's layout: a name in
    GAMEPAD_MAPS or a JSON file (the joystick's default is xpad, ros2-joy's joy_node)."""
    kind, _, rest = spec.partition(":")
    if joy_map is not None and kind not in ("joystick", "ros2-joy"):
        raise TeleopError(f"--joy-map {joy_map}: only for --teleop joystick:... or ros2-joy:..., not {spec}")
    if kind == "keyboard":
        return KeyboardTeleop(rest or None)
    if kind == "joystick":
        if not rest:
            raise TeleopError("--teleop joystick needs a device: joystick:/dev/input/js0")
        return JoystickTeleop(rest, gamepad_map(joy_map, XPAD))
    if kind in ("ros2-joy", "ros2-twist"):
        from runtime.teleop.ros2 import Ros2JoyTeleop, Ros2TwistTeleop  # noqa: PLC0415  ROS 2 only; drive start-up

        if not rest.startswith("/"):
            example = "/joy" if kind == "ros2-joy" else "/cmd_vel"
            raise TeleopError(f"--teleop {spec}: expected a topic, e.g. {kind}:{example}")
        return Ros2JoyTeleop(rest, gamepad_map(joy_map, JOY_NODE)) if kind == "ros2-joy" else Ros2TwistTeleop(rest)
    if rest and "." in kind or (rest and rest.isidentifier()):
        cls = load_teleop_class(spec)
        try:
            return cls()
        except Exception as e:
            raise TeleopError(f"--teleop {spec}: {cls.__name__}() failed: {type(e).__name__}: {e}") from e
    raise TeleopError(f"--teleop {spec}: expected one of {SOURCES}")


def open_teleop(spec: str, top_speed=(0.5, 0.5, 1.0), joy_map: str | None = None) -> TeleopSource:
    """`make_teleop(spec, joy_map)`, opened with the top speed per axis (m/s, m/s, rad/s)."""
    source = make_teleop(spec, joy_map)
    try:
        return source.open(top_speed) or source
    except TeleopError:
        raise
    except Exception as e:  # a user's class: keep its message, name the source
        raise TeleopError(f"--teleop {spec}: open() failed: {type(e).__name__}: {e}") from e


def add_joy_map_argument(ap) -> None:
    """`--joy-map`, for every command that opens a teleop source (runtime.record, runtime.drive's take-over)."""
    ap.add_argument("--joy-map", help=f"--teleop joystick / ros2-joy: the gamepad's layout, {', '.join(GAMEPAD_MAPS)} "
                                      f"or a JSON file of runtime.teleop.GamepadMap fields (default: the source's)")
