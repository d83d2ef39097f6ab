"""The devices that arm and e-stop the robot, each on its own thread, reporting to the motion authority.

    sources = open_arm_sources(ArmSpec(start_disarmed=True, gamepad="/dev/input/js0", arm_button=7), authority)
    for s in sources: s.close()

Every source fails safe: it registers its device with the authority as an
input with a liveness rule, and reports each read; the control loop latches
the e-stop when an e-stop input is lost or stale and disarms when an arm input
is (runtime/control/authority.py). Arming runs the pre-arm checks, which
refuse while any e-stop input is pressed, lost or stale. Resetting an e-stop
is its own key, button or service, never an arm.

- `KeySource`: keys on the terminal (cbreak mode, restored at close):
  `--arm-key` (a) arms, `--estop-key` (space) e-stops, `--disarm-key` (d)
  disarms, `--reset-key` (r) resets a latched e-stop. The terminal is an arm
  input: closing it (SSH gone: EOF or EIO) disarms, without a traceback.
- `JoystickSource`: a gamepad through the Linux joystick device
  (`/dev/input/jsN`, 8-byte events: time u32, value s16, type u8, number u8).
  With `--estop-button` it is an e-stop input (the button held is pressed;
  the device unplugged, a read error, or its thread silent for
  `--gamepad-timeout` latches the e-stop); with `--arm-button` alone, an arm
  input (lost: disarmed).
- `GpioSource`: a line read from a file that holds `0` or `1` (sysfs
  `/sys/class/gpio/gpioN/value`, or any file a board's tool keeps up to date),
  every `--gpio-period`: an e-stop line is pressed at its pressed level
  (`--estop-gpio-pressed low` by default: a normally-closed loop, in which an
  open button, a cut wire or a lost supply all read pressed); an unreadable
  line, or 5 missed reads, latches the e-stop. An arm line arms on its rising
  edge; unreadable, it disarms.
- ROS 2: services `~/arm`, `~/disarm`, `~/estop`, `~/reset_estop`
  (std_srvs/Trigger) and the topic `~/estop` (std_msgs/Bool, true = pressed;
  with `--ros-estop-period` an e-stop input that must keep arriving):
  runtime/control/ros2.py.

They live in control/ and not with the teleop devices because they feed the
motion decision alone: nothing they read ever becomes a velocity.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import struct
import sys
import termios
import threading
import tty

from runtime.control.arming import ArmSpec
from runtime.control.authority import MotionAuthority
from runtime.hardware import DeviceError

log = logging.getLogger(__name__)
GONE = (errno.ENODEV, errno.EIO, errno.ENXIO, errno.EBADF)  # the device or terminal went away
REOPEN_S = 0.5  # s between two tries to reopen a gamepad that went away
GPIO_MISSED_READS = 5  # reads a GPIO source may miss (its thread late or stuck) before it counts as lost...
GPIO_STALE_S = 0.25  # ...and at least this long: a loaded board's scheduler may hold a thread back ~0.1 s


def open_arm_sources(spec: ArmSpec, authority: MotionAuthority, stdin_fd: int | None = None) -> list:
    """The sources `spec` asks for, started; the terminal's keys when stdin is a terminal (unless the keyboard drives
    a take-over: `spec.terminal_keys`). Close each at the end.
    Raises DeviceError (a gamepad or GPIO file that cannot be read)."""
    sources = []
    try:
        fd = stdin_fd
        if fd is None:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, ValueError, OSError):  # no stdin (a service, a test's captured input)
                fd = -1
        if spec.terminal_keys and fd >= 0 and os.isatty(fd):
            sources.append(KeySource(authority, fd, arm_key=spec.arm_key, estop_key=spec.estop_key,
                                     disarm_key=spec.disarm_key, reset_key=spec.reset_key).start())
        if spec.gamepad:
            sources.append(JoystickSource(authority, spec.gamepad, spec.arm_button, spec.estop_button,
                                          spec.reset_button, timeout=spec.gamepad_timeout).start())
        if spec.arm_gpio:
            sources.append(GpioSource(authority, spec.arm_gpio, "arm", period=spec.gpio_period).start())
        if spec.estop_gpio:
            if spec.estop_gpio_pressed == "high":
                log.warning("--estop-gpio-pressed high: a cut wire or a lost supply reads released (not "
                            "fail-safe); wire a normally-closed loop and use the default (low) where you can")
            sources.append(GpioSource(authority, spec.estop_gpio, "estop", pressed_level=spec.estop_gpio_pressed,
                                      period=spec.gpio_period).start())
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources


class _Source:
    """A daemon thread that reads one device until close(); a failure of the thread is a lost input."""

    name = "source"

    def __init__(self, authority: MotionAuthority):
        self.authority = authority
        self.input = None  # the authority's Input for this device (set by the subclass)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=f"arm:{self.name}", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as e:  # a source that dies is a lost input: the authority acts on it, and says so
            if not self._stop.is_set():
                log.error("%s stopped: %s: %s", self.name, type(e).__name__, e)
                self.lost(f"{type(e).__name__}: {e}")

    def lost(self, detail: str) -> None:
        if self.input is not None and not self._stop.is_set():
            self.authority.report(self.input, healthy=False, detail=detail)

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)


class KeySource(_Source):
    """Keys on a terminal (or any readable file descriptor): arm, e-stop, disarm and reset keys."""

    name = "keyboard"

    def __init__(self, authority: MotionAuthority, fd: int | None = None, arm_key: str = "a", estop_key: str = " ",
                 disarm_key: str = "d", reset_key: str = "r"):
        super().__init__(authority)
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.keys = {arm_key: "arm", estop_key: "estop", disarm_key: "disarm", reset_key: "reset_estop"}
        self._saved = None
        if os.isatty(self.fd):  # one key at a time, no echo; restored at close
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        # the terminal arms; losing it (the SSH session closed) disarms
        self.input = authority.add_input(f"terminal {self._tty_name()}", "arm")

    def _tty_name(self) -> str:
        try:
            return os.ttyname(self.fd)
        except OSError:
            return f"fd {self.fd}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                data = os.read(self.fd, 64) if ready else None
            except OSError as e:
                if e.errno not in GONE:
                    raise
                data = b""
            if data is None:
                continue
            if not data:  # end of input: the terminal is gone (SSH closed) or a pipe's writer closed it
                self.lost("the terminal closed")
                return
            for ch in data.decode(errors="replace"):
                action = self.keys.get(ch)
                if action:
                    getattr(self.authority, action)(f"key {ch!r}")

    def close(self) -> None:
        super().close()
        if self._saved is not None:
            saved, self._saved = self._saved, None
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except (termios.error, OSError):  # the terminal is gone: nothing left to restore
                pass


JS_EVENT = struct.Struct("<IhBB")  # linux/joystick.h struct js_event: time (ms), value, type, number
JS_BUTTON, JS_INIT = 0x01, 0x80


class JoystickSource(_Source):
    """A gamepad on the Linux joystick device: arm_button arms, estop_button held is pressed, reset_button resets."""

    name = "gamepad"

    def __init__(self, authority: MotionAuthority, device: str, arm_button: int | None = None,
                 estop_button: int | None = None, reset_button: int | None = None, timeout: float = 0.5,
                 poll: float = 0.05):
        super().__init__(authority)
        self.device, self.arm_button, self.estop_button = device, arm_button, estop_button
        self.reset_button, self.poll = reset_button, poll
        try:
            self.fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise DeviceError(f"--gamepad {device}: cannot open it ({e.strerror}): is the gamepad connected "
                              f"(ls /dev/input/js*), and is this user in the input group?") from None
        self.fifo = stat.S_ISFIFO(os.fstat(self.fd).st_mode)  # tests and tools feed a FIFO with the same records
        self._had_writer = False
        kind = "estop" if estop_button is not None else "arm"
        self.input = authority.add_input(f"gamepad {device}", kind, max_age=timeout)
        self._pressed = False

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            if self.fd is None and not self._reopen():
                self._stop.wait(REOPEN_S)
                continue
            try:
                ready, _, _ = select.select([self.fd], [], [], self.poll)
                data = os.read(self.fd, 64 * JS_EVENT.size) if ready else None
            except BlockingIOError:
                data = None
            except OSError as e:
                if e.errno not in GONE:
                    raise
                self._gone(f"{os.strerror(e.errno)}: unplugged?")
                buffer = b""
                continue
            if data == b"":
                if not self.fifo or self._had_writer:  # a device never reads empty; a FIFO whose writer closed
                    self._gone("end of file: unplugged?")
                    buffer = b""
                    continue
                self._stop.wait(self.poll)  # a FIFO with no writer yet
            elif data:
                self._had_writer = True
                buffer += data
                while len(buffer) >= JS_EVENT.size:
                    _, value, kind, number = JS_EVENT.unpack_from(buffer)
                    buffer = buffer[JS_EVENT.size:]
                    self._button(number, value, kind)
            # a poll of the device that did not fail is news too: the input is there and read
            self.authority.report(self.input, pressed=self._pressed)

    def _button(self, number: int, value: int, kind: int) -> None:
        if not kind & JS_BUTTON:
            return  # axes
        if number == self.estop_button:
            self._pressed = value == 1  # the initial state burst (JS_INIT) counts: held at start is pressed
            self.authority.report(self.input, pressed=self._pressed)
        elif kind & JS_INIT or value != 1:
            return  # the initial state never arms or resets; releases do nothing
        elif number == self.arm_button:
            self.authority.arm(f"gamepad button {number}")
        elif number == self.reset_button:
            self.authority.reset_estop(f"gamepad button {number}")

    def _gone(self, detail: str) -> None:
        """The pad is gone: a lost input (the authority acts on it); reopened every REOPEN_S until it is back."""
        self.lost(detail)
        os.close(self.fd)
        self.fd, self._pressed = None, False

    def _reopen(self) -> bool:
        """A pad that came back (a wireless one back in range, a cable replugged): read again. Its input turns
        healthy on the next report; a latched e-stop stays latched until a person resets it."""
        try:
            self.fd = os.open(self.device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return False
        self._had_writer = False
        log.warning("gamepad %s back", self.device)
        return True

    def close(self) -> None:
        super().close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class GpioSource(_Source):
    """A digital input read from a file holding 0/1 (sysfs GPIO value), polled every `period` s.
    role "arm": arms on the rising edge; role "estop": pressed at `pressed_level`."""

    def __init__(self, authority: MotionAuthority, path: str, role: str, pressed_level: str = "low",
                 period: float = 0.02):
        if role not in ("arm", "estop"):
            raise ValueError(f"GpioSource role must be 'arm' or 'estop', got {role!r}")
        if pressed_level not in ("low", "high"):
            raise ValueError(f"GpioSource pressed_level must be 'low' or 'high', got {pressed_level!r}")
        self.name = f"gpio {role} {path}"
        super().__init__(authority)
        self.path, self.role, self.period = path, role, period
        self.pressed_value = "1" if pressed_level == "high" else "0"
        self._error = ""
        value = self._read()  # unreadable at start: a clear error, before anything moves
        if value is None:
            raise DeviceError(f"--{role}-gpio {path}: cannot read it ({self._error}); export the line "
                              f"(echo N > /sys/class/gpio/export) or give a file that holds 0 or 1")
        self._last = value == "1"  # an arm line already high at start does not arm: an edge is needed
        self.reads = 0  # polls made (what a test waits on, instead of guessing the thread's pace)
        self.input = authority.add_input(self.name, role, max_age=max(GPIO_MISSED_READS * period, GPIO_STALE_S))
        if role == "estop":
            authority.report(self.input, pressed=value == self.pressed_value)

    def _read(self) -> str | None:
        try:
            with open(self.path) as f:
                value = f.read().strip()
        except OSError as e:
            self._error = e.strerror or str(e)
            return None
        if value not in ("0", "1"):
            self._error = f"it holds {value[:20]!r}, not 0 or 1"
            return None
        return value

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            value = self._read()
            self.reads += 1
            if value is None:
                self.authority.report(self.input, healthy=False, detail=self._error)
                self._last = True  # unknown: a line that comes back high is no rising edge, and arms nothing
                continue
            if self.role == "estop":
                self.authority.report(self.input, pressed=value == self.pressed_value)
                continue
            high = value == "1"
            self.authority.report(self.input)
            if high and not self._last:
                self.authority.arm(self.name)
            self._last = high
