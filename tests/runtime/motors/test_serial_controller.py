"""The serial driver on a real pseudo-terminal, against both controllers: the Python emulator and the
C firmware (firmware/, compiled here). `controller` is parametrized over both (tests/conftest.py)."""

import fcntl
import math
import os
import select
import struct
import threading
import time
import typing

import pytest
import serial

from runtime.hardware import MotorController, SentCommand
from runtime.motors.dry_run import DryRunMotor
from runtime.motors.kinematics import make_base
from runtime.motors.protocol import (
    Command,
    ErrorCode,
    Limits,
    encode_frame,
    parse_info,
    velocity_payload,
    wheels_payload,
)
from runtime.motors.serial_controller import ControllerMismatch, ControllerUnverified, SerialMotorController
from runtime.motors.serial_link import MotorError, SerialLink
from sim.controller_emulator import ControllerEmulator
from tests.runtime.motors.older_controllers import InfoWithoutBaseKind, OlderController, SilentOnInfo


def wait_for(predicate, timeout=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def test_commands_are_acknowledged_and_applied(controller):
    with SerialMotorController(controller.port) as motor:
        sent = motor.send_velocity(0.2, -0.1, 0.3)
        assert sent == SentCommand((0.2, -0.1, 0.3), sent=True, acknowledged=True) and sent.delivered
        assert motor.last_sent == (0.2, -0.1, 0.3)
        assert controller.velocity == pytest.approx((0.2, -0.1, 0.3))
        assert motor.heartbeat()
        status = motor.query_status()
        assert status["moving"] and status["velocity"] == pytest.approx((0.2, -0.1, 0.3))
        assert motor.stop() and controller.velocity == (0.0, 0.0, 0.0) and motor.last_sent == (0.0, 0.0, 0.0)
    # leaving the context stops the motors
    assert wait_for(lambda: controller.commands()[-1].command == "STOP")


def test_wheel_speeds_for_a_mecanum_base(make_controller):
    base = make_base("mecanum")
    board = make_controller(base=base)
    with SerialMotorController(board.port, wheels=base) as motor:
        assert motor.send_velocity(0.3, 0.1, 0.2).acknowledged
        assert board.commands()[-1].command == "SET_WHEELS"
        assert board.velocity == pytest.approx((0.3, 0.1, 0.2), abs=1e-5)


def test_controller_watchdog_stops_the_motors_on_its_own(controller):
    motor = SerialMotorController(controller.port, watchdog_ms=100).connect()
    motor.send_velocity(0.4, 0.0, 0.0)
    sent = time.monotonic()
    assert wait_for(lambda: controller.velocity == (0.0, 0.0, 0.0), timeout=1.0)
    assert controller.commands()[-1].command == "WATCHDOG"
    assert controller.commands()[-1].time - sent < 0.2
    assert motor.query_status()["watchdog_tripped"]
    motor.link.close()


def test_a_heartbeat_keeps_the_link_never_the_motion(controller):
    # Issue 29, item 8: HEARTBEAT is answered (the link is alive) but the motion stops at the deadline of its own
    # command (150 ms here) however many heartbeats follow: a host whose heartbeat outlives its control loop must
    # not keep the robot moving. (Until issue 29 a HEARTBEAT re-armed the watchdog and the robot kept going.)
    motor = SerialMotorController(controller.port, watchdog_ms=150).connect()
    assert motor.send_velocity(0.3, 0.0, 0.0).acknowledged
    sent = time.monotonic()
    beats = []
    while time.monotonic() - sent < 0.4:  # heartbeats every 30 ms for 0.4 s, well past the 150 ms
        time.sleep(0.03)
        beats.append(motor.heartbeat())
    assert all(beats) and len(beats) >= 8, beats  # every one answered: the link is alive
    assert controller.velocity == (0.0, 0.0, 0.0)
    stop = controller.commands("WATCHDOG")[-1].time - sent
    assert 0.1 < stop < 0.25, stop  # at the command's own deadline, not at the last heartbeat's
    motor.link.close()


def test_the_board_caps_the_watchdog_at_one_second_whatever_the_host_asks(controller):
    # Issue 29, item 8: 65535 ms asked (the protocol's uint16 allows 65 s), 1 s applied.
    motor = SerialMotorController(controller.port, watchdog_ms=65535).connect()
    assert motor.info["max_watchdog_ms"] == 1000 and motor.info["default_watchdog_ms"] == 500
    assert motor.send_velocity(0.3, 0.0, 0.0).acknowledged
    sent = time.monotonic()
    assert wait_for(lambda: controller.velocity == (0.0, 0.0, 0.0), timeout=3.0)
    stop = controller.commands("WATCHDOG")[-1].time - sent
    assert 0.9 < stop < 1.25, stop
    motor.link.close()


def test_garbage_from_the_controller_never_crashes_the_driver(controller):
    motor = SerialMotorController(controller.port).connect()
    junk = [os.urandom(50), b"\xaa\x55\x01\x05\x81\x1f" + b"\x00" * 10,  # truncated, plausible length
            encode_frame(Command.ACK, 99, b"\x63\x00")[:-1] + b"\x00",  # wrong checksum
            b"\xaa\x55\x01"]  # cut mid-header
    for chunk in junk:
        controller.inject(chunk)
        motor.send_velocity(0.1, 0.0, 0.0)
    assert motor.is_connected
    assert controller.velocity == pytest.approx((0.1, 0.0, 0.0))
    # a garbage header with a plausible length can swallow the next reply or two; then it is back in sync
    assert any(motor.heartbeat() for _ in range(5))
    assert motor.heartbeat() and motor.heartbeat()
    motor.disconnect()


def test_hung_controller_costs_a_timeout_not_a_crash(controller):
    motor = SerialMotorController(controller.port, ack_timeout_s=0.02).connect()
    answered = motor.last_answer
    assert motor.unanswered == 0 and answered is not None and answered <= time.monotonic()
    controller.respond = False
    start = time.monotonic()
    sent = motor.send_velocity(0.1, 0.0, 0.0)
    assert time.monotonic() - start < 0.2
    assert sent == SentCommand((0.1, 0.0, 0.0), sent=True, acknowledged=False) and not sent.delivered
    assert motor.missed_acks == 1 and motor.last_sent == (0.1, 0.0, 0.0)  # it did go out on the wire
    # what the drive counts toward --give-up-after (issue 29, item 5): written, and unanswered
    assert not motor.heartbeat() and motor.query_status() is None
    assert motor.unanswered == 3 and motor.last_answer == answered
    controller.respond = True
    assert motor.heartbeat() and motor.unanswered == 0 and motor.last_answer > answered
    motor.link.close()


def test_reconnects_when_the_port_comes_back(controller):
    motor = SerialMotorController(controller.port, reconnect_s=0.05).connect()
    assert motor.send_velocity(0.2, 0.0, 0.0).delivered
    controller.unplug()
    assert controller.velocity == (0.0, 0.0, 0.0)
    results = [motor.send_velocity(0.2, 0.0, 0.0) for _ in range(5)]  # writes fail while unplugged
    assert not motor.is_connected
    assert not results[-1].sent and results[-1].velocity == (0.0, 0.0, 0.0)
    controller.replug()
    assert wait_for(lambda: motor.send_velocity(0.25, 0.0, 0.0).acknowledged, timeout=2.0)
    assert controller.velocity == pytest.approx((0.25, 0.0, 0.0))
    assert motor.reconnects >= 1
    motor.disconnect()


# -- issue 14, point 7: serial defects ------------------------------------------------------------

def test_send_velocity_on_a_disconnected_port_reports_not_sent(controller):
    motor = SerialMotorController(controller.port, reconnect_s=10.0).connect()
    assert isinstance(motor, MotorController)
    assert motor.send_velocity(0.2, 0.0, 0.0).delivered
    controller.unplug()
    lost = motor.send_velocity(0.3, 0.0, 0.0)  # the write fails: the driver finds the port gone
    later = motor.send_velocity(0.3, 0.0, 0.0)  # no reconnect attempt yet (reconnect_s): nothing written
    for result in (lost, later):
        assert result == SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=False)
    assert motor.last_sent == (0.2, 0.0, 0.0)  # the last command that really went out
    assert not motor.stop()


