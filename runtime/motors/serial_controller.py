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

At every connect and reconnect the driver asks the controller what it is
(QUERY_INFO: protocol version, wheel count, base kind, limits, watchdog cap)
and refuses, naming both values, a controller that cannot do what this run
will send: another protocol version, another wheel count than `wheels`,
another base kind than `base` (the drive's --base: a differential board
drops vy), limits below `max_speed` (every command beyond them would be
refused, and each refusal stops the robot). A controller whose
configuration cannot be checked (it does not answer QUERY_INFO within its
timeout, is older than QUERY_INFO (NACK 2), or does not report its base
kind while `base` is set) is refused at connect (`ControllerUnverified`)
unless `allow_unverified` (--allow-unverified-controller; docs/motors.md
says the risk).

The check is repeated before any motion command after the port was reopened,
after a READY (the board restarted), and after a NACK 5 (a board that
restarted without its READY reaching us): the call that finds the check due
spends itself on QUERY_INFO and reports not sent, so whoever drives sees
`controller_starts` or `reconnects` move before anything moves again. A
mismatch then marks the link unusable (`config_error`): no motion command
is sent any more, each reports not sent (a STOP still goes out). This driver
asks; what the answers mean for the run (the comparison, the restarts) is
decided in runtime/motors/controller_check.py (`ControllerCheck`, `self.check`).

