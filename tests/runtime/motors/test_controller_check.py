"""What the board must be for a run, decided over what it said (runtime/motors/controller_check.py): INFO,
READY and STATUS built by the protocol's own encoders, the way the firmware sends them; no port. The same
decisions on a real pseudo-terminal, against the emulator and the C firmware: test_serial_controller.py."""

import logging

import pytest

from runtime.motors.controller_check import UPTIME_SLACK_MS, ControllerCheck, ControllerMismatch, ControllerUnverified
from runtime.motors.kinematics import make_base
from runtime.motors.protocol import (
    INFO_V1_BYTES,
    VERSION,
    BaseKind,
    Command,
    ErrorCode,
    Frame,
    Limits,
    info_payload,
    parse_info,
    ready_payload,
)

PORT = "/dev/ttyTEST"


def info(wheels=0, limits=Limits(), base=BaseKind.HOLONOMIC, max_watchdog_ms=1000, v1=False) -> dict:
    payload = info_payload(wheels, 500, limits, base, max_watchdog_ms)
    return parse_info(payload[:INFO_V1_BYTES] if v1 else payload)


def test_a_board_that_is_what_the_run_drives_has_no_mismatch():
    check = ControllerCheck(PORT, base="omni", wheels=make_base("mecanum"), max_speed=(0.3, 0.3, 1.0))
    assert check.mismatches(info(wheels=4)) == [] and check.unchecked(info(wheels=4)) == ""


def test_each_mismatch_names_both_values():
    assert "differential base" in ControllerCheck(PORT, base="omni").mismatches(info(base=BaseKind.DIFFERENTIAL))[0]
    found = ControllerCheck(PORT, base="diff").mismatches(info(base=BaseKind.HOLONOMIC))
    assert len(found) == 1 and "holonomic base" in found[0] and "--base diff" in found[0]
    found = ControllerCheck(PORT, wheels=make_base("omni3")).mismatches(info(wheels=4))
    assert len(found) == 1 and "reports 4 wheels" in found[0] and "sends 3 wheel speeds" in found[0]
    found = ControllerCheck(PORT, wheels=make_base("omni3")).mismatches(info(wheels=0))
    assert "takes body velocity only (0 wheels)" in found[0]
    ready = {"version": VERSION + 1, "wheels": 0, "default_watchdog_ms": 500}
    assert f"protocol version {VERSION + 1}, this host {VERSION}" in ControllerCheck(PORT).mismatches(ready)[0]


def test_max_speed_above_the_boards_limits_is_a_mismatch_per_axis():
    limits = Limits(max_linear=0.5, max_angular=2.0)
    check = ControllerCheck(PORT, base="omni", max_speed=(0.6, 0.7, 2.5))
    found = check.mismatches(info(limits=limits))
    assert [s.split(" ")[1] for s in found] == ["vx", "vy", "wz"]
    assert "--max-speed vy 0.7 m/s is above the controller's limit 0.5 m/s" in found[1]
    # --base diff never sends vy: a vy above the limit is no mismatch there
    diff = ControllerCheck(PORT, base="diff", max_speed=(0.4, 0.7, 1.0))
    assert diff.mismatches(info(limits=limits, base=BaseKind.DIFFERENTIAL)) == []
    assert ControllerCheck(PORT, max_speed=(0.5, 0.5, 2.0)).mismatches(info(limits=limits)) == []  # at the limit


def test_a_wheel_faster_than_max_wheel_is_a_mismatch():
    check = ControllerCheck(PORT, wheels=make_base("mecanum"), max_speed=(0.3, 0.3, 1.0))
    found = check.mismatches(info(wheels=4, limits=Limits(max_wheel=1.0)))
    assert len(found) == 1 and "above the controller's max_wheel 1 rad/s" in found[0]
    assert check.mismatches(info(wheels=4, limits=Limits(max_wheel=1000.0))) == []


def test_a_board_without_its_base_kind_cannot_be_checked_only_when_base_is_set():
    old = info(v1=True)
    assert old["base"] == "unknown"
    assert "does not report its base kind" in ControllerCheck(PORT, base="omni").unchecked(old)
    assert ControllerCheck(PORT, base="omni").mismatches(old) == []  # unknown is not another kind
    assert ControllerCheck(PORT).unchecked(old) == ""


def test_read_info_says_why_there_is_no_info():
    check = ControllerCheck(PORT)
    assert check.read_info(None, 0.2) == (None, "QUERY_INFO unanswered within 200 ms", False)
    nack2 = Frame(Command.NACK, 1, bytes([1, ErrorCode.UNKNOWN_COMMAND]))
    assert check.read_info(nack2, 0.2)[1:] == ("QUERY_INFO unknown to it (NACK 2): firmware older than the "
                                               "configuration check", True)
    assert check.read_info(Frame(Command.NACK, 1, bytes([1, 4])), 0.2)[1:] == ("QUERY_INFO refused (NACK 4)", True)
    assert check.read_info(Frame(Command.INFO, 1, info_payload(3, 500, Limits())), 0.2)[0]["wheels"] == 3
    with pytest.raises(ControllerMismatch, match=f"{PORT}: the controller's INFO reply is malformed"):
        check.read_info(Frame(Command.INFO, 1, b"\x01\x02"), 0.2)


