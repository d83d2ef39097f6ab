"""What the motor controller must be for this run, and whether the board answering on the link is it.

    check = ControllerCheck("/dev/ttyUSB0", base="omni", wheels=None, max_speed=(0.3, 0.3, 1.0))
    check.mismatches(parse_info(reply.payload))  # [] or one sentence per difference, naming both values
    check.judge(info, why, answered, at_connect=True, connected=True, watchdog_ms=500)  # True: verified
    check.on_ready(frame.payload)                 # the board (re)booted: counted, and checked again before motion

Pure logic over what the board said (QUERY_INFO's reply; READY and STATUS parsed by
runtime.motors.protocol): no port, no I/O. The serial driver (runtime/motors/serial_controller.py) asks
(QUERY_INFO, QUERY_STATUS) and hands the answers here; this decides what they mean for the run:

- the configuration: another protocol version, another wheel count than `wheels`, another base kind than
  `base` (the drive's --base: a differential board drops vy), limits below `max_speed` are a mismatch
  (`ControllerMismatch` at connect, `config_error` later: no motion goes out any more). A board that
  cannot say (no answer, NACK 2 to QUERY_INFO, no base kind while `base` is set) is unverified
  (`ControllerUnverified` at connect) unless `allow_unverified` (--allow-unverified-controller).
- restarts (`controller_starts`): a READY (`on_ready`) or a NACK 5 after a check (`on_unverified_nack`: the
  READY never reached us) clears `verified` and makes the check due again (`pending`); an uptime shorter
  than the one read before plus the time since (`uptime_checked`) is a board that restarted while the port
  was closed.
"""

from __future__ import annotations

import logging

from runtime.motors.protocol import INFO_V1_BYTES, VERSION, Command, ErrorCode, parse_info, parse_ready
from runtime.motors.serial_link import MotorError

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
ALLOW_FLAG = ("--allow-unverified-controller drives it unchecked, at a risk docs/motors.md spells out "
              "(a board of another base kind, wheel count or limits drops or refuses what it is sent)")


