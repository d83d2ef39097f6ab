"""Teleoperation sources: what a person drives the robot with, to record demonstrations or to take over.

    source = KeyboardTeleop().open(top_speed=(0.5, 0.5, 1.0))            # the terminal (works over ssh -t)
    source = JoystickTeleop("/dev/input/js0").open(top_speed)            # a gamepad (Linux joystick API)
    source = open_teleop("ros2-joy:/joy", top_speed)                     # by name: runtime/teleop_select.py
    events = source.poll(time.monotonic())   # [TeleopEvent("move", (vx, vy, wz)), TeleopEvent("end"), ...]
    command = source.command(now)            # TeleopCommand(velocity, held): the command in force now
    source.close()

Velocities are the robot's units (m/s, m/s, rad/s): a full key press or a
full stick is the top speed of that axis (`--max-speed`); the recorder and the
drive send them through the same safety gate as the policy's actions.

Two views of one device, for the two recording modes:
- `poll(now)` returns the events since the last poll: a `move` (step mode: one
  key press, one Twist or Joy message, or a deflected stick is one move; the
  recorder ignores moves that arrive while a move runs, so a held key or stick
  gives back-to-back moves, never a backlog) and the episode controls
  `start`, `end`, `discard` (drop the episode and record it again) and `quit`.
- `command(now)` is the velocity in force now (continuous mode, take-over),
  and `held`: whether the person is driving (a key's move still running, the
  dead-man button pressed, a fresh message).

The keyboard (the original collector's move-per-key scheme, docs/recording.md):
w/s forward/back, a/d left/right, q/e/z/c the diagonals, r/t turn left/right,
space stop; n start, m end, u discard, Esc quit; Ctrl-C stops as in
`runtime.drive`. The terminal is put in non-canonical mode without echo
(signals stay on) and restored on close.

The gamepad is read from the kernel's joystick interface (`/dev/input/jsN`, or
any file or FIFO that delivers its records): 8-byte `js_event` records (u32
time in ms, s16 value, u8 type, u8 number; type 0x01 button, 0x02 axis, 0x80
flag for the initial state). `GamepadMap` says which axis drives which motion,
the dead-man button (nothing moves unless it is held) and the control buttons.

A user's device plugs in as `package.module:ClassName`, a `TeleopSource`
subclass constructed with no arguments and then `open(top_speed)`ed (it reads
its own settings, as a vendor motor class does; docs/recording.md).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import struct
import termios
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from runtime.hardware import DeviceError

log = logging.getLogger(__name__)

CONTROLS = ("start", "end", "discard", "quit")
ZERO = (0.0, 0.0, 0.0)


class TeleopError(DeviceError):
    """A teleop device that cannot be used; the message says what to check."""


@dataclass(frozen=True)
class TeleopEvent:
    kind: str  # "move" or one of CONTROLS
    velocity: tuple[float, float, float] = ZERO  # a move's body velocity (m/s, m/s, rad/s)
    time: float = 0.0  # time.monotonic() when it was read


@dataclass(frozen=True)
class TeleopCommand:
    velocity: tuple[float, float, float]  # in force now (m/s, m/s, rad/s); zeros when nobody drives
    held: bool  # the person is driving now (take-over): a running key move, the dead-man held, a fresh message


class TeleopSource(ABC):
    """One device. `open(top_speed)` before use; `close()` restores what it changed (terminal modes)."""

    name: str = "teleop"
    top_speed: tuple[float, float, float] = (0.5, 0.5, 1.0)

    def open(self, top_speed=(0.5, 0.5, 1.0)) -> TeleopSource:
        self.top_speed = tuple(float(v) for v in top_speed)
        return self

    def close(self) -> None:  # noqa: B027 - a source with nothing to release need not override it
        """Release the device; safe to call twice."""

    @abstractmethod
    def poll(self, now: float) -> list[TeleopEvent]:
        """Read what arrived (never blocks); the events since the last poll."""

    @abstractmethod
    def command(self, now: float) -> TeleopCommand:
        """The velocity in force now and whether the person is driving."""

    def scale(self, fraction) -> tuple[float, float, float]:
        """Per-axis fraction of the top speed (-1..1) -> body velocity."""
        return tuple(float(f) * s for f, s in zip(fraction, self.top_speed))

    def moves(self, fraction, now: float) -> list[TeleopEvent]:
        """One `move` at `fraction` of the top speed, or none when `fraction` is None (nothing deflected)."""
        return [] if fraction is None else [TeleopEvent("move", self.scale(fraction), now)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- keyboard ---------------------------------------------------------------------------------------
KEY_MOVES = {  # fraction of the top speed per axis (linear_x forward, linear_y left, angular_z counter-clockwise)
    "w": (1, 0, 0), "s": (-1, 0, 0), "a": (0, 1, 0), "d": (0, -1, 0),
    "q": (1, 1, 0), "e": (1, -1, 0), "z": (-1, 1, 0), "c": (-1, -1, 0),
    "r": (0, 0, 1), "t": (0, 0, -1), " ": (0, 0, 0),
}
KEY_CONTROLS = {"n": "start", "m": "end", "u": "discard", "\x1b": "quit"}


class KeyboardTeleop(TeleopSource):
    """Keys from a terminal (the controlling one, /dev/tty, by default): one key press is one move."""

    name = "keyboard"

    def __init__(self, tty: str | None = None, hold_s: float = 0.5):
        self.tty = tty or "/dev/tty"
        self.hold_s = hold_s  # s a key's move stays in force (continuous mode, take-over); the 0.4 s move + slack
        self.fd: int | None = None
        self._saved = None
        self._last: TeleopEvent | None = None
        self._pending = b""

    def open(self, top_speed=(0.5, 0.5, 1.0)) -> KeyboardTeleop:
        super().open(top_speed)
        try:
            fd = os.open(self.tty, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as e:
            raise TeleopError(f"--teleop keyboard: cannot open the terminal {self.tty} ({e.strerror}); run the "
                              f"recorder in a terminal (over SSH: ssh -t), or use a gamepad (joystick:/dev/input/js0)"
                              ) from e
        try:
            saved = termios.tcgetattr(fd)
        except termios.error as e:
            os.close(fd)
            raise TeleopError(f"--teleop keyboard: {self.tty} is not a terminal ({e})") from e
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # one key at a time, not echoed; ISIG stays: Ctrl-C stops
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 0, 0
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        self.fd, self._saved = fd, saved
        return self

    def close(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            termios.tcsetattr(fd, termios.TCSANOW, self._saved)  # the person gets their terminal back
        except termios.error:
            pass
        os.close(fd)

    def _read(self) -> bytes:
        chunks = []
        while True:
            try:
                data = os.read(self.fd, 256)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EIO, errno.ENXIO):  # the terminal went away (SSH dropped): nobody drives
                    break
                raise
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def poll(self, now: float) -> list[TeleopEvent]:
        if self.fd is None:
            return []
        data, events, i = self._pending + self._read(), [], 0
        self._pending = b""
        while i < len(data):
            ch = chr(data[i])
            if ch == "\x1b" and i + 1 < len(data) and chr(data[i + 1]) in "[O":  # arrow/function key: skip it
                j = i + 2
                while j < len(data) and not (0x40 <= data[j] <= 0x7E):
                    j += 1
                i = j + 1
                continue
            key = ch.lower()
            if key in KEY_MOVES:
                self._last = TeleopEvent("move", self.scale(KEY_MOVES[key]), now)
                events.append(self._last)
            elif ch in KEY_CONTROLS:
                events.append(TeleopEvent(KEY_CONTROLS[ch], ZERO, now))
            i += 1
        return events

    def command(self, now: float) -> TeleopCommand:
        if self._last is None or now - self._last.time > self.hold_s:
            return TeleopCommand(ZERO, False)
        return TeleopCommand(self._last.velocity, True)

    def ask(self, prompt: str, stop=lambda: False) -> str:
        """A line typed on the same terminal (the instruction), echoed while typed; "" when `stop()` turns true
        or the terminal goes away."""
        if self.fd is None:
            raise TeleopError("keyboard not open")
        mode = termios.tcgetattr(self.fd)
        termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)  # the person's own line editing and echo
        try:
            with open(self.tty, "w") as out:
                out.write(prompt)
                out.flush()
            line = b""
            while not line.endswith(b"\n"):
                if stop():
                    return ""
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    data = self._read()
                    if not data:  # readable and empty: the terminal hung up
                        return ""
                    line += data
            return line.decode("utf-8", "replace").strip()
        finally:
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)


# -- gamepad through the Linux joystick interface -------------------------------------------------------
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
