"""Pre-flight against the C controller on a pty: what the board reports is checked against the drive's settings."""

import os

import pytest

from runtime.motors.serial_controller import SerialMotorController
from runtime.preflight import check_controller, main
from tests.fakes.firmware import FirmwareController
from tests.runtime.motors.older_controllers import InfoWithoutBaseKind


@pytest.fixture
def omni_board(firmware_bin, tmp_path):
    board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / "motor",
                               args=["--base", "omni3", "--max-linear", "1"]).start()
    yield board
    board.stop()


def test_preflight_reports_the_controllers_wheel_count_and_limits(omni_board):
    status, msg = check_controller(omni_board.port, wheels="omni3", max_speed=(0.5, 0.5, 1.0))
    assert status == "OK", msg
    assert ("protocol 1, 3 wheels, holonomic base, limits 1 m/s, 6 rad/s, 100 rad/s per wheel, watchdog at most "
            "1000 ms") in msg


def test_preflight_fails_a_wheel_count_mismatch_naming_both(omni_board, tiny_bundle_dir, capsys):
    code = main(["--bundle", str(tiny_bundle_dir), "--verify", "quick", "--serial", omni_board.port,
                 "--wheels", "mecanum", "--max-speed", "1.5", "0.5", "1"])
    out = capsys.readouterr().out
    assert code == 1
    line = next(x for x in out.splitlines() if "controller" in x.split()[1:2])
    assert line.startswith("FAIL")
    assert "reports 3 wheels, but --wheels mecanum sends 4 wheel speeds" in line
    assert "--max-speed vx 1.5 m/s is above the controller's limit 1 m/s" in line


def controller_line(out: str) -> str:
    return next(x for x in out.splitlines() if "controller" in x.split()[1:2])


def test_preflight_fails_a_differential_board_for_the_drives_default_base(firmware_bin, tmp_path, tiny_bundle_dir,
                                                                         capsys):
    # Issue 29, finding 6: --base (default omni, as runtime.drive) against the board's base kind
    board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / "motor",
                               args=["--base", "differential"]).start()
    try:
        common = ["--bundle", str(tiny_bundle_dir), "--verify", "quick", "--serial", board.port]
        assert main(common) == 1
        line = controller_line(capsys.readouterr().out)
        assert line.startswith("FAIL") and "drives a differential base (vx and wz only: it drops vy), but --base " \
                                          "omni" in line
        main([*common, "--base", "diff"])
        line = controller_line(capsys.readouterr().out)
        assert line.startswith("OK") and "2 wheels, differential base" in line
    finally:
        board.stop()


def test_preflight_fails_on_a_port_a_drive_holds_naming_it(omni_board):
    # Issue 29, item 7: a pre-flight while a drive runs used to command the same board
    drive = SerialMotorController(omni_board.port).connect()
    try:
        status, msg = check_controller(omni_board.port)
        assert status == "FAIL" and f"serial port {omni_board.port} is in use by pid {os.getpid()}" in msg
        assert drive.send_velocity(0.1, 0.0, 0.0).acknowledged
    finally:
        drive.disconnect()
    assert check_controller(omni_board.port)[0] == "OK"


def test_preflight_warns_about_a_controller_driven_unverified(tmp_path):
    board = InfoWithoutBaseKind(link=tmp_path / "motor").start()  # an INFO from before the base kind
    try:
        status, msg = check_controller(board.port, base="omni")
        assert status == "FAIL" and "does not report its base kind" in msg and "--allow-unverified-controller" in msg
        status, msg = check_controller(board.port, base="omni", allow_unverified=True)
        assert status == "WARN" and msg.endswith("(NOT verified: --allow-unverified-controller)"), msg
    finally:
        board.stop()
