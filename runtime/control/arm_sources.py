"""The devices that arm and e-stop the robot, each on its own thread, changing the drive's `ArmSwitch`.

    sources = open_arm_sources(ArmSpec(start_disarmed=True, gamepad="/dev/input/js0", arm_button=7), switch)
    for s in sources: s.close()

- `KeySource`: keys on the terminal (cbreak mode, restored at close): `--arm-key`
  (default `a`) arms, `--estop-key` (default space) e-stops, `d` disarms.
- `JoystickSource`: a gamepad through the Linux joystick device
  (`/dev/input/jsN`, 8-byte events: time u32, value s16, type u8, number u8).
- `GpioSource`: a line read from a file that holds `0` or `1` (sysfs
  `/sys/class/gpio/gpioN/value`, or any file a board's tool keeps up to date),
  polled every 20 ms: an arm line arms on its rising edge, an e-stop line
  e-stops while it is active (a pressed mushroom button holds the robot).
- ROS 2: services `~/arm`, `~/disarm`, `~/estop` (std_srvs/Trigger) and the
  topic `~/estop` (std_msgs/Bool, true = e-stop): runtime/control/ros2.py.

They live in control/ and not with the teleop devices because they feed the
motion decision alone: nothing they read ever becomes a velocity.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import sys
import termios
import threading
import time
import tty

from runtime.control.arming import ArmSpec, ArmSwitch
from runtime.hardware import DeviceError

log = logging.getLogger(__name__)



def open_arm_sources(spec: ArmSpec, switch: ArmSwitch, stdin_fd: int | None = None) -> list:
    """The sources `spec` asks for, started; the terminal's keys when stdin is a terminal. Close each at the end.
    Raises DeviceError (a gamepad or GPIO file that cannot be read)."""
    sources = []
    try:
        fd = stdin_fd
        if fd is None:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, ValueError, OSError):  # no stdin (a service, a test's captured input)
                fd = -1
        if fd >= 0 and os.isatty(fd):
            sources.append(KeySource(switch, fd, arm_key=spec.arm_key, estop_key=spec.estop_key).start())
        if spec.gamepad:
            sources.append(JoystickSource(switch, spec.gamepad, spec.arm_button, spec.estop_button).start())
        if spec.arm_gpio:
            sources.append(GpioSource(switch, spec.arm_gpio, "arm").start())
        if spec.estop_gpio:
            sources.append(GpioSource(switch, spec.estop_gpio, "estop", spec.estop_gpio_active_low).start())
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources


class _Source:
    """A daemon thread that reads one device until close()."""

    name = "source"

    def __init__(self, switch: ArmSwitch):
        self.switch = switch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded, name=f"arm:{self.name}", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as e:  # a source that dies must not leave the robot armable by nothing: say so
            if not self._stop.is_set():
                log.error("%s stopped: %s: %s (the other arm/e-stop sources still work)", self.name,
                          type(e).__name__, e)

    def _run(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class KeySource(_Source):
    """Keys on a terminal (or any readable file descriptor): arm_key arms, estop_key e-stops, 'd' disarms."""

    name = "keyboard"

    def __init__(self, switch: ArmSwitch, fd: int | None = None, arm_key: str = "a", estop_key: str = " ",
                 disarm_key: str = "d"):
        super().__init__(switch)
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.keys = {arm_key: "arm", estop_key: "estop", disarm_key: "disarm"}
        self._saved = None
        if os.isatty(self.fd):  # one key at a time, no echo; restored at close
            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(self.fd, 64)
            if not data:
                return  # end of input: no more keys (the other sources still work)
            for ch in data.decode(errors="replace"):
                action = self.keys.get(ch)
                if action:
                    getattr(self.switch, action)(f"key {ch!r}")

    def close(self) -> None:
        super().close()
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None


JS_EVENT = struct.Struct("<IhBB")  # linux/joystick.h struct js_event: time (ms), value, type, number
JS_BUTTON, JS_INIT = 0x01, 0x80


class JoystickSource(_Source):
    """A gamepad on the Linux joystick device: arm_button arms, estop_button e-stops (on press)."""

    name = "gamepad"

    def __init__(self, switch: ArmSwitch, device: str, arm_button: int | None = None,
                 estop_button: int | None = None):
        super().__init__(switch)
        self.device, self.arm_button, self.estop_button = device, arm_button, estop_button
        try:
            self.fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise DeviceError(f"--gamepad {device}: cannot open it ({e.strerror}): is the gamepad connected "
                              f"(ls /dev/input/js*), and is this user in the input group?") from None

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 64 * JS_EVENT.size)
            except BlockingIOError:
                continue
            if not data:
                time.sleep(0.05)  # a FIFO with no writer reads empty; a real device never does
                continue
            buffer += data
            while len(buffer) >= JS_EVENT.size:
                _, value, kind, number = JS_EVENT.unpack_from(buffer)
                buffer = buffer[JS_EVENT.size:]
                if kind & JS_INIT or not kind & JS_BUTTON or value != 1:
                    continue  # the initial state burst, axes, releases
                if number == self.estop_button:
                    self.switch.estop(f"gamepad button {number}")
                elif number == self.arm_button:
                    self.switch.arm(f"gamepad button {number}")

    def close(self) -> None:
        super().close()
        os.close(self.fd)


class GpioSource(_Source):
    """A digital input read from a file holding 0/1 (sysfs GPIO value), polled every `period` s.
    role "arm": arms on the rising edge; role "estop": e-stops while active."""

    def __init__(self, switch: ArmSwitch, path: str, role: str, active_low: bool = False, period: float = 0.02):
        if role not in ("arm", "estop"):
            raise ValueError(f"GpioSource role must be 'arm' or 'estop', got {role!r}")
        self.name = f"gpio {role} {path}"
        super().__init__(switch)
        self.path, self.role, self.active_low, self.period = path, role, active_low, period
        self._last = self._read()  # an arm line already high at start does not arm: an edge is needed

    def _read(self) -> bool:
        try:
            with open(self.path) as f:
                value = f.read().strip() == "1"
        except OSError as e:
            raise DeviceError(f"--{self.role}-gpio {self.path}: cannot read it ({e.strerror}); export the line "
                              f"(echo N > /sys/class/gpio/export) or give a file that holds 0 or 1") from None
        return value != self.active_low

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            active = self._read()
            if self.role == "estop" and active:
                self.switch.estop(self.name)
            elif self.role == "arm" and active and not self._last:
                self.switch.arm(self.name)
            self._last = active