def test_controller_refuses_nan_inf_and_unbounded_speeds_and_stops(make_controller):
    base = make_base("mecanum")
    board = make_controller(base=base)
    motor = SerialMotorController(board.port).connect()
    for bad in [(math.nan, 0.0, 0.0), (0.0, math.inf, 0.0), (0.0, 0.0, -math.inf), (1e6, 0.0, 0.0),
                (0.0, 0.0, 50.0)]:
        assert motor.send_velocity(0.2, 0.0, 0.1).acknowledged
        refused = motor.send_velocity(*bad)
        assert refused.sent and refused.acknowledged is False, bad
        assert refused.velocity == (0.0, 0.0, 0.0) and motor.last_sent == (0.0, 0.0, 0.0), bad  # what the robot does
        assert board.velocity == (0.0, 0.0, 0.0) and board.commands()[-1].command == "REFUSED", bad
    # wheel speeds: NaN and beyond the controller's maximum are refused the same way
    for wheels in ([math.nan, 0.0, 0.0, 0.0], [0.0, 0.0, 1e4, 0.0]):
        assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
        reply = motor._transact(Command.SET_WHEELS, wheels_payload(wheels, 500))
        assert reply.type == Command.NACK and tuple(reply.payload) == (motor.seq, 4)
        assert board.velocity == (0.0, 0.0, 0.0)
    assert motor.query_status()["moving"] is False
    motor.disconnect()


