"""The terminal's keyboard as a teleoperation source: one key press is one move (works over `ssh -t`).

    source = KeyboardTeleop().open(top_speed=(0.5, 0.5, 1.0))
    python -m runtime.record --out rec/ --teleop keyboard --serial /dev/ttyUSB0 --camera csi

The original collector's move-per-key scheme (docs/recording.md):
w/s forward/back, a/d left/right, q/e/z/c the diagonals, r/t turn left/right,
space stop; n start, m end, u discard, Esc quit; Ctrl-C stops as in
`runtime.drive`. The terminal is put in non-canonical mode without echo
(signals stay on) and restored on close.
"""

from __future__ import annotations

import errno
import os
import select
import termios

from runtime.hardware import ZERO, TeleopCommand, TeleopError, TeleopEvent, TeleopSource

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
