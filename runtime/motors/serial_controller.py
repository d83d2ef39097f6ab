"""The robot's motor controller over a serial port (protocol: docs/serial-protocol.md).

    with SerialMotorController("/dev/ttyUSB0") as motor:
        sent = motor.send_velocity(0.2, 0.0, 0.0)     # SentCommand: velocity, sent, acknowledged
        motor.stop()

A `runtime.hardware.MotorController` (LeRobot's style): `connect`,
`disconnect`, `is_connected`, `send_velocity` returning what really happened
(`SentCommand`: not sent while the port is gone, not acknowledged when the
controller stayed silent or refused), `stop`, `heartbeat`, `query_status`.
Every command carries the watchdog timeout, so the controller stops on its
own if the host dies. When the port goes away (cable pulled, USB reset) the
driver marks itself disconnected and reopens the same path on the next
command, at most every `reconnect_s` (the port itself, opened without
resetting the board: runtime/motors/serial_link.py). A board that resets
anyway on open (Linux raises DTR itself) is waited for: `connect` returns
when the controller answers or says READY, at most `ready_timeout_s`.

`wheels=BASE` sends wheel speeds (SET_WHEELS) computed by runtime.motors.kinematics
instead of a body velocity, for controllers that take wheel speeds.

At connect the driver asks the controller what it is (QUERY_INFO: protocol
version, wheel count, limits) and refuses, naming both values, a controller
that cannot do what this run will send: another protocol version, another
wheel count than `wheels`, limits below `max_speed` (every command beyond
them would be refused, and each refusal stops the robot). A READY seen later
(the board rebooted, or another board answers on the port) is checked the
same way; a mismatch then marks the link unusable (`config_error`): nothing
more is sent, every command reports not sent. A controller older than
QUERY_INFO (NACK 2) is accepted with a warning.
"""

from __future__ import annotations

import logging
import time

from runtime.hardware import MotorController, SentCommand
from runtime.motors.protocol import (
    VERSION,
    Command,
    ErrorCode,
    parse_info,
    parse_ready,
    parse_status,
    velocity_payload,
    wheels_payload,
)
from runtime.motors.serial_link import MotorError, SerialLink

log = logging.getLogger(__name__)


class ControllerMismatch(MotorError):
    """The controller reports a configuration this run cannot drive (wheel count, limits, protocol version)."""