class AutoResetSerial(serial.Serial):
    """pyserial on a real pty, plus what a CH340/FTDI + Arduino board does on open: the auto-reset
    capacitor turns an asserted DTR (or RTS) into a reset, and the board is deaf while it boots.
    `always` models Linux, whose kernel raises DTR on every open whatever the program asks."""

    board = None
    boot_s = 0.6
    always = False
    opens: typing.ClassVar[list] = []

    def open(self):
        asserted = {"dtr": self.dtr, "rts": self.rts}  # the lines' state when the port opens
        AutoResetSerial.opens.append(asserted)
        super().open()
        if self.always or any(asserted.values()):
            self.board.reboot(self.boot_s)


@pytest.fixture
def auto_reset(monkeypatch, controller):
    monkeypatch.setattr(serial, "Serial", AutoResetSerial)
    monkeypatch.setattr(AutoResetSerial, "board", controller)
    monkeypatch.setattr(AutoResetSerial, "opens", [])
    monkeypatch.setattr(AutoResetSerial, "always", False)
    return AutoResetSerial


def test_opening_the_port_drives_neither_dtr_nor_rts(auto_reset, controller):
    motor = SerialMotorController(controller.port).connect()
    assert auto_reset.opens == [{"dtr": False, "rts": False}]
    assert not controller.commands("REBOOT")
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged  # no reboot swallowed the first command
    assert motor.link.serial.dsrdtr is False and motor.link.serial.rtscts is False
    motor.disconnect()


def test_connect_waits_for_a_board_that_resets_on_open(auto_reset, controller):
    auto_reset.always = True
    start = time.monotonic()
    motor = SerialMotorController(controller.port).connect()
    waited = time.monotonic() - start
    assert controller.commands("REBOOT")
    assert 0.5 < waited < 2.0 and motor.ready and motor.controller_starts == 1
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged  # the first command after connect arrives
    assert controller.velocity == pytest.approx((0.2, 0.0, 0.0))
    motor.disconnect()


def test_a_board_that_reboots_mid_run_stops_and_is_noticed(controller):
    motor = SerialMotorController(controller.port).connect()
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged and motor.controller_starts == 0
    controller.reboot(0.2)  # a brown-out: motors off, deaf while booting, then READY
    assert controller.velocity == (0.0, 0.0, 0.0)
    assert not motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    assert wait_for(lambda: motor.send_velocity(0.2, 0.0, 0.0).acknowledged, timeout=2.0)
    assert motor.controller_starts == 1 and controller.velocity == pytest.approx((0.2, 0.0, 0.0))
    motor.disconnect()


