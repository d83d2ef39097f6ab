"""The robot's motor controller over a serial port (protocol: docs/serial-protocol.md).

    with SerialMotorController("/dev/ttyUSB0") as motor:
        sent = motor.send_velocity(0.2, 0.0, 0.0)     # what was actually sent (after the base's limits)
        motor.stop()

One small class per hardware seam (LeRobot's style): `connect`,
`disconnect`, `is_connected`, `send_velocity` returning what was sent,
`stop`, `heartbeat`, `query_status`. Every command carries the watchdog
timeout, so the controller stops on its own if the host dies. When the port
goes away (cable pulled, USB reset) the driver marks itself disconnected and
reopens the same path on the next command, at most every `reconnect_s`; bad
bytes from the controller never raise (the parser drops them).

`wheels=BASE` sends wheel speeds (SET_WHEELS) computed by runtime.kinematics
instead of a body velocity, for controllers that take wheel speeds.
"""

from __future__ import annotations

import errno
import time

from runtime.hardware import MotorController, SentCommand
from runtime.protocol import (
    Command,
    FrameParser,
    encode_frame,
    parse_status,
    velocity_payload,
    wheels_payload,
)


class MotorError(RuntimeError):
    """A port that cannot be used; the message says what to do."""


class NotConnectedError(MotorError):
    pass


def explain_open_error(port: str, err: Exception) -> str:
    code = getattr(err, "errno", None)
    text = str(err)
    if code == errno.ENOENT or "No such file" in text or "could not open port" in text and "No such" in text:
        return (f"serial port {port} not found: is the motor controller plugged in and powered? "
                f"(ls /dev/ttyUSB* /dev/ttyACM*; with jetson/99-mobile-vla.rules it is /dev/mobile-vla-motor)")
    if code == errno.EACCES or "Permission denied" in text:
        return (f"permission denied on {port}: add yourself to the dialout group "
                f"(sudo usermod -aG dialout $USER, then log out and in) or install the udev rule "
                f"(sudo cp jetson/99-mobile-vla.rules /etc/udev/rules.d/ && sudo udevadm control --reload)")
    return f"cannot open serial port {port}: {err}"


class SerialMotorController:
    def __init__(self, port: str, baudrate: int = 115200, watchdog_ms: int = 500, ack_timeout_s: float = 0.05,
                 reconnect_s: float = 0.2, wheels=None):
        self.port = str(port)
        self.baudrate = baudrate
        self.watchdog_ms = int(watchdog_ms)
        self.ack_timeout_s = ack_timeout_s
        self.reconnect_s = reconnect_s
        self.wheels = wheels  # kinematics.Base or None
        self.serial = None
        self.parser = FrameParser()
        self.seq = 0
        self.missed_acks = 0
        self.reconnects = 0
        self._last_attempt = 0.0
        self.last_sent = (0.0, 0.0, 0.0)

    # -- connection ----------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.serial is not None

    def connect(self) -> "SerialMotorController":
        import serial

        if self.is_connected:
            return self
        self._last_attempt = time.monotonic()
        try:
            self.serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0.1)
        except (serial.SerialException, OSError) as e:
            raise MotorError(explain_open_error(self.port, e)) from e
        self.parser = FrameParser()
        return self

    def disconnect(self) -> None:
        if self.serial is not None:
            try:
                self.serial.close()
            except Exception:
                pass
            self.serial = None

    def __enter__(self) -> "SerialMotorController":
        return self.connect()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.disconnect()

    def _ensure_connected(self) -> bool:
        if self.is_connected:
            return True
        if time.monotonic() - self._last_attempt < self.reconnect_s:
            return False
        try:
            self.connect()
        except MotorError:
            return False
        self.reconnects += 1
        return True

    # -- commands ------------------------------------------------------------------
    def _transact(self, kind: int, payload: bytes = b"", want=Command.ACK):
        """Send one frame and wait briefly for its reply; returns the reply frame or None."""
        if not self._ensure_connected():
            return None
        self.seq = (self.seq + 1) & 0xFF
        try:
            self.serial.write(encode_frame(kind, self.seq, payload))
            deadline = time.monotonic() + self.ack_timeout_s
            while time.monotonic() < deadline:
                data = self.serial.read(256)
                if data:
                    for frame in self.parser.feed(data):
                        if frame.seq == self.seq and frame.type in (want, Command.NACK):
                            return frame
                else:
                    time.sleep(0.0005)
        except Exception as e:  # SerialException, OSError(EIO) when the pty/USB goes away
            if isinstance(e, (OSError, IOError)) or type(e).__name__ == "SerialException":
                self.disconnect()
                return None
            raise
        self.missed_acks += 1
        return None

    def send_velocity(self, vx: float, vy: float, wz: float = 0.0) -> tuple[float, float, float]:
        """Send a body velocity (or its wheel speeds); returns the velocity actually commanded."""
        if self.wheels is not None:
            if not self.wheels.holonomic:
                vy = 0.0  # a differential base cannot move sideways
            payload = wheels_payload(list(self.wheels.to_wheels(vx, vy, wz)), self.watchdog_ms)
            reply = self._transact(Command.SET_WHEELS, payload)
        else:
            reply = self._transact(Command.SET_VELOCITY, velocity_payload(vx, vy, wz, self.watchdog_ms))
        self.last_sent = (float(vx), float(vy), float(wz))
        self.last_acked = reply is not None and reply.type == Command.ACK
        return self.last_sent

    def stop(self) -> bool:
        """Zero now. True when the controller acknowledged it."""
        self.last_sent = (0.0, 0.0, 0.0)
        reply = self._transact(Command.STOP)
        return reply is not None and reply.type == Command.ACK

    def heartbeat(self) -> bool:
        reply = self._transact(Command.HEARTBEAT)
        return reply is not None and reply.type == Command.ACK

    def query_status(self) -> dict | None:
        reply = self._transact(Command.QUERY_STATUS, want=Command.STATUS)
        if reply is None or reply.type != Command.STATUS:
            return None
        try:
            return parse_status(reply.payload)
        except ValueError:
            return None


class DryRunMotor(MotorController):
    """`--motor dry-run` (`--dry-run`): nothing moves; every command is printed and kept in `sent`."""

    name = "dry-run"
    port = "dry-run"
    reconnects = 0
    missed_acks = 0

    def __init__(self, printer=None):
        self.printer = printer
        self._connected = False
        self._last_sent = (0.0, 0.0, 0.0)
        self.sent: list[tuple[float, float, float]] = []

    def connect(self) -> "DryRunMotor":
        self._connected = True
        return self

    def disconnect(self) -> None:
        if self._connected:
            self.stop()
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def send_velocity(self, vx, vy, wz=0.0) -> SentCommand:
        if not self._connected:  # as strict as a real link: nothing goes out before connect()
            return SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=None)
        velocity = (float(vx), float(vy), float(wz))
        self._last_sent = velocity
        self.sent.append(velocity)
        if self.printer:
            self.printer(f"cmd_vel {vx:+.3f} {vy:+.3f} {wz:+.3f}")
        return SentCommand(velocity, sent=True, acknowledged=None)

    def stop(self) -> bool:
        return self.send_velocity(0.0, 0.0, 0.0).sent

    def heartbeat(self):
        return True

    def query_status(self):
        return {"velocity": self._last_sent, "moving": any(self._last_sent)}
