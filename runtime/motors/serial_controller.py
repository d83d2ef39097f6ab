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
is sent any more, each reports not sent (a STOP still goes out).

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
from runtime.motors.protocol import (
    INFO_V1_BYTES,
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
# a board whose uptime falls short of the expected by more than this restarted: a read's round trip, and the
# two clocks' drift (crystals: well under 100 ppm) since the last reading
UPTIME_SLACK_MS, UPTIME_DRIFT = 50, 1e-4


class ControllerMismatch(MotorError):
    """The controller reports a configuration this run cannot drive (wheel count, base kind, limits, protocol)."""


class ControllerUnverified(MotorError):
    """The controller's configuration could not be checked at connect (no answer, too old to say): refused
    unless `allow_unverified` (--allow-unverified-controller)."""


BASE_KINDS = {"omni": "holonomic", "diff": "differential"}  # the drive's --base -> INFO's base kind
MOTION = (Command.SET_VELOCITY, Command.SET_WHEELS)
ALLOW_FLAG = ("--allow-unverified-controller drives it unchecked, at a risk docs/motors.md spells out "
              "(a board of another base kind, wheel count or limits drops or refuses what it is sent)")


class SerialMotorController(MotorController):
    name = "serial"

    def __init__(self, port: str, baudrate: int = 115200, watchdog_ms: int = 500, ack_timeout_s: float = 0.05,
                 reconnect_s: float = 0.2, wheels=None, ready_timeout_s: float = 2.5, max_speed=None,
                 base: str | None = None, allow_unverified: bool = False):
        if base is not None and base not in BASE_KINDS:
            raise ValueError(f"SerialMotorController(base={base!r}): expected one of {', '.join(BASE_KINDS)} "
                             f"(the drive's --base) or None")
        self.link = SerialLink(port, baudrate, reconnect_s)
        self.port = self.link.port
        self.watchdog_ms = int(watchdog_ms)
        self.ack_timeout_s = ack_timeout_s
        self.ready_timeout_s = ready_timeout_s  # an Arduino bootloader takes 0.5-2 s before the sketch runs
        self.wheels = wheels  # kinematics.Base or None
        self.max_speed = max_speed  # (vx, vy, wz) the host may send (--max-speed), checked against the limits
        self.base = base  # the run's --base (omni, diff), checked against the board's base kind; None: not checked
        self.allow_unverified = allow_unverified  # drive a board whose configuration cannot be checked
        self.info: dict | None = None  # what the controller reported (QUERY_INFO at connect, READY after)
        self.config_error = ""  # set when a controller that answered later does not match: nothing is sent
        self.missed_acks = 0
        self.refused = 0  # NACKs to our commands (not NACK 2 to QUERY_INFO, not NACK 5: the board restarted)
        self.controller_starts = 0  # READY frames seen (and restarts found by NACK 5): the board (re)booted
        self.ready = False  # the controller answered since the port was opened
        self.verified = False  # the configuration was checked and matches, on the current connection
        self.last_answer: float | None = None  # time.monotonic() of the last reply to one of our commands
        self.unanswered = 0  # commands in a row that got no reply within their timeout (0 after any reply)
        self._check_pending = True  # QUERY_INFO is due before the next motion command
        self._uptime: tuple[int, float] | None = None  # (the board's uptime ms, time.monotonic()) when last read
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
        return self._check_pending

    def _connection_changed(self) -> None:
        """The port was (re)opened: whatever answers now has not answered, nor been checked, on it."""
        self.ready = False
        self.verified = False
        self._check_pending = True

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
                self._unverified(f"it did not answer within {self.ready_timeout_s:g} s: wrong port or --baudrate "
                                 f"{self.link.baudrate}, no firmware on the board, or a board that needs DTR "
                                 f"(docs/firmware.md)", at_connect=True)
        except MotorError:
            self.link.close()
            raise
        return self

    def _ask_info(self, timeout_s: float) -> tuple[dict | None, str, bool]:
        """QUERY_INFO -> (info, why not, answered). Raises ControllerMismatch on a malformed INFO."""
        reply = self._transact(Command.QUERY_INFO, want=Command.INFO, timeout_s=timeout_s)
        if reply is None:
            return None, f"QUERY_INFO unanswered within {timeout_s * 1000:.0f} ms", False
        if reply.type != Command.INFO:
            code = reply.payload[1] if len(reply.payload) > 1 else -1
            if code == ErrorCode.UNKNOWN_COMMAND:
                return None, "QUERY_INFO unknown to it (NACK 2): firmware older than the configuration check", True
            return None, f"QUERY_INFO refused (NACK {code})", True
        try:
            return parse_info(reply.payload), "", True
        except ValueError as e:
            raise ControllerMismatch(f"{self.port}: the controller's INFO reply is malformed ({e}): "
                                     f"is it speaking protocol version {VERSION}?") from None

    def query_info(self) -> dict | None:
        """QUERY_INFO -> {"version", "wheels", "default_watchdog_ms", "limits", "base", "max_watchdog_ms"};
        None from a controller that does not know the command (NACK 2) or does not answer."""
        return self._ask_info(max(self.ack_timeout_s, 0.2))[0]

    def unchecked(self, info: dict) -> str:
        """What in `info` cannot be checked against this run ("" when everything can)."""
        if self.base is not None and info.get("base", "unknown") == "unknown":
            return (f"it does not report its base kind (a {INFO_V1_BYTES}-byte INFO: firmware older than the "
                    f"base kind), so --base {self.base} cannot be checked: update the firmware (docs/firmware.md)")
        return ""

    def mismatches(self, info: dict) -> list[str]:
        """What in `info` (QUERY_INFO or READY) this run cannot drive, one sentence each naming both values."""
        found = []
        if info["version"] != VERSION:
            found.append(f"the controller speaks protocol version {info['version']}, this host {VERSION}: "
                         f"update the firmware or the runtime so both match")
        board = info.get("base", "unknown")
        if self.base is not None and board != "unknown" and board != BASE_KINDS[self.base]:
            if board == "differential":
                found.append(f"the controller drives a differential base (vx and wz only: it drops vy), but "
                             f"--base {self.base} sends vy as the policy predicts: a lateral move would be logged "
                             f"as sent and never happen. Run with --base diff (--lateral rotate or refuse), or "
                             f"connect the holonomic base's board")
            else:
                found.append(f"the controller drives a {board} base (it can move sideways), but --base "
                             f"{self.base} is for a differential one and never sends vy: run with --base omni, or "
                             f"connect the differential base's board")
        wheels = info["wheels"]
        if self.wheels is not None and wheels != len(self.wheels.matrix):
            board = "takes body velocity only (0 wheels)" if wheels == 0 else f"reports {wheels} wheels"
            found.append(f"the controller {board}, but --wheels {self.wheels.name} sends {len(self.wheels.matrix)} "
                         f"wheel speeds: every command would be refused. Use the --wheels of the board "
                         f"(mecanum 4, omni3 3, differential 2) or none to send a body velocity")
        limits = info.get("limits")
        if limits is not None and self.max_speed is not None:
            vx, vy, wz = (float(v) for v in self.max_speed)
            vy = 0.0 if self.base == "diff" else vy  # --base diff never sends vy
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

    def _verify(self, timeout_s: float, at_connect: bool) -> None:
        """Ask QUERY_INFO and compare. Matching: `verified`, and motion may go out. A mismatch: ControllerMismatch
        at connect, `config_error` later. Not checkable: ControllerUnverified at connect (without
        allow_unverified); later, a board that answered but cannot say is another board (`config_error`), and
        one that did not answer is asked again before the next motion command."""
        try:
            info, why, answered = self._ask_info(timeout_s)
        except ControllerMismatch as e:
            return self._config_refused(str(e), at_connect)
        if info is not None:
            found = self.mismatches(info)
            if found:
                return self._config_refused(f"{self.port}: " + "; ".join(found), at_connect)
            self.info = info
            self._warn_above_watchdog_cap(info)
            why = self.unchecked(info)
            if not why:
                self.verified, self._check_pending = True, False
                self._check_uptime(at_connect)
                return
        if not self.is_connected:
            return  # the port went away during the check: it is due again on the next connection
        if not answered and not at_connect and not self.allow_unverified:
            log.debug("%s: configuration check due (%s): no motion until it is answered", self.port, why)
            return
        self._unverified(why, at_connect, info is not None)

    def _check_uptime(self, at_connect: bool) -> None:
        """A board that restarted while the port was closed (a USB-powered one loses power with its cable) says
        READY to nobody; its uptime tells: shorter than the one read before plus the time since, it restarted,
        and that counts as a start (`controller_starts`), which disarms the drive."""
        previous = self._uptime
        status = self.query_status()  # (which keeps the new reading)
        if status is None:
            return
        now, uptime = time.monotonic(), status["uptime_ms"]
        if previous is not None and not at_connect:
            before, read_at = previous
            expected = before + (now - read_at) * 1000
            if uptime + UPTIME_SLACK_MS + UPTIME_DRIFT * (now - read_at) * 1000 < expected:
                self.controller_starts += 1
                log.warning("%s: the controller restarted while the port was closed (up %d ms, %d ms expected): "
                            "a restart", self.port, uptime, expected)

    def _unverified(self, why: str, at_connect: bool, answered: bool = False) -> None:
        if self.allow_unverified:
            self._check_pending = False
            log.warning("%s: the controller's configuration is not verified (%s): driven anyway, as "
                        "--allow-unverified-controller asks (its wheel count, base kind and limits are unchecked)",
                        self.port, why)
            return
        if at_connect:
            raise ControllerUnverified(f"{self.port}: refused: the controller's configuration (wheel count, base "
                                       f"kind, limits) cannot be verified: {why}. {ALLOW_FLAG}")
        self._config_refused(f"{self.port}: the controller that answers now cannot be verified: {why}", False)

    def _config_refused(self, message: str, at_connect: bool) -> None:
        if at_connect:
            raise ControllerMismatch(message)
        self.verified = False
        if not self.config_error:
            self.config_error = message
            log.error("%s; nothing more is sent on this link", message)

    def _warn_above_watchdog_cap(self, info: dict) -> None:
        cap = info.get("max_watchdog_ms")
        if cap and self.watchdog_ms > cap:
            log.warning("%s: commands carry a %d ms timeout (--cmd-timeout), the controller caps it at %d ms: it "
                        "stops the motors %d ms after the last motion command whatever the host asks "
                        "(docs/serial-protocol.md)", self.port, self.watchdog_ms, cap, cap)

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
        if self._check_pending:
            self._verify(self.ack_timeout_s, at_connect=False)
            return False
        return True

    def _on_ready(self, frame) -> None:
        """A READY frame: the board (re)booted; it must still be the board this run was configured for, and it
        is asked again (QUERY_INFO) before anything moves."""
        self.controller_starts += 1
        self._uptime = None  # this restart is counted: the uptime check after it has no earlier reading to compare
        self.ready = True
        self.verified = False
        self._check_pending = True
        self._check_ready(frame.payload)

    def _on_unverified_nack(self) -> None:
        """NACK 5: the board has not been asked QUERY_INFO since it started. After a check on this connection,
        it restarted and its READY never reached us: count the restart, check again."""
        if self.verified:
            self.controller_starts += 1
            self._uptime = None  # counted here; the next uptime check must not count it again
            log.warning("%s: the controller restarted unseen (NACK 5 after its configuration was checked)", self.port)
        self.verified = False
        self._check_pending = True

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
                self._on_unverified_nack()
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
        self._uptime = (status["uptime_ms"], time.monotonic())
        return status