def test_ack_wait_blocks_instead_of_polling(controller, monkeypatch):
    motor = SerialMotorController(controller.port, ack_timeout_s=0.05).connect()
    controller.respond = False
    calls = {"select": 0, "read": 0, "sleep": 0}
    real_select, real_read, real_sleep = select.select, motor.link.serial.read, time.sleep

    me = threading.get_ident()  # the emulator's own thread selects too: count only the driver's calls

    def counting(name, fn):
        def wrapper(*a, **k):
            calls[name] += threading.get_ident() == me
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(select, "select", counting("select", real_select))  # pyserial's own selects count too
    monkeypatch.setattr(motor.link.serial, "read", counting("read", real_read))
    monkeypatch.setattr(time, "sleep", counting("sleep", real_sleep))
    start = time.monotonic()
    result = motor.send_velocity(0.1, 0.0, 0.0)
    waited = time.monotonic() - start
    monkeypatch.undo()
    assert 0.045 < waited < 0.2  # it did wait the whole ack timeout...
    assert sum(calls.values()) <= 5, calls  # ...in a blocking call, not ~100 polls of 0.5 ms
    print(f"ack wait of a silent controller: {calls} in {waited * 1000:.0f} ms")
    assert result.sent and not result.acknowledged
    motor.link.close()


def test_dry_run_is_a_motor_controller_that_says_what_it_did():
    printed = []
    motor = DryRunMotor(printer=printed.append)
    assert isinstance(motor, MotorController)
    with motor:
        assert motor.send_velocity(0.1, 0.0, -0.2) == SentCommand((0.1, 0.0, -0.2), sent=True, acknowledged=None)
        assert motor.last_sent == (0.1, 0.0, -0.2)
    assert motor.last_sent == (0.0, 0.0, 0.0) and not motor.is_connected  # disconnect sent the zero
    assert not motor.send_velocity(0.1, 0.0, 0.0).sent
    assert printed == ["cmd_vel +0.100 +0.000 -0.200", "cmd_vel +0.000 +0.000 +0.000"]


def test_missing_port_and_permission_errors_say_what_to_do(tmp_path):
    with pytest.raises(MotorError, match="not found.*plugged in"):
        SerialMotorController(str(tmp_path / "ttyUSB9")).connect()
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    locked = tmp_path / "locked"
    locked.write_text("")
    locked.chmod(0)
    with pytest.raises(MotorError, match="dialout"):
        SerialMotorController(str(locked)).connect()


def test_permission_message_names_the_fix():
    from runtime.motors.serial_link import explain_open_error

    msg = explain_open_error("/dev/ttyUSB0", PermissionError(13, "Permission denied"))
    assert "dialout" in msg and "udev" in msg


# -- what the controller reports at connect (QUERY_INFO, READY) against the run's settings -----------------
def test_a_wheel_count_mismatch_is_refused_at_connect_naming_both_values(make_controller):
    board = make_controller(base=make_base("mecanum"))
    motor = SerialMotorController(board.port, wheels=make_base("omni3"))
    with pytest.raises(ControllerMismatch, match=r"reports 4 wheels, but --wheels omni3 sends 3 wheel speeds"):
        motor.connect()
    assert not motor.is_connected  # the port was released
    with SerialMotorController(board.port, wheels=make_base("mecanum"), max_speed=(0.5, 0.5, 1.0)) as ok:
        assert ok.info["version"] == 1 and ok.info["wheels"] == 4 and ok.info["default_watchdog_ms"] == 500
        assert ok.info["limits"] == Limits()  # the reference controllers' defaults
        assert ok.send_velocity(0.1, 0.0, 0.0).acknowledged


def test_limits_below_the_hosts_max_speed_are_refused_naming_both(controller):
    motor = SerialMotorController(controller.port, max_speed=(3.0, 0.5, 7.5))
    with pytest.raises(ControllerMismatch) as e:
        motor.connect()
    assert "--max-speed vx 3 m/s is above the controller's limit 2 m/s" in str(e.value)
    assert "--max-speed wz 7.5 rad/s is above the controller's limit 6 rad/s" in str(e.value)
    assert "vy" not in str(e.value)


def test_a_board_that_comes_back_as_another_base_gets_nothing_more(tmp_path):
    board = ControllerEmulator(link=tmp_path / "motor", base=make_base("mecanum")).start()
    try:
        motor = SerialMotorController(board.port, wheels=make_base("mecanum")).connect()
        assert motor.send_velocity(0.1, 0.0, 0.0).acknowledged
        board.base = make_base("omni3")  # another board answers after the reset
        board.reboot(0.1)
        assert wait_for(lambda: bool(motor.send_velocity(0.1, 0.0, 0.0) and motor.config_error), timeout=2.0)
        assert "reports 3 wheels, but --wheels mecanum sends 4" in motor.config_error
        assert motor.send_velocity(0.1, 0.0, 0.0) == SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=False)
        assert board.velocity == (0.0, 0.0, 0.0)
        motor.disconnect()
    finally:
        board.stop()


