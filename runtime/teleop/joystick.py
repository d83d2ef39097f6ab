"""A gamepad as a teleoperation source, read from the kernel's joystick interface.

    source = JoystickTeleop("/dev/input/js0").open(top_speed=(0.5, 0.5, 1.0))
    python -m runtime.record --out rec/ --teleop joystick:/dev/input/js0 --mode continuous --rate 10 ...

`/dev/input/jsN`, or any file or FIFO that delivers its records: 8-byte
`js_event` records (u32 time in ms, s16 value, u8 type, u8 number; type 0x01
button, 0x02 axis, 0x80 flag for the initial state). `GamepadMap` says which
axis drives which motion, the dead-man button (nothing moves unless it is
held) and the control buttons; `StickState` turns them into a command, for
this source and for ROS 2 `sensor_msgs/Joy` (runtime/teleop/ros2.py).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import dataclass

import numpy as np

from runtime.hardware import ZERO, TeleopCommand, TeleopError, TeleopEvent, TeleopSource

log = logging.getLogger(__name__)

JS_EVENT = struct.Struct("<IhBB")  # linux/joystick.h struct js_event: __u32 time (ms), __s16 value, __u8 type, number
JS_EVENT_BUTTON, JS_EVENT_AXIS, JS_EVENT_INIT = 0x01, 0x02, 0x80
AXIS_MAX = 32767


@dataclass(frozen=True)
class GamepadMap:
    """Which stick drives what (the Xbox-style layout of the kernel's xpad driver by default)."""

    axes: tuple[int, int, int] = (1, 0, 3)  # axis numbers driving (linear_x, linear_y, angular_z): left stick
    #                                          up/down, left stick left/right, right stick left/right
    signs: tuple[int, int, int] = (-1, -1, -1)  # stick up and left read negative; forward, left and CCW are positive
    deadman: int = 4  # button that must be held for anything to move (LB); -1: none
    stick_dead_zone: float = 0.08  # |fraction| below this is 0 (a released stick rarely reads exactly 0)
    controls: tuple[tuple[int, str], ...] = ((0, "start"), (1, "end"), (2, "discard"), (7, "quit"))  # A B X Start


class StickState:
    """Axis and button state of a gamepad, turned into a command (shared by the joystick and ROS 2 Joy)."""

    def __init__(self, mapping: GamepadMap):
        self.mapping = mapping
        self.axes: dict[int, float] = {}
        self.buttons: dict[int, bool] = {}

    @property
    def deadman(self) -> bool:
        return self.mapping.deadman < 0 or self.buttons.get(self.mapping.deadman, False)

    @property
    def held(self) -> bool:
        """The person is driving: the dead-man button is pressed (never, for a map without one)."""
        return self.deadman and self.mapping.deadman >= 0

    def press(self, button: int, pressed: bool) -> str | None:
        """Record a button's state; the episode control it gives when it was just pressed, else None."""
        was = self.buttons.get(button, False)
        self.buttons[button] = pressed
        return self.control_for(button) if pressed and not was else None

    def deflection(self) -> tuple[float, float, float] | None:
        """`fraction()` while a stick is deflected (dead-man held): a move; None otherwise."""
        fraction = self.fraction()
        return fraction if any(fraction) else None

    def fraction(self) -> tuple[float, float, float]:
        if not self.deadman:
            return ZERO
        out = []
        for axis, sign in zip(self.mapping.axes, self.mapping.signs):
            v = float(np.clip(self.axes.get(axis, 0.0), -1.0, 1.0)) * sign
            out.append(0.0 if abs(v) < self.mapping.stick_dead_zone else v)
        return tuple(out)

    def control_for(self, button: int) -> str | None:
        return dict(self.mapping.controls).get(button)


class JoystickTeleop(TeleopSource):
    """A gamepad's `js_event` records from /dev/input/jsN (or a FIFO/file with the same records)."""

    name = "joystick"

    def __init__(self, path: str, mapping: GamepadMap = GamepadMap()):
        self.path, self.mapping = str(path), mapping
        self.state = StickState(mapping)
        self.fd: int | None = None
        self._buffer = b""
        self.lost = False

    def open(self, top_speed=(0.5, 0.5, 1.0)) -> JoystickTeleop:
        super().open(top_speed)
        try:  # non-blocking: a FIFO opens without a writer, a device never blocks the control loop
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            hint = ("is the gamepad connected? (ls /dev/input/js*; the joydev module: sudo modprobe joydev)"
                    if e.errno == errno.ENOENT else "add yourself to the input group (sudo usermod -aG input $USER)"
                    if e.errno == errno.EACCES else "")
            raise TeleopError(f"--teleop joystick:{self.path}: cannot open ({e.strerror}); {hint}") from e
        return self

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self) -> bytes:
        chunks = []
        while self.fd is not None:
            try:
                data = os.read(self.fd, JS_EVENT.size * 64)
            except BlockingIOError:
                break
            except OSError as e:  # ENODEV: unplugged. Nobody drives any more: zero, and say so once
                if not self.lost:
                    log.warning("joystick %s lost (%s): commands are zero", self.path, e.strerror)
                self.lost = True
                self.state = StickState(self.mapping)
                self.close()
                break
            if not data:  # a FIFO with no writer at the moment
                break
            chunks.append(data)
        return b"".join(chunks)

    def poll(self, now: float) -> list[TeleopEvent]:
        data = self._buffer + self._read()
        usable = len(data) - len(data) % JS_EVENT.size
        self._buffer = data[usable:]
        events, moved = [], None
        for offset in range(0, usable, JS_EVENT.size):
            _ms, value, kind, number = JS_EVENT.unpack_from(data, offset)
            initial = bool(kind & JS_EVENT_INIT)
            kind &= ~JS_EVENT_INIT
            if kind == JS_EVENT_AXIS:
                self.state.axes[number] = value / AXIS_MAX
            elif kind == JS_EVENT_BUTTON:
                control = self.state.press(number, value != 0)
                if control and not initial:
                    events.append(TeleopEvent(control, ZERO, now))
            moved = self.state.deflection() or moved  # a deflection between two polls is still one move
        return events + self.moves(self.state.deflection() or moved, now)

    def command(self, now: float) -> TeleopCommand:
        return TeleopCommand(self.scale(self.state.fraction()), self.state.held)