class ControllerCheck:
    """The run's needs (`base`, `wheels`, `max_speed`, `allow_unverified`) and what is known of the board on the
    current connection (`info`, `verified`, `pending`, `config_error`, `controller_starts`, `uptime`)."""

    def __init__(self, port: str, base: str | None = None, wheels=None, max_speed=None,
                 allow_unverified: bool = False):
        self.port = port  # named in every message
        self.wheels = wheels  # kinematics.Base or None
        self.max_speed = max_speed  # (vx, vy, wz) the host may send (--max-speed), checked against the limits
        self.base = base  # the run's --base (omni, diff), checked against the board's base kind; None: not checked
        self.allow_unverified = allow_unverified  # drive a board whose configuration cannot be checked
        self.info: dict | None = None  # what the controller reported (QUERY_INFO at connect, READY after)
        self.config_error = ""  # set when a controller that answered later does not match: nothing is sent
        self.controller_starts = 0  # READY frames seen (and restarts found by NACK 5): the board (re)booted
        self.verified = False  # the configuration was checked and matches, on the current connection
        self.pending = True  # QUERY_INFO is due before the next motion command
        self.uptime: tuple[int, float] | None = None  # (the board's uptime ms, time.monotonic()) when last read

    def connection_changed(self) -> None:
        """The port was (re)opened: whatever answers now has not been checked on it."""
        self.verified = False
        self.pending = True

    # -- the configuration ---------------------------------------------------------
    def read_info(self, reply, timeout_s: float) -> tuple[dict | None, str, bool]:
        """The reply to QUERY_INFO (a protocol.Frame, or None: none within `timeout_s`) -> (info, why not,
        answered). Raises ControllerMismatch on a malformed INFO."""
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

    def judge(self, info: dict | None, why: str, answered: bool, at_connect: bool, connected: bool,
              watchdog_ms: int) -> bool:
        """The answer to QUERY_INFO (`info`, or None and `why` not; `answered`: the board replied at all), compared.
        Matching: `verified`, and True (the uptime check is due). A mismatch: ControllerMismatch at connect,
        `config_error` later. Not checkable: ControllerUnverified at connect (without allow_unverified); later, a
        board that answered but cannot say is another board (`config_error`), and one that did not answer is
        asked again before the next motion command (`pending` stays)."""
        if info is not None:
            found = self.mismatches(info)
            if found:
                self.refuse(f"{self.port}: " + "; ".join(found), at_connect)
                return False
            self.info = info
            self.warn_above_watchdog_cap(info, watchdog_ms)
            why = self.unchecked(info)
            if not why:
                self.verified, self.pending = True, False
                return True
        if not connected:
            return False  # the port went away during the check: it is due again on the next connection
        if not answered and not at_connect and not self.allow_unverified:
            log.debug("%s: configuration check due (%s): no motion until it is answered", self.port, why)
            return False
        self.unverified(why, at_connect)
        return False

    def unverified(self, why: str, at_connect: bool) -> None:
        """The board's configuration cannot be checked (`why`): driven anyway with allow_unverified, refused
        otherwise (ControllerUnverified at connect, `config_error` later)."""
        if self.allow_unverified:
            self.pending = False
            log.warning("%s: the controller's configuration is not verified (%s): driven anyway, as "
                        "--allow-unverified-controller asks (its wheel count, base kind and limits are unchecked)",
                        self.port, why)
            return
        if at_connect:
            raise ControllerUnverified(f"{self.port}: refused: the controller's configuration (wheel count, base "
                                       f"kind, limits) cannot be verified: {why}. {ALLOW_FLAG}")
        self.refuse(f"{self.port}: the controller that answers now cannot be verified: {why}", False)

    def refuse(self, message: str, at_connect: bool) -> None:
        """This is not the board this run drives: ControllerMismatch at connect; later `config_error` (the first
        one is kept), and nothing more moves on this link."""
        if at_connect:
            raise ControllerMismatch(message)
        self.verified = False
        if not self.config_error:
            self.config_error = message
            log.error("%s; nothing more is sent on this link", message)

    def warn_above_watchdog_cap(self, info: dict, watchdog_ms: int) -> None:
        cap = info.get("max_watchdog_ms")
        if cap and watchdog_ms > cap:
            log.warning("%s: commands carry a %d ms timeout (--cmd-timeout), the controller caps it at %d ms: it "
                        "stops the motors %d ms after the last motion command whatever the host asks "
                        "(docs/serial-protocol.md)", self.port, watchdog_ms, cap, cap)

    # -- restarts ------------------------------------------------------------------
    def on_ready(self, payload: bytes) -> None:
        """A READY frame: the board (re)booted (or another board is on the port); it must still be the board this
        run was configured for (version, wheel count), and it is asked again (QUERY_INFO) before anything moves."""
        self.controller_starts += 1
        self.uptime = None  # this restart is counted: the uptime check after it has no earlier reading to compare
        self.verified = False
        self.pending = True
        try:
            ready = parse_ready(payload)
        except ValueError:
            return  # a READY of another layout says nothing checkable; the next INFO would
        found = self.mismatches(ready)
        if found and not self.config_error:
            self.config_error = f"{self.port}: after a controller (re)start: " + "; ".join(found)
            log.error("%s; nothing more is sent on this link", self.config_error)

    def on_unverified_nack(self) -> None:
        """NACK 5: the board has not been asked QUERY_INFO since it started. After a check on this connection,
        it restarted and its READY never reached us: count the restart, check again."""
        if self.verified:
            self.controller_starts += 1
            self.uptime = None  # counted here; the next uptime check must not count it again
            log.warning("%s: the controller restarted unseen (NACK 5 after its configuration was checked)", self.port)
        self.verified = False
        self.pending = True

    def uptime_checked(self, previous: tuple[int, float] | None, uptime_ms: int, now: float,
                       at_connect: bool) -> bool:
        """A board that restarted while the port was closed (a USB-powered one loses power with its cable) says
        READY to nobody; its uptime tells: shorter than the `previous` reading plus the time since, it restarted,
        and that counts as a start (`controller_starts`, True), which disarms the drive. Never at connect."""
        if previous is None or at_connect:
            return False
        before, read_at = previous
        expected = before + (now - read_at) * 1000
        if uptime_ms + UPTIME_SLACK_MS + UPTIME_DRIFT * (now - read_at) * 1000 < expected:
            self.controller_starts += 1
            log.warning("%s: the controller restarted while the port was closed (up %d ms, %d ms expected): "
                        "a restart", self.port, uptime_ms, expected)
            return True
        return False
