"""How a drive is armed and e-stopped: the options, and what they make of the motion authority.

    python -m runtime.drive --bundle b/ --serial /dev/ttyUSB0 --start-disarmed        # 'a' arms, space stops
    python -m runtime.drive --bundle b/ --motor ros2 --start-disarmed --gamepad /dev/input/js0 \\
        --arm-button 7 --estop-button 1 --reset-button 6 --estop-gpio /sys/class/gpio/gpio17/value

    spec = ArmSpec.from_args(args)
    sources = open_arm_sources(spec, authority)        # runtime/control/arm_sources.py; close each at the end

The authority (runtime/control/authority.py) holds the state; the sources
change it from their own threads (runtime/control/arm_sources.py: the
terminal's keys, a gamepad's buttons, GPIO lines; the ROS 2 services and
e-stop topic are runtime/control/ros2.py). An e-stop latches: only an
explicit reset (never a timeout, a reconnect or a restart), then an arm,
moves the robot again. A process that starts with `start_disarmed` (the
default of the systemd unit) sends zeros until armed, so a crash-restart
comes back disarmed; one without it arms itself once the pre-arm checks pass.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

GPIO_PRESSED = ("low", "high")


@dataclass(frozen=True)
class ArmSpec:
    start_disarmed: bool = False  # zeros until a source arms (the systemd unit's default); else armed at start-up
    #                               once the pre-arm checks pass
    arm_key: str = "a"  # terminal key that arms (read only when stdin is a terminal)
    estop_key: str = " "  # terminal key that e-stops
    disarm_key: str = "d"  # terminal key that disarms
    reset_key: str = "r"  # terminal key that resets a latched e-stop (to disarmed; an arm follows)
    gamepad: str | None = None  # Linux joystick device, e.g. /dev/input/js0
    arm_button: int | None = None  # --gamepad: button number that arms
    estop_button: int | None = None  # --gamepad: button number that e-stops (held = pressed)
    reset_button: int | None = None  # --gamepad: button number that resets a latched e-stop
    gamepad_timeout: float = 0.5  # s the gamepad may go unread (its thread, its device) before it counts as lost
    arm_gpio: str | None = None  # file holding 0/1 (sysfs GPIO value): its rising edge arms
    estop_gpio: str | None = None  # file holding 0/1: the e-stop loop's line
    estop_gpio_pressed: str = "low"  # the level that means pressed: "low" for a normally-closed loop (an open
    #                                  circuit, a cut wire or a lost supply reads pressed: fail-safe), "high"
    #                                  for a normally-open button that pulls the line up (a cut wire reads released)
    gpio_period: float = 0.02  # s between two reads of a GPIO line; 5 missed reads count as lost
    ros_estop_period: float | None = None  # s: the ROS topic ~/estop must arrive this often (false = released),
    #                                         else the e-stop latches; None: the topic only e-stops on true
    terminal_keys: bool = True  # the terminal's keys above, when stdin is a terminal; off when the keyboard drives
    #                             a take-over (--teleop keyboard): both would read the one terminal, and its
    #                             take-over keys (a: left, d: right, space: stop) would arm, disarm and e-stop

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ArmSpec:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def add_arm_arguments(ap: argparse.ArgumentParser) -> None:
    d = ArmSpec
    ap.add_argument("--start-disarmed", action="store_true",
                    help="send zeros until armed (a key, a gamepad button, a GPIO line or the ROS service ~/arm); "
                         "the systemd unit's default, so a crash-restart comes back disarmed. Without it the drive "
                         "arms itself once the pre-arm checks pass (docs/reliability.md)")
    ap.add_argument("--arm-key", default=d.arm_key, help="terminal key that arms (default 'a')")
    ap.add_argument("--estop-key", default=d.estop_key, help="terminal key that e-stops (default space)")
    ap.add_argument("--disarm-key", default=d.disarm_key, help="terminal key that disarms (default 'd')")
    ap.add_argument("--reset-key", default=d.reset_key,
                    help="terminal key that resets a latched e-stop to disarmed (default 'r'; then arm)")
    ap.add_argument("--gamepad", help="joystick device for --arm-button / --estop-button, e.g. /dev/input/js0")
    ap.add_argument("--arm-button", type=int, help="--gamepad button number that arms")
    ap.add_argument("--estop-button", type=int, help="--gamepad button number that e-stops")
    ap.add_argument("--reset-button", type=int, help="--gamepad button number that resets a latched e-stop")
    ap.add_argument("--gamepad-timeout", type=float, default=d.gamepad_timeout,
                    help="s the gamepad may go unread before it counts as lost (an e-stop gamepad then latches "
                         "the e-stop, an arm-only one disarms)")
    ap.add_argument("--arm-gpio", help="file holding 0/1, e.g. /sys/class/gpio/gpio17/value: a rising edge arms")
    ap.add_argument("--estop-gpio", help="file holding 0/1: the e-stop loop's line (unreadable: e-stop)")
    ap.add_argument("--estop-gpio-pressed", choices=GPIO_PRESSED, default=d.estop_gpio_pressed,
                    help="the --estop-gpio level that means pressed: low (default) for a normally-closed loop, "
                         "where a cut wire reads pressed; high for a normally-open button (not fail-safe)")
    ap.add_argument("--gpio-period", type=float, default=d.gpio_period, help="s between two reads of a GPIO line")
    ap.add_argument("--ros-estop-period", type=float,
                    help="s: the ROS topic ~/estop (std_msgs/Bool, false = released) must arrive this often, or "
                         "the e-stop latches; unset: the topic only e-stops on true")
