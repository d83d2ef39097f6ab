"""The serial driver against the controller emulator on a real pseudo-terminal."""

import os
import time

import pytest

from runtime.kinematics import make_base
from runtime.motor import MotorError, SerialMotorController
from sim.controller_emulator import ControllerEmulator
from runtime.protocol import Command, encode_frame


@pytest.fixture
def emulator(tmp_path):
    emu = ControllerEmulator(link=tmp_path / "motor").start()
    yield emu
    emu.stop()


def wait_for(predicate, timeout=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def test_commands_are_acknowledged_and_applied(emulator):
    with SerialMotorController(emulator.port) as motor:
        assert motor.send_velocity(0.2, -0.1, 0.3) == (0.2, -0.1, 0.3)
        assert motor.last_acked
        assert emulator.velocity == pytest.approx((0.2, -0.1, 0.3))
        assert motor.heartbeat()
        status = motor.query_status()
        assert status["moving"] and status["velocity"] == pytest.approx((0.2, -0.1, 0.3))
        assert motor.stop() and emulator.velocity == (0.0, 0.0, 0.0)
    # leaving the context stops the motors
    assert emulator.commands()[-1].command == "STOP"


def test_wheel_speeds_for_a_mecanum_base(tmp_path):
    base = make_base("mecanum")
    emu = ControllerEmulator(link=tmp_path / "m", base=base).start()
    try:
        with SerialMotorController(emu.port, wheels=base) as motor:
            motor.send_velocity(0.3, 0.1, 0.2)
            assert emu.commands()[-1].command == "SET_WHEELS"
            assert emu.velocity == pytest.approx((0.3, 0.1, 0.2), abs=1e-5)
    finally:
        emu.stop()


def test_controller_watchdog_stops_the_motors_on_its_own(emulator):
    motor = SerialMotorController(emulator.port, watchdog_ms=100).connect()
    motor.send_velocity(0.4, 0.0, 0.0)
    sent = time.monotonic()
    assert wait_for(lambda: emulator.velocity == (0.0, 0.0, 0.0), timeout=1.0)
    assert emulator.commands()[-1].command == "WATCHDOG"
    assert emulator.commands()[-1].time - sent < 0.2
    motor.disconnect()


def test_garbage_from_the_controller_never_crashes_the_driver(emulator):
    motor = SerialMotorController(emulator.port).connect()
    junk = [os.urandom(50), b"\xaa\x55\x01\x05\x81\x1f" + b"\x00" * 10,  # truncated, plausible length
            encode_frame(Command.ACK, 99, b"\x63\x00")[:-1] + b"\x00",  # wrong checksum
            b"\xaa\x55\x01"]  # cut mid-header
    for chunk in junk:
        os.write(emulator._master, chunk)
        motor.send_velocity(0.1, 0.0, 0.0)
    assert motor.is_connected
    assert emulator.velocity == pytest.approx((0.1, 0.0, 0.0))
    # a garbage header with a plausible length can swallow the next reply or two; then it is back in sync
    assert any(motor.heartbeat() for _ in range(5))
    assert motor.heartbeat() and motor.heartbeat()
    motor.disconnect()


def test_hung_controller_costs_a_timeout_not_a_crash(emulator):
    emulator.respond = False
    motor = SerialMotorController(emulator.port, ack_timeout_s=0.02).connect()
    start = time.monotonic()
    motor.send_velocity(0.1, 0.0, 0.0)
    assert time.monotonic() - start < 0.2
    assert not motor.last_acked and motor.missed_acks == 1
    motor.disconnect()


def test_reconnects_when_the_port_comes_back(emulator):
    motor = SerialMotorController(emulator.port, reconnect_s=0.05).connect()
    motor.send_velocity(0.2, 0.0, 0.0)
    emulator.unplug()
    assert emulator.velocity == (0.0, 0.0, 0.0)
    for _ in range(5):  # writes fail while unplugged; the driver notices and waits
        motor.send_velocity(0.2, 0.0, 0.0)
    assert not motor.is_connected
    emulator.replug()
    assert wait_for(lambda: (motor.send_velocity(0.25, 0.0, 0.0), motor.is_connected)[1], timeout=2.0)
    motor.send_velocity(0.25, 0.0, 0.0)
    assert emulator.velocity == pytest.approx((0.25, 0.0, 0.0))
    assert motor.reconnects >= 1
    motor.disconnect()


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
    from runtime.motor import explain_open_error

    msg = explain_open_error("/dev/ttyUSB0", PermissionError(13, "Permission denied"))
    assert "dialout" in msg and "udev" in msg