def test_judge_verifies_a_matching_board_and_refuses_another(caplog):
    check = ControllerCheck(PORT, base="omni")
    with caplog.at_level(logging.WARNING):
        assert check.judge(info(max_watchdog_ms=300), "", True, at_connect=True, connected=True, watchdog_ms=500)
    assert check.verified and not check.pending and check.info["max_watchdog_ms"] == 300
    assert "caps it at 300 ms" in caplog.text  # 500 ms asked, 300 ms the board's cap
    with pytest.raises(ControllerMismatch, match=f"^{PORT}: the controller drives a differential base"):
        check.judge(info(base=BaseKind.DIFFERENTIAL), "", True, at_connect=True, connected=True, watchdog_ms=500)
    # later: config_error, the first one kept
    assert not check.judge(info(base=BaseKind.DIFFERENTIAL), "", True, False, True, 500)
    first = check.config_error
    assert not check.verified and first.startswith(f"{PORT}: the controller drives a differential base")
    check.judge({"version": VERSION + 1, "wheels": 0}, "", True, False, True, 500)
    assert check.config_error == first


def test_judge_a_board_that_cannot_say():
    with pytest.raises(ControllerUnverified, match="QUERY_INFO unanswered.*--allow-unverified-controller"):
        ControllerCheck(PORT).judge(None, "QUERY_INFO unanswered", False, at_connect=True, connected=True,
                                    watchdog_ms=500)
    # later and unanswered: asked again before the next motion, nothing refused yet
    check = ControllerCheck(PORT)
    assert not check.judge(None, "QUERY_INFO unanswered", False, False, True, 500)
    assert check.pending and not check.config_error
    # later, answered but cannot say: another board
    older = ControllerCheck(PORT, base="diff")
    older.judge(info(v1=True), "", True, False, True, 500)
    assert "cannot be verified: it does not report its base kind" in older.config_error
    # a port gone during the check: due again on the next connection, nothing decided
    gone = ControllerCheck(PORT)
    assert not gone.judge(None, "QUERY_INFO unanswered", False, True, connected=False, watchdog_ms=500)
    assert gone.pending and not gone.config_error
    # allowed: driven unverified
    allowed = ControllerCheck(PORT, base="omni", allow_unverified=True)
    assert not allowed.judge(info(v1=True), "", True, True, True, 500)
    assert not allowed.pending and not allowed.verified and allowed.info is not None


def test_a_ready_counts_a_start_and_makes_the_check_due():
    check = ControllerCheck(PORT, wheels=make_base("omni3"))
    check.verified, check.pending, check.uptime = True, False, (1000, 0.0)
    check.on_ready(ready_payload(3, 500))
    assert (check.controller_starts, check.verified, check.pending, check.uptime) == (1, False, True, None)
    assert check.config_error == ""
    check.on_ready(b"\x01")  # another layout: counted, nothing checkable
    assert check.controller_starts == 2 and check.config_error == ""
    check.on_ready(ready_payload(4, 500))  # another board on the port
    assert check.config_error.startswith(f"{PORT}: after a controller (re)start: the controller reports 4 wheels")


def test_nack_5_counts_a_restart_only_after_a_check():
    check = ControllerCheck(PORT)
    check.on_unverified_nack()  # never checked on this connection: not a restart
    assert check.controller_starts == 0 and check.pending
    check.verified, check.pending, check.uptime = True, False, (1000, 0.0)
    check.on_unverified_nack()
    assert (check.controller_starts, check.verified, check.pending, check.uptime) == (1, False, True, None)


def test_an_uptime_shorter_than_expected_is_a_restart():
    check = ControllerCheck(PORT)
    previous = (10_000, 100.0)  # 10 s up, read at t=100 s
    # 2 s later: 12 s expected; the slack covers a read's round trip (the clocks' drift: 0.2 ms here)
    assert not check.uptime_checked(previous, 12_000 - UPTIME_SLACK_MS, 102.0, at_connect=False)
    assert not check.uptime_checked(None, 5, 102.0, at_connect=False)
    assert not check.uptime_checked(previous, 5, 102.0, at_connect=True)
    assert check.controller_starts == 0
    assert check.uptime_checked(previous, 12_000 - UPTIME_SLACK_MS - 1, 102.0, at_connect=False)
    assert check.uptime_checked(previous, 300, 102.0, at_connect=False)  # rebooted 0.3 s ago
    assert check.controller_starts == 2
    # 1000 s later the two clocks may have drifted 100 ms (1e-4) apart on top of the slack
    expected = 10_000 + 1_000_000
    assert not check.uptime_checked(previous, expected - UPTIME_SLACK_MS - 100, 1100.0, at_connect=False)
    assert check.uptime_checked(previous, expected - UPTIME_SLACK_MS - 101, 1100.0, at_connect=False)
    assert check.controller_starts == 3


def test_a_new_connection_is_unchecked():
    check = ControllerCheck(PORT)
    check.verified, check.pending = True, False
    check.connection_changed()
    assert not check.verified and check.pending