What the drive reads (all updated by the calls on this object, one thread):
`verified` (bool: the configuration was checked and matches on the current
connection; False from a reopen or a restart until the check passes),
`controller_starts` (READY frames and unseen restarts: the board rebooted),
`last_answer` (time.monotonic() of the last reply to one of our commands;
None before any), `unanswered` (commands written in a row that got no reply
within their timeout; 0 after any reply; a READY is not a reply),
`reconnects`, `missed_acks`, `refused`, `config_error`.
"""

from __future__ import annotations

import logging
import time

from runtime.hardware import MotorController, SentCommand
from runtime.motors.controller_check import BASE_KINDS, ControllerCheck, ControllerMismatch, ControllerUnverified
from runtime.motors.protocol import Command, ErrorCode, parse_status, velocity_payload, wheels_payload
from runtime.motors.serial_link import MotorError, SerialLink

__all__ = ["ControllerMismatch", "ControllerUnverified", "SerialMotorController"]
log = logging.getLogger(__name__)
MOTION = (Command.SET_VELOCITY, Command.SET_WHEELS)


def _checked(name: str, doc: str) -> property:
    """An attribute of the configuration check (`self.check`), read and written through the controller."""
    return property(lambda self: getattr(self.check, name), lambda self, value: setattr(self.check, name, value),
                    doc=doc)


class SerialMotorController(MotorController):
    name = "serial"
    wheels = _checked("wheels", "kinematics.Base (SET_WHEELS) or None (SET_VELOCITY)")
    max_speed = _checked("max_speed", "(vx, vy, wz) the host may send (--max-speed), checked against the limits")
    base = _checked("base", "the run's --base (omni, diff), checked against the board's base kind; None: not checked")
    allow_unverified = _checked("allow_unverified", "drive a board whose configuration cannot be checked")
    info = _checked("info", "what the controller reported (QUERY_INFO at connect, READY after)")
    config_error = _checked("config_error", "set when a controller that answered later does not match: nothing is sent")
    controller_starts = _checked("controller_starts", "READY frames seen (and restarts found): the board (re)booted")
    verified = _checked("verified", "the configuration was checked and matches, on the current connection")

    def __init__(self, port: str, baudrate: int = 115200, watchdog_ms: int = 500, ack_timeout_s: float = 0.05,
                 reconnect_s: float = 0.2, wheels=None, ready_timeout_s: float = 2.5, max_speed=None,
                 base: str | None = None, allow_unverified: bool = False):
        if base is not None and base not in BASE_KINDS:
            raise ValueError(f"SerialMotorController(base={base!r}): expected one of {', '.join(BASE_KINDS)} "
                             f"(the drive's --base) or None")
        self.link = SerialLink(port, baudrate, reconnect_s)
        self.port = self.link.port
        self.check = ControllerCheck(self.port, base, wheels, max_speed, allow_unverified)  # what the board must be
        self.watchdog_ms = int(watchdog_ms)
        self.ack_timeout_s = ack_timeout_s
        self.ready_timeout_s = ready_timeout_s  # an Arduino bootloader takes 0.5-2 s before the sketch runs
        self.missed_acks = 0
        self.refused = 0  # NACKs to our commands (not NACK 2 to QUERY_INFO, not NACK 5: the board restarted)
        self.ready = False  # the controller answered since the port was opened
        self.last_answer: float | None = None  # time.monotonic() of the last reply to one of our commands
        self.unanswered = 0  # commands in a row that got no reply within their timeout (0 after any reply)
        self._kind = 0  # the type of the frame written last
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

    @property
    def check_pending(self) -> bool:
        """QUERY_INFO is due before the next motion command (after a reopen, a READY or a NACK 5)."""
        return self.check.pending

    def _connection_changed(self) -> None:
        """The port was (re)opened: whatever answers now has not answered, nor been checked, on it."""
        self.ready = False
        self.check.connection_changed()

    def _open(self) -> None:
        self.link.open()
        self._connection_changed()

    def _ensure_open(self) -> bool:
        was_open = self.link.is_open
        opened = self.link.ensure_open()
        if opened and not was_open:
            self._connection_changed()
        return opened

    def connect(self) -> SerialMotorController:
        """Open the port, wait (at most ready_timeout_s) until the controller answers, and check what it is.
        Raises ControllerMismatch (it is not what this run drives) or ControllerUnverified (it cannot say,
        without allow_unverified); the port is released then."""
        if self.is_connected:
            return self
        self._open()
        try:
            if self.wait_ready(self.ready_timeout_s):
                self._verify(max(self.ack_timeout_s, 0.2), at_connect=True)
            else:
                self.check.unverified(f"it did not answer within {self.ready_timeout_s:g} s: wrong port or "
                                      f"--baudrate {self.link.baudrate}, no firmware on the board, or a board that "
                                      f"needs DTR (docs/firmware.md)", at_connect=True)
        except MotorError:
            self.link.close()
            raise
        return self

    def _ask_info(self, timeout_s: float) -> tuple[dict | None, str, bool]:
        """QUERY_INFO -> (info, why not, answered). Raises ControllerMismatch on a malformed INFO."""
        return self.check.read_info(self._transact(Command.QUERY_INFO, want=Command.INFO, timeout_s=timeout_s),
                                    timeout_s)

    def query_info(self) -> dict | None:
        """QUERY_INFO -> {"version", "wheels", "default_watchdog_ms", "limits", "base", "max_watchdog_ms"};
        None from a controller that does not know the command (NACK 2) or does not answer."""
        return self._ask_info(max(self.ack_timeout_s, 0.2))[0]

    def unchecked(self, info: dict) -> str:
        """What in `info` cannot be checked against this run ("" when everything can)."""
        return self.check.unchecked(info)

    def mismatches(self, info: dict) -> list[str]:
        """What in `info` (QUERY_INFO or READY) this run cannot drive, one sentence each naming both values."""
        return self.check.mismatches(info)

    def _verify(self, timeout_s: float, at_connect: bool) -> None:
        """Ask QUERY_INFO and have the check judge the answer (runtime/motors/controller_check.py); once it
        matches, read the uptime: a board that restarted while the port was closed counts as a start."""
        try:
            info, why, answered = self._ask_info(timeout_s)
        except ControllerMismatch as e:
            return self.check.refuse(str(e), at_connect)
        if self.check.judge(info, why, answered, at_connect, self.is_connected, self.watchdog_ms):
            previous = self.check.uptime
            status = self.query_status()  # (which keeps the new reading)
            if status is not None:
                self.check.uptime_checked(previous, status["uptime_ms"], time.monotonic(), at_connect)

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
        if self.config_error and kind in MOTION:
            return False
        if not self._ensure_open():
            return False
        self._kind = kind
        return self.link.write(kind, payload)

    def _motion_allowed(self) -> bool:
        """May a motion command go out now? A READY already waiting is read first (a board that restarted while
        nobody listened); a due configuration check is made now, and this call then sends no motion."""
        if self.config_error or not self._ensure_open():
            return False
        self.link.drain(on_ready=self._on_ready)
        if not self.link.is_open:
            return False
        if self.check.pending:
            self._verify(self.ack_timeout_s, at_connect=False)
            return False
        return True

    def _on_ready(self, frame) -> None:
        """A READY frame: the board (re)booted: counted, and checked again before anything moves."""
        self.ready = True
        self.check.on_ready(frame.payload)

    def _reply(self, want=Command.ACK, timeout_s: float | None = None, count_miss: bool = True,
               accept_ready: bool = False):
        """Wait briefly for the reply to the frame just written, counting misses, answers and refusals."""
        reply = self.link.await_reply(want, self.ack_timeout_s if timeout_s is None else timeout_s,
                                      on_ready=self._on_ready, accept_ready=accept_ready)
        if reply is None:
            if self.is_connected:  # written, and nothing came back (a port that went away is counted elsewhere)
                self.unanswered += 1
                self.missed_acks += count_miss
            return None
        if reply.type == Command.READY:  # wait_ready: the board says it started; not an answer to the probe
            return reply
        self.unanswered = 0
        self.last_answer = time.monotonic()
        if reply.type == Command.NACK:
            code = reply.payload[1] if len(reply.payload) > 1 else -1
            if code == ErrorCode.UNVERIFIED:
                self.check.on_unverified_nack()
            elif not (self._kind == Command.QUERY_INFO and code == ErrorCode.UNKNOWN_COMMAND):
                self.refused += 1  # (NACK 2 to QUERY_INFO: asked, not refused: an older controller)
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
        if not self._motion_allowed() or not self._write(kind, payload):
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
        """True when the controller answered: the link is alive. It never keeps a motion going: the board stops
        at the deadline of the last motion command (docs/serial-protocol.md)."""
        reply = self._transact(Command.HEARTBEAT)
        return reply is not None and reply.type == Command.ACK

    def query_status(self) -> dict | None:
        reply = self._transact(Command.QUERY_STATUS, want=Command.STATUS)
        if reply is None or reply.type != Command.STATUS:
            return None
        try:
            status = parse_status(reply.payload)
        except ValueError:
            return None
        self.check.uptime = (status["uptime_ms"], time.monotonic())
        return status
