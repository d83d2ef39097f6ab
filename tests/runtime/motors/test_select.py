"""`--motor`: a user's class (module:Class or entry point) drives in a real `python -m runtime.drive` process;
the heading-and-throttle example of docs/motors.md runs as written; bad choices are named."""

import json
import math
import re
import sys

import numpy as np
import pytest

from runtime.motors.select import MotorSpec, load_motor_class, motor_kind
from runtime.motors.serial_link import MotorError
from tests.helpers.policy import offline_moves
from tests.helpers.processes import ROOT, run_drive, run_python

STEP_ARGS = ["--mode", "step", "--step-duration", "0.02", "--rate", "100", "--max-accel", "inf", "inf", "inf",
             "--quiet"]


@pytest.fixture(scope="module")
def expected_moves(tiny_bundle_dir, episode_file):
    """The policy's actions on the episode's frames, through the default speed limits (0.5, 0.5, 1.0)."""
    return offline_moves(tiny_bundle_dir, episode_file, 12)


def drive_steps(tiny_bundle_dir, episode_file, *args, env=None):
    return run_drive("--bundle", str(tiny_bundle_dir), "--camera", str(episode_file), *STEP_ARGS, *args, env=env)


def distinct_moves(velocities):
    moves = [tuple(v) for v in velocities if any(v)]
    return [v for i, v in enumerate(moves) if i == 0 or v != moves[i - 1]]