class SerialMotorController(MotorController):
    name = "serial"

    def __init__(self, port: str, baudrate: int = 115200, watchdog_ms: int = 500, ack_timeout_s: float = 0.05,
                 reconnect_s: float = 0.2, wheels=None, ready_timeout_s: float = 2.5, max_speed=None):
        self.link = SerialLink(port, baudrate, reconnect_s)
        self.port = self.link.port
        self.watchdog_ms = int(watchdog_ms)
        self.ack_timeout_s = ack_timeout_s
        self.ready_timeout_s = ready_timeout_s  # an Arduino bootloader takes 0.5-2 s before the sketch runs
        self.wheels = wheels  # kinematics.Base or None
        self.max_speed = max_speed  # (vx, vy, wz) the host may send (--max-speed), checked against the limits
        self.info: dict | None = None  # what the controller reported (QUERY_INFO at connect, READY after)
        self.config_error = ""  # set when a controller that answered later does not match: nothing is sent
        self.missed_acks = 0
        self.refused = 0  # NACKs
        self.controller_starts = 0  # READY frames seen: the board (re)booted
        self.ready = False  # the controller answered since the port was opened
        self._last_sent = (0.0, 0.0, 0.0)

    # -- connection ----------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.link.is_open

    @property
    def reconnects(self) -> int:
        return self.link.reconnects

    @property
    def seq(self) -> int:
        return self.link.seq

    def _open(self) -> None:
        self.link.open()
        self.ready = False

    def connect(self) -> SerialMotorController:
        """Open the port and wait (at most ready_timeout_s) until the controller answers."""
        if self.is_connected:
            return self
        self._open()
        self.wait_ready(self.ready_timeout_s)
        if self.ready:
            try:
                self._check_info(self.query_info())
            except ControllerMismatch:
                self.link.close()
                raise
        return self

    def query_info(self) -> dict | None:
        """QUERY_INFO -> {"version", "wheels", "default_watchdog_ms", "limits"}; None from a controller that
        does not know the command (NACK 2) or does not answer."""
        reply = self._transact(Command.QUERY_INFO, want=Command.INFO, timeout_s=max(self.ack_timeout_s, 0.2))
        if reply is None or reply.type != Command.INFO:
            if reply is not None and reply.type == Command.NACK and reply.payload[1:2] == bytes(
                    [ErrorCode.UNKNOWN_COMMAND]):
                self.refused -= 1  # asked, not refused: an older controller
            log.warning("%s: the controller does not report its configuration (QUERY_INFO %s): its wheel "
                        "count and limits are not checked", self.port,
                        "unknown to it" if reply is not None else "unanswered")
            return None
        try:
            return parse_info(reply.payload)
        except ValueError as e:
            raise ControllerMismatch(f"{self.port}: the controller's INFO reply is malformed ({e}): "
                                     f"is it speaking protocol version {VERSION}?") from None

    def mismatches(self, info: dict) -> list[str]:
        """What in `info` (QUERY_INFO or READY) this run cannot drive, one sentence each naming both values."""
        found = []
        if info["version"] != VERSION:
            found.append(f"the controller speaks protocol version {info['version']}, this host {VERSION}: "
                         f"update the firmware or the runtime so both match")
        wheels = info["wheels"]
        if self.wheels is not None and wheels != len(self.wheels.matrix):
            board = "takes body velocity only (0 wheels)" if wheels == 0 else f"reports {wheels} wheels"
            found.append(f"the controller {board}, but --wheels {self.wheels.name} sends {len(self.wheels.matrix)} "
                         f"wheel speeds: every command would be refused. Use the --wheels of the board "
                         f"(mecanum 4, omni3 3, differential 2) or none to send a body velocity")
        limits = info.get("limits")
        if limits is not None and self.max_speed is not None:
            vx, vy, wz = (float(v) for v in self.max_speed)
            for name, value, limit, unit in (("vx", vx, limits.max_linear, "m/s"),
                                             ("vy", vy, limits.max_linear, "m/s"),
                                             ("wz", wz, limits.max_angular, "rad/s")):
                if value > limit:
                    found.append(f"--max-speed {name} {value:g} {unit} is above the controller's limit {limit:g} "
                                 f"{unit}: commands beyond it would be refused (and stop the robot). Lower "
                                 f"--max-speed or raise the controller's limit")
            if self.wheels is not None:
                peak = float((abs(self.wheels.matrix) @ [vx, vy if self.wheels.holonomic else 0.0, wz]).max())
                if peak > limits.max_wheel:
                    found.append(f"--max-speed asks up to {peak:.3g} rad/s of a wheel of --wheels "
                                 f"{self.wheels.name}, above the controller's max_wheel {limits.max_wheel:g} "
                                 f"rad/s: such commands would be refused. Lower --max-speed or raise max_wheel")
        return found

    def _check_info(self, info: dict | None) -> None:
        self.info = info
        if info is None:
            return
        found = self.mismatches(info)
        if found:
            raise ControllerMismatch(f"{self.port}: " + "; ".join(found))

    def wait_ready(self, timeout_s: float) -> bool:
        """Probe with QUERY_STATUS every 0.1 s until a STATUS or READY arrives; a board rebooting
        after the open is deaf to the probes until its READY."""
        deadline = time.monotonic() + timeout_s
        while not self.ready and self.is_connected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            reply = self._transact(Command.QUERY_STATUS, want=Command.STATUS, timeout_s=min(0.1, remaining),
                                   count_miss=False, accept_ready=True)
            self.ready = self.ready or reply is not None
        return self.ready

    def disconnect(self) -> None:
        """Zero the motors if the link is up, then close the port."""
        if self.link.is_open:
            try:
                self.stop()
            finally:
                self.link.close()

    # -- commands ------------------------------------------------------------------
    def _write(self, kind: int, payload: bytes) -> bool:
        """Send one frame; False when the port is gone or (a motion command) the controller does not match."""
        if self.config_error and kind in (Command.SET_VELOCITY, Command.SET_WHEELS):
            return False
        was_open = self.link.is_open
        written = self.link.write(kind, payload)
        if self.link.is_open and not was_open:
            self.ready = False  # reopened: the controller has not answered on this port yet
        return written

    def _on_ready(self, frame) -> None:
        """A READY frame: the board (re)booted; it must still be the board this run was configured for."""
        self.controller_starts += 1
        self.ready = True
        self._check_ready(frame.payload)

    def _check_ready(self, payload: bytes) -> None:
        """A READY (boot, reboot, another board on the port): its version and wheel count must still match."""
        try:
            ready = parse_ready(payload)
        except ValueError:
            return  # a READY of another layout says nothing checkable; the next INFO would
        found = self.mismatches(ready)
        if found and not self.config_error:
            self.config_error = f"{self.port}: after a controller (re)start: " + "; ".join(found)
            log.error("%s; nothing more is sent on this link", self.config_error)

    def _reply(self, want=Command.ACK, timeout_s: float | None = None, count_miss: bool = True,
               accept_ready: bool = False):
        """Wait briefly for the reply to the frame just written, counting misses and refusals."""
        reply = self.link.await_reply(want, self.ack_timeout_s if timeout_s is None else timeout_s,
                                      on_ready=self._on_ready, accept_ready=accept_ready)
        if reply is None and count_miss and self.is_connected:
            self.missed_acks += 1
        elif reply is not None and reply.type == Command.NACK:
            self.refused += 1
        return reply

    def _transact(self, kind: int, payload: bytes = b"", want=Command.ACK, timeout_s: float | None = None,
                  count_miss: bool = True, accept_ready: bool = False):
        """Send one frame and wait briefly for its reply; returns the reply frame or None."""
        if not self._write(kind, payload):
            return None
        return self._reply(want, timeout_s, count_miss, accept_ready)

    def send_velocity(self, vx: float, vy: float, wz: float = 0.0) -> SentCommand:
        """Send a body velocity (or its wheel speeds); returns what really happened."""
        velocity = (float(vx), float(vy), float(wz))
        if self.wheels is not None:
            if not self.wheels.holonomic:
                velocity = (velocity[0], 0.0, velocity[2])  # a differential base cannot move sideways
            kind, payload = Command.SET_WHEELS, wheels_payload(list(self.wheels.to_wheels(*velocity)), self.watchdog_ms)
        else:
            kind, payload = Command.SET_VELOCITY, velocity_payload(*velocity, self.watchdog_ms)
        if not self._write(kind, payload):
            return SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=False)
        self._last_sent = velocity
        reply = self._reply()
        if reply is not None and reply.type == Command.NACK:
            # a refusing controller stops its motors (docs/serial-protocol.md): zero is what the robot does
            self._last_sent = (0.0, 0.0, 0.0)
            return SentCommand((0.0, 0.0, 0.0), sent=True, acknowledged=False)
        return SentCommand(velocity, sent=True, acknowledged=reply is not None and reply.type == Command.ACK)

    def stop(self) -> bool:
        """Zero now. True when the controller acknowledged it."""
        if not self._write(Command.STOP, b""):
            return False
        self._last_sent = (0.0, 0.0, 0.0)
        reply = self._reply()
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