@pytest.mark.parametrize("board_class,why", [
    (OlderController, "QUERY_INFO unknown to it (NACK 2): firmware older than the configuration check"),
    (SilentOnInfo, "QUERY_INFO unanswered within 200 ms"),
    (InfoWithoutBaseKind, "it does not report its base kind (a 16-byte INFO: firmware older than the base kind), "
                          "so --base omni cannot be checked"),
])
def test_a_controller_that_cannot_say_what_it_is_is_refused_unless_allowed(tmp_path, caplog, board_class, why):
    # Issue 29, item 6: a board whose configuration cannot be checked is refused at connect (until issue 29 it was
    # driven with a warning); --allow-unverified-controller drives it, unverified, and says so.
    board = board_class(link=tmp_path / "motor").start()
    try:
        motor = SerialMotorController(board.port, base="omni")
        with pytest.raises(ControllerUnverified) as e:
            motor.connect()
        assert str(e.value).startswith(f"{board.port}: refused: the controller's configuration")
        assert why in str(e.value) and "--allow-unverified-controller" in str(e.value)
        assert not motor.is_connected  # the port was released
        with SerialMotorController(board.port, base="omni", allow_unverified=True) as motor:
            assert not motor.verified and motor.refused == 0
            assert motor.send_velocity(0.1, 0.0, 0.0).acknowledged
        assert f"is not verified ({why}" in caplog.text
    finally:
        board.stop()


def test_a_16_byte_info_parses_as_an_unknown_base_kind_and_is_checked_for_the_rest(tmp_path):
    board = InfoWithoutBaseKind(link=tmp_path / "motor").start()
    try:
        with SerialMotorController(board.port, max_speed=(0.5, 0.5, 1.0)) as motor:  # no --base to compare
            assert motor.verified and motor.info["base"] == "unknown" and motor.info["max_watchdog_ms"] is None
            assert motor.info["limits"] == Limits()
        with pytest.raises(ControllerMismatch, match="--max-speed vx 3 m/s is above the controller's limit 2 m/s"):
            SerialMotorController(board.port, max_speed=(3.0, 0.5, 1.0), base="omni").connect()
    finally:
        board.stop()


def test_a_refused_bad_payload_stops_the_motors_as_the_host_reports(controller):
    """The host reads any NACK to a motion command as zero; the controller must then be at zero."""
    with SerialMotorController(controller.port) as motor:
        assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
        assert controller.velocity == pytest.approx((0.2, 0.0, 0.0))
        motor._write(Command.SET_VELOCITY, b"\x00" * 13)  # one byte short
        reply = motor._reply()
        assert (reply.type, reply.payload[1]) == (Command.NACK, 1)
        assert controller.velocity == (0.0, 0.0, 0.0) and controller.commands()[-1].command == "REFUSED"


# -- runtime.motor_stop: whatever --motor the drive used ---------------------------------------------------
def test_motor_stop_stops_our_controller_and_any_motor_side(controller, tmp_path):
    from tests.conftest import run_python

    motor = SerialMotorController(controller.port, watchdog_ms=1000).connect()
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    # another process holds the port (a running drive): the stop is refused naming it (issue 29, item 7)
    busy = run_python("-m", "runtime.motor_stop", "--serial", controller.port, timeout=60)
    assert busy.returncode == 1 and f"is in use by pid {os.getpid()}" in busy.stderr, busy.stderr
    motor.link.close()  # the holder dies without its own stop
    done = run_python("-m", "runtime.motor_stop", "--serial", controller.port, "--wheels", "omni3", timeout=60)
    assert done.returncode == 0 and "stopped" in done.stdout, done.stderr  # --wheels is not checked for a stop
    assert controller.velocity == (0.0, 0.0, 0.0) and controller.commands()[-1].command == "STOP"
    calls = tmp_path / "calls.jsonl"
    vendor = run_python("-m", "runtime.motor_stop", "--motor", "tests.runtime.motors.vendor_motor:RecordingMotor",
                        timeout=60, env={"RECORDING_MOTOR_LOG": str(calls)})
    assert vendor.returncode == 0 and "stopped" in vendor.stdout, vendor.stderr
    import json

    assert [json.loads(line)["call"] for line in calls.read_text().splitlines()][:2] == ["connect", "stop"]
    missing = run_python("-m", "runtime.motor_stop", "--serial", str(tmp_path / "ttyUSB9"), timeout=60)
    assert missing.returncode == 1 and "not found" in missing.stderr


