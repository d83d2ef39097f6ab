"""A gamepad as a teleoperation source, read from the kernel's joystick interface.

    source = JoystickTeleop("/dev/input/js0").open(top_speed=(0.5, 0.5, 1.0))
    python -m runtime.record --out rec/ --teleop joystick:/dev/input/js0 --mode continuous --rate 10 ...
    python -m runtime.record ... --teleop joystick:/dev/input/js0 --joy-map mypad.json   # another layout

`/dev/input/jsN`, or any file or FIFO that delivers its records: 8-byte
`js_event` records (u32 time in ms, s16 value, u8 type, u8 number; type 0x01
button, 0x02 axis, 0x80 flag for the initial state). `GamepadMap` says which
axis drives which motion, the dead-man button (nothing moves unless it is
held) and the control buttons; `StickState` turns them into a command, for
this source and for ROS 2 `sensor_msgs/Joy` (runtime/teleop/ros2.py). Layouts:
`GAMEPAD_MAPS` (`xpad`, the kernel's driver for Xbox-style pads, this source's
default; `joy_node` and `game_controller_node`, ROS 2's two Joy publishers)
or a JSON file of GamepadMap fields (`gamepad_map`).

Failing safe: the pad reads as let go (zero, not held) and says why
(`problem`) when it is unplugged (the read fails: ENODEV), when its file ends
(a FIFO whose writer closed), and when nothing has arrived for `stale_s`
while it would drive (a wireless pad out of range keeps its last state in
the kernel). A lost pad is reopened every `reopen_s`; it drives again once it
has sent its state.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
from dataclasses import dataclass, fields
from pathlib import Path

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
    names: tuple[tuple[int, str], ...] = ((0, "A"), (1, "B"), (2, "X"), (4, "LB"), (7, "Start"))  # for the screen
    stale_s: float = 1.0  # s without any event while it would drive: let go (a wireless pad out of range; a stick
    #                       held perfectly still sends nothing either: nudge it). 0: never stale

    def button_name(self, button: int) -> str:
        return dict(self.names).get(button, f"button {button}")

    def legend(self) -> str:
        deadman = f"hold {self.button_name(self.deadman)} to drive (let go: stop); " if self.deadman >= 0 else ""
        controls = ", ".join(f"{self.button_name(b)} {c}" for b, c in self.controls)
        return f"gamepad: {deadman}left stick moves, right stick turns | {controls}"


XPAD = GamepadMap()
# ROS 2 joy's joy_node (SDL joystick API, an Xbox pad): sticks up and left read +1; LB is button 4, Start 7
JOY_NODE = GamepadMap(axes=(1, 0, 3), signs=(1, 1, 1))
# ROS 2 joy's game_controller_node (SDL game controller API, one layout for every pad it knows: its README's tables):
# LEFTX 0, LEFTY 1, RIGHTX 2, all inverted so up and left read +1; A 0, B 1, X 2, START 6, LEFTSHOULDER 9
GAME_CONTROLLER_NODE = GamepadMap(axes=(1, 0, 2), signs=(1, 1, 1), deadman=9,
                                  controls=((0, "start"), (1, "end"), (2, "discard"), (6, "quit")),
                                  names=((0, "A"), (1, "B"), (2, "X"), (6, "Start"), (9, "LB")))
GAMEPAD_MAPS = {"xpad": XPAD, "joy_node": JOY_NODE, "game_controller_node": GAME_CONTROLLER_NODE}


def gamepad_map(spec: str | None, default: GamepadMap) -> GamepadMap:
    """`--joy-map`: a preset's name (GAMEPAD_MAPS), a JSON file of GamepadMap fields (over `default`), or None."""
    if spec is None:
        return default
    if spec in GAMEPAD_MAPS:
        return GAMEPAD_MAPS[spec]
    path = Path(spec)
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TeleopError(f"--joy-map {spec}: not one of {', '.join(GAMEPAD_MAPS)} and not a readable JSON file "
                          f"({e})") from e
    known = {f.name for f in fields(GamepadMap)}
    unknown = sorted(set(values) - known) if isinstance(values, dict) else ["(not an object)"]
    if unknown:
        raise TeleopError(f"--joy-map {spec}: unknown field(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(sorted(known))}")
    tuples = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
              for k, v in values.items()}
    try:
        mapping = GamepadMap(**{**{f.name: getattr(default, f.name) for f in fields(GamepadMap)}, **tuples})
        if len(mapping.axes) != 3 or len(mapping.signs) != 3:
            raise ValueError("axes and signs need 3 entries each (linear_x, linear_y, angular_z)")
    except (TypeError, ValueError) as e:
        raise TeleopError(f"--joy-map {spec}: {e}") from e
    return mapping


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

    def __init__(self, path: str, mapping: GamepadMap = XPAD, reopen_s: float = 1.0):
        self.path, self.mapping, self.reopen_s = str(path), mapping, reopen_s
        self.state = StickState(mapping)
        self.fd: int | None = None
        self._buffer = b""
        self.lost = ""  # why the pad was lost (unplugged, its file ended); "" while it works
        self._had_data = False  # a record arrived since the last open (a FIFO reads "end" before its writer opens)
        self._last_event = None  # time.monotonic() of the newest record
        self._reopen_at = 0.0
        self._stale_said = False

    def _open_fd(self) -> int:
        # non-blocking: a FIFO opens without a writer, a device never blocks the control loop
        return os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    def open(self, top_speed=(0.5, 0.5, 1.0)) -> JoystickTeleop:
        super().open(top_speed)
        try:
            self.fd = self._open_fd()
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

    def _lose(self, why: str, now: float) -> None:
        """Nobody drives any more: zero, say so once, and try to reopen it every reopen_s."""
        if not self.lost:
            log.warning("joystick %s lost (%s): commands are zero; reopening it every %g s", self.path, why,
                        self.reopen_s)
        self.lost = why
        self.state = StickState(self.mapping)
        self._buffer = b""
        self.close()
        self._reopen_at = now + self.reopen_s

    def _reopen(self, now: float) -> None:
        if now < self._reopen_at:
            return
        self._reopen_at = now + self.reopen_s
        try:
            self.fd = self._open_fd()
            self._had_data = False
        except OSError:
            pass

    def _read(self, now: float) -> bytes:
        chunks = []
        while self.fd is not None:
            try:
                data = os.read(self.fd, JS_EVENT.size * 64)
            except BlockingIOError:
                break
            except OSError as e:  # ENODEV: unplugged
                self._lose(f"{e.strerror or e}", now)
                break
            if not data:
                if self._had_data:  # its writer closed (a FIFO): nothing more will come on this descriptor
                    self._lose("end of file: the device closed", now)
                break  # or a FIFO whose writer has not opened it yet
            chunks.append(data)
        return b"".join(chunks)

    def poll(self, now: float) -> list[TeleopEvent]:
        if self.fd is None and self.lost:
            self._reopen(now)
        fresh = self._read(now)
        if fresh:
            self._had_data = True
            self._last_event = now
            self._stale_said = False
            if self.lost:
                log.warning("joystick %s back: it drives again", self.path)
                self.lost = ""
        data = self._buffer + fresh
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
        if self.stale(now):
            if not self._stale_said:
                log.warning("joystick %s: no event for %g s while driving: commands are zero until it sends again "
                            "(out of range? a stick held perfectly still sends nothing: nudge it)", self.path,
                            self.mapping.stale_s)
                self._stale_said = True
            return events
        return events + self.moves(self.state.deflection() or moved, now)

    def stale(self, now: float) -> bool:
        """Silent for stale_s while it would drive (dead-man held or a stick deflected)."""
        if not self.mapping.stale_s or self._last_event is None:
            return False
        driving = self.state.held or self.state.deflection() is not None
        return driving and now - self._last_event > self.mapping.stale_s

    def command(self, now: float) -> TeleopCommand:
        if self.lost or self.stale(now):
            return TeleopCommand(ZERO, False)
        return TeleopCommand(self.scale(self.state.fraction()), self.state.held)

    def problem(self, now: float) -> str:
        if self.lost:
            return f"gamepad lost: {self.lost}"
        if self.stale(now):
            return f"gamepad silent for {now - self._last_event:.1f} s: stopped"
        return ""

    def legend(self) -> str:
        return self.mapping.legend()
