"""Pre-flight against the C controller on a pty: what the board reports is checked against the drive's settings."""

import pytest

from runtime.preflight import check_controller, main
from tests.fakes.firmware import FirmwareController


@pytest.fixture
def omni_board(firmware_bin, tmp_path):
    board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / "motor",
                               args=["--base", "omni3", "--max-linear", "1"]).start()
    yield board
    board.stop()


def test_preflight_reports_the_controllers_wheel_count_and_limits(omni_board):
    status, msg = check_controller(omni_board.port, wheels="omni3", max_speed=(0.5, 0.5, 1.0))
    assert status == "OK", msg
    assert "protocol 1, 3 wheels, limits 1 m/s, 6 rad/s, 100 rad/s per wheel" in msg


def test_preflight_fails_a_wheel_count_mismatch_naming_both(omni_board, tiny_bundle_dir, capsys):
    code = main(["--bundle", str(tiny_bundle_dir), "--verify", "quick", "--serial", omni_board.port,
                 "--wheels", "mecanum", "--max-speed", "1.5", "0.5", "1"])
    out = capsys.readouterr().out
    assert code == 1
    line = next(x for x in out.splitlines() if "controller" in x.split()[1:2])
    assert line.startswith("FAIL")
    assert "reports 3 wheels, but --wheels mecanum sends 4 wheel speeds" in line
    assert "--max-speed vx 1.5 m/s is above the controller's limit 1 m/s" in line