def recorded_calls(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_recording(calls, expected_moves):
    names = [c["call"] for c in calls]
    assert names[0] == "connect" and names[-1] == "disconnect"
    sends = [c["args"] for c in calls if c["call"] == "send_velocity"]
    np.testing.assert_allclose(np.array(distinct_moves(sends)), expected_moves, atol=1e-6)
    # ends at zero: the drive's shutdown stop, then disconnect's own stop
    assert sends[-1] == [0.0, 0.0, 0.0] and names[-3:] == ["stop", "stop", "disconnect"]


def test_a_class_named_module_colon_class_receives_the_commands(tiny_bundle_dir, episode_file, expected_moves,
                                                                tmp_path):
    log = tmp_path / "calls.jsonl"
    proc = drive_steps(tiny_bundle_dir, episode_file, "--motor", "tests.runtime.motors.vendor_motor:RecordingMotor",
                     "--log", str(tmp_path / "drive.jsonl"), env={"RECORDING_MOTOR_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    assert "motor recording" in proc.stderr and "stopped after 12 steps" in proc.stderr
    check_recording(recorded_calls(log), expected_moves)
    steps = [json.loads(line) for line in (tmp_path / "drive.jsonl").read_text().splitlines()
             if '"step"' in line]
    assert all(r["sent"] is True and r["acknowledged"] is None for r in steps)


def test_an_entry_point_in_group_mobile_vla_motors_is_found_by_name(tiny_bundle_dir, episode_file, expected_moves,
                                                                    tmp_path):
    """An installed package's entry point, as importlib.metadata finds it: a dist-info folder on sys.path."""
    site = tmp_path / "site"
    dist = site / "acme_base-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-base\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mobile_vla.motors]\nacme = tests.runtime.motors.vendor_motor:RecordingMotor\n")
    log = tmp_path / "calls.jsonl"
    proc = drive_steps(tiny_bundle_dir, episode_file, "--motor", "acme",
                     env={"RECORDING_MOTOR_LOG": str(log), "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    check_recording(recorded_calls(log), expected_moves)


FAKE_VENDOR = '''
"""Stand-in for a vendor's library: records each call to VENDOR_LOG."""
import json, os

class Base:
    def __init__(self, port):
        self.file = open(os.environ["VENDOR_LOG"], "a")
        self._write("open", port)

    def _write(self, *call):
        self.file.write(json.dumps(call) + "\\n")
        self.file.flush()

    def move(self, heading_deg, throttle_pct):
        self._write("move", heading_deg, throttle_pct)

    def spin(self, pct):
        self._write("spin", pct)

    def close(self):
        self._write("close")
        self.file.close()
'''


def docs_example() -> str:
    text = (ROOT / "docs" / "motors.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = [b for b in blocks if "class HeadingThrottleMotor(MotorController)" in b]
    assert len(example) == 1, "docs/motors.md must hold one complete HeadingThrottleMotor example"
    return example[0]


def test_the_heading_and_throttle_example_in_the_docs_drives(tiny_bundle_dir, episode_file, expected_moves,
                                                             tmp_path):
    (tmp_path / "heading_motor.py").write_text(docs_example())
    (tmp_path / "vendor_base.py").write_text(FAKE_VENDOR)
    log = tmp_path / "vendor.jsonl"
    proc = drive_steps(tiny_bundle_dir, episode_file, "--motor", "heading_motor:HeadingThrottleMotor",
                     env={"PYTHONPATH": str(tmp_path), "VENDOR_LOG": str(log), "MOBILE_VLA_BASE_PORT": "/dev/ttyACM7",
                          "MOBILE_VLA_BASE_MAX_SPEED": "0.5"})
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == ["open", "/dev/ttyACM7"] and calls[-1] == ["close"]
    moves = [c[1:] for c in calls if c[0] == "move"]
    spins = [c[1] for c in calls if c[0] == "spin"]
    assert len(spins) == len(moves) and set(spins) == {0}  # 2-DOF policy: no rotation
    distinct = [m for i, m in enumerate(moves) if m[1] and (i == 0 or m != moves[i - 1])]
    want = [[math.degrees(math.atan2(vy, vx)) % 360, round(100 * min(math.hypot(vx, vy), 0.5) / 0.5)]
            for vx, vy, _ in expected_moves]
    assert len(distinct) == 12
    np.testing.assert_allclose(np.array(distinct), np.array(want), atol=1e-3)
    assert moves[-1] == [0.0, 0]  # ends stopped


def test_the_docs_example_never_reports_zero_while_its_base_moves(tmp_path, monkeypatch):
    """A move that went out and a spin that failed: the example stops the move and says what the base does
    (the old example reported a zero, not sent, while the base drove on)."""
    import importlib
    import types

    calls = []

    class Base:
        def __init__(self, port):
            pass

        def move(self, heading, throttle):
            calls.append(("move", heading, throttle))

        def spin(self, pct):
            calls.append(("spin", pct))
            if pct:
                raise OSError("spin: I/O error")

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "vendor_base", types.SimpleNamespace(Base=Base))
    (tmp_path / "heading_motor_example.py").write_text(docs_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    motor = importlib.import_module("heading_motor_example").HeadingThrottleMotor().connect()
    assert motor.send_velocity(0.25, 0.0, 0.0).velocity == pytest.approx((0.25, 0.0, 0.0))
    result = motor.send_velocity(0.25, 0.0, 0.5)  # the spin fails
    assert calls[-3:] == [("move", 0.0, 50), ("spin", 50), ("move", 0.0, 0)]  # stopped at once
    assert result.sent and result.acknowledged is False and result.velocity == (0.0, 0.0, 0.0)
    assert not result.delivered


@pytest.mark.parametrize("spec, message", [
    ("tests.runtime.no_such_module:Motor", r"cannot import tests\.runtime\.no_such_module"),
    ("tests.runtime.motors.vendor_motor:Missing", r"vendor_motor \(.*vendor_motor\.py\) has no Missing"),
    ("tests.runtime.motors.vendor_motor:NotAMotor", r"is not a subclass of runtime\.hardware\.MotorController"),
    ("nonesuch", r"not one of serial, dry-run, ros2.*no entry point of that name in group mobile_vla\.motors"),
])
def test_bad_motor_classes_are_named(spec, message):
    with pytest.raises(MotorError, match=message):
        load_motor_class(spec)


def test_a_class_that_fails_to_connect_ends_the_drive_before_anything_moves(tiny_bundle_dir, episode_file,
                                                                            tmp_path):
    proc = drive_steps(tiny_bundle_dir, episode_file, "--motor", "tests.runtime.motors.vendor_motor:FailingMotor",
                     env={"RECORDING_MOTOR_LOG": str(tmp_path / "calls.jsonl")})
    assert proc.returncode == 1
    assert ("--motor tests.runtime.motors.vendor_motor:FailingMotor: FailingMotor() failed to connect: OSError"
            in proc.stderr)


@pytest.mark.parametrize("args, kind", [
    (dict(serial="/dev/ttyUSB0"), "serial"),
    (dict(motor="serial", serial="/dev/ttyUSB0"), "serial"),
    (dict(dry_run=True), "dry-run"),
    (dict(motor="ros2"), "ros2"),
    (dict(motor="pkg.mod:Cls"), "pkg.mod:Cls"),
])
def test_motor_kind_keeps_the_old_spellings(args, kind):
    assert motor_kind(MotorSpec(**args)) == kind


@pytest.mark.parametrize("args, message", [
    (dict(), "no motor side chosen"),
    (dict(motor="serial"), "--motor serial needs --serial PORT"),
    (dict(motor="ros2", serial="/dev/ttyUSB0"), "--serial /dev/ttyUSB0 is for --motor serial"),
    (dict(motor="ros2", dry_run=True), "--dry-run and --motor ros2"),
])
def test_contradicting_motor_options_are_refused(args, message):
    with pytest.raises(MotorError, match=re.escape(message)):
        motor_kind(MotorSpec(**args))


def test_a_controller_that_never_answers_is_refused_unless_allowed(tmp_path, caplog, monkeypatch):
    """A pty nobody serves (wrong port, no firmware): refused, naming the port and the flag (issue 29, item 6;
    until then the drive got a motor anyway). With --allow-unverified-controller it is driven, and a warning says
    why every command will be unacknowledged."""
    import argparse
    import functools
    import logging
    import os

    from runtime.motors import select
    from runtime.motors.select import add_motor_arguments, open_motor
    from runtime.motors.serial_controller import ControllerUnverified, SerialMotorController

    # the drive waits 2.5 s for an answer that never comes; 0.3 s here, twice
    monkeypatch.setattr(select, "SerialMotorController", functools.partial(SerialMotorController, ready_timeout_s=0.3))
    master, slave = os.openpty()
    port = os.ttyname(slave)
    ap = argparse.ArgumentParser()
    add_motor_arguments(ap)
    try:
        with pytest.raises(ControllerUnverified, match=rf"{port}: refused: .*did not answer within 0.3 s.*"
                                                       r"--allow-unverified-controller drives it unchecked"):
            open_motor(MotorSpec.from_args(ap.parse_args(["--serial", port])), watchdog_s=0.5)
        spec = MotorSpec.from_args(ap.parse_args(["--serial", port, "--allow-unverified-controller"]))
        assert spec.allow_unverified_controller
        with caplog.at_level(logging.WARNING):
            motor = open_motor(spec, watchdog_s=0.5)
        try:
            assert motor.is_connected and not motor.ready and not motor.verified
        finally:
            motor.disconnect()
    finally:
        os.close(master)
        os.close(slave)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith(f"{port}: the motor controller did not answer") and "docs/firmware.md" in w
               for w in warnings), warnings


def test_open_motor_checks_the_drives_base_against_the_board(make_controller):
    from runtime.motors.kinematics import make_base
    from runtime.motors.select import open_motor
    from runtime.motors.serial_controller import ControllerMismatch

    board = make_controller(base=make_base("differential"))
    with pytest.raises(ControllerMismatch, match="differential base .* but --base omni"):
        open_motor(MotorSpec(serial=board.port), base="omni")
    motor = open_motor(MotorSpec(serial=board.port), base="diff")
    assert motor.verified
    motor.disconnect()


def test_preflight_checks_a_vendor_motor_side_as_the_drive_would_open_it(tiny_bundle_dir, tmp_path):
    log = tmp_path / "calls.jsonl"
    proc = run_python("-m", "runtime.preflight", "--bundle", str(tiny_bundle_dir), "--verify", "quick",
                      "--motor", "tests.runtime.motors.vendor_motor:RecordingMotor",
                      env={"RECORDING_MOTOR_LOG": str(log)}, timeout=120)
    line = next(ln for ln in proc.stdout.splitlines() if " controller " in ln)
    assert line.startswith("OK") and "a zero went out" in line, proc.stdout + proc.stderr
    calls = [json.loads(ln)["call"] for ln in log.read_text().splitlines()]
    assert calls[0] == "connect" and "send_velocity" in calls and calls[-1] == "disconnect"
    bad = run_python("-m", "runtime.preflight", "--bundle", str(tiny_bundle_dir), "--verify", "quick",
                     "--motor", "tests.runtime.motors.vendor_motor:NoSuchClass", timeout=120)
    assert bad.returncode == 1 and any(ln.startswith("FAIL controller") for ln in bad.stdout.splitlines())