# -- issue 29: the configuration at every connect and reconnect, board restarts, one opener ---------------
def test_a_differential_board_is_refused_for_an_omni_run_naming_both(make_controller):
    # Finding 6: a differential board under an omni drive dropped vy while every step was logged as acknowledged.
    board = make_controller(base=make_base("differential"))
    with pytest.raises(ControllerMismatch) as e:
        SerialMotorController(board.port, base="omni").connect()
    assert "the controller drives a differential base (vx and wz only: it drops vy), but --base omni" in str(e.value)
    with SerialMotorController(board.port, base="diff", max_speed=(0.5, 0.5, 1.0)) as motor:
        assert motor.verified and motor.info["base"] == "differential" and motor.info["wheels"] == 2
        assert motor.send_velocity(0.2, 0.0, 0.3).acknowledged
    holonomic = make_controller(base=make_base("mecanum"), name="mecanum")
    with pytest.raises(ControllerMismatch, match="drives a holonomic base .* but --base diff"):
        SerialMotorController(holonomic.port, base="diff").connect()


def test_a_board_that_does_not_answer_at_connect_is_refused_unless_allowed(controller):
    controller.respond = False
    with pytest.raises(ControllerUnverified, match=rf"{controller.port}: refused: .*did not answer within 0.3 s"):
        SerialMotorController(controller.port, ready_timeout_s=0.3).connect()
    motor = SerialMotorController(controller.port, ready_timeout_s=0.3, allow_unverified=True).connect()
    assert motor.is_connected and not motor.ready and not motor.verified
    motor.link.close()


def test_motion_waits_for_the_configuration_check_after_a_reconnect(controller):
    motor = SerialMotorController(controller.port, reconnect_s=0.05, base="omni").connect()
    assert motor.verified and motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    controller.unplug()
    assert not motor.send_velocity(0.2, 0.0, 0.0).sent and not motor.is_connected
    controller.replug()
    time.sleep(0.06)  # past reconnect_s: the next command reopens the port
    first = motor.send_velocity(0.2, 0.0, 0.0)  # reopens, asks QUERY_INFO, sends no motion
    assert first == SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=False)
    assert motor.reconnects == 1 and motor.verified and controller.velocity == (0.0, 0.0, 0.0)
    assert motor.send_velocity(0.25, 0.0, 0.0).acknowledged  # checked: motion again
    assert controller.velocity == pytest.approx((0.25, 0.0, 0.0))
    motor.disconnect()


def test_another_board_on_the_reopened_port_gets_nothing(make_controller):
    # Finding 6 after a reconnect: the cable now leads to a differential board (its READY went out before the port
    # was reopened, so only QUERY_INFO can tell).
    board = make_controller(base=make_base("mecanum"))
    motor = SerialMotorController(board.port, reconnect_s=0.05, base="omni").connect()
    assert motor.send_velocity(0.2, 0.1, 0.0).acknowledged
    board.unplug()
    assert not motor.send_velocity(0.2, 0.1, 0.0).sent
    other = make_controller(base=make_base("differential"))  # the same path, another board
    time.sleep(0.06)
    results = [motor.send_velocity(0.2, 0.1, 0.0) for _ in range(3)]
    assert all(r == SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=False) for r in results)
    assert "differential base" in motor.config_error and "--base omni" in motor.config_error
    assert other.velocity == (0.0, 0.0, 0.0) and not other.commands("SET_VELOCITY")
    assert motor.stop()  # a STOP always goes out


def test_a_board_that_restarted_is_checked_before_it_moves_again(controller):
    # Finding 4, the board side: deaf, then READY; the READY waits unread on the port when the next command
    # comes. Until issue 29 that command went straight to the fresh board, which applied it by itself.
    motor = SerialMotorController(controller.port, ack_timeout_s=0.03).connect()
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    answered = motor.last_answer
    controller.reboot(0.3)
    deaf = [motor.send_velocity(0.2, 0.0, 0.0) for _ in range(3)]  # written, unanswered: count toward give-up
    assert all(r.sent and not r.acknowledged for r in deaf) and motor.unanswered == 3
    assert motor.last_answer == answered
    time.sleep(0.45)  # the board booted and said READY; nobody read it yet
    first = motor.send_velocity(0.2, 0.0, 0.0)
    assert first == SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=False)
    assert motor.controller_starts == 1 and motor.verified and motor.unanswered == 0
    assert controller.velocity == (0.0, 0.0, 0.0)
    reboot = controller.commands("REBOOT")[-1].time
    assert not [r for r in controller.commands("SET_VELOCITY") if r.time > reboot]  # applied nothing by itself
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged  # the drive disarms on controller_starts; this may move
    motor.disconnect()


def test_a_restart_whose_ready_was_lost_is_found_by_the_board_refusing_motion(controller):
    motor = SerialMotorController(controller.port).connect()
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    controller.reboot(0.1)
    time.sleep(0.3)
    motor.link.serial.reset_input_buffer()  # the READY is lost (noise, a full buffer)
    refused = motor.send_velocity(0.2, 0.0, 0.0)  # the fresh board was never asked QUERY_INFO: NACK 5
    assert refused == SentCommand((0.0, 0.0, 0.0), sent=True, acknowledged=False)
    assert motor.controller_starts == 1 and not motor.verified and motor.refused == 0
    assert controller.velocity == (0.0, 0.0, 0.0) and controller.commands()[-1].command == "REFUSED"
    assert not motor.send_velocity(0.2, 0.0, 0.0).sent and motor.verified  # the check
    assert motor.send_velocity(0.2, 0.0, 0.0).acknowledged
    motor.disconnect()


def test_a_board_applies_no_motion_before_it_was_asked_what_it_is(controller):
    # The board's own guarantee (docs/serial-protocol.md): after a start, SET_VELOCITY is refused with NACK 5
    # until a QUERY_INFO; a host that never checks cannot move it.
    link = SerialLink(controller.port).open()
    try:
        assert link.write(Command.SET_VELOCITY, velocity_payload(0.2, 0.0, 0.0, 500))
        reply = link.await_reply(Command.ACK, 0.5)
        assert (reply.type, tuple(reply.payload)) == (Command.NACK, (link.seq, ErrorCode.UNVERIFIED))
        assert controller.velocity == (0.0, 0.0, 0.0)
        assert link.write(Command.QUERY_INFO, b"")
        info = parse_info(link.await_reply(Command.INFO, 0.5).payload)
        assert info["base"] == "holonomic" and info["max_watchdog_ms"] == 1000
        assert link.write(Command.SET_VELOCITY, velocity_payload(0.2, 0.0, 0.0, 500))
        assert link.await_reply(Command.ACK, 0.5).type == Command.ACK
        assert controller.velocity == pytest.approx((0.2, 0.0, 0.0))
    finally:
        link.close()


def exclusive_flag(port: str) -> int:
    """TIOCGEXCL: whether the tty refuses other opens (root may still open it, to ask)."""
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, 0x80045440, b"\0" * 4))[0]  # TIOCGEXCL, <asm-generic/ioctls.h>
    finally:
        os.close(fd)


def test_the_port_has_one_opener_and_a_second_is_told_who(controller):
    # Item 7: two drives, or a drive and a pre-flight, commanded one board at once.
    first = SerialMotorController(controller.port).connect()
    try:
        assert exclusive_flag(controller.port) == 1  # TIOCEXCL: the kernel refuses other users' opens
        second = SerialMotorController(controller.port)
        with pytest.raises(MotorError) as e:
            second.connect()
        assert f"serial port {controller.port} is in use by pid {os.getpid()} (" in str(e.value)
        assert "an e-stop in one does not stop the other" in str(e.value)
        assert not second.is_connected
        assert first.send_velocity(0.1, 0.0, 0.0).acknowledged  # the holder is undisturbed
    finally:
        first.disconnect()
    assert exclusive_flag(controller.port) == 0  # cleared at close, though the board keeps its side open
    with SerialMotorController(controller.port) as again:
        assert again.send_velocity(0.1, 0.0, 0.0).acknowledged
