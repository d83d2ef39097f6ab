"""The two hardware seams: every implementation is a Camera or a MotorController, and says what it did."""

import numpy as np
import pytest

from runtime.cameras.live import LiveCamera
from runtime.cameras.replay import ReplaySource
from runtime.cameras.select import open_camera
from runtime.hardware import Camera, CameraError, DeviceError, MotorController, SentCommand
from runtime.motors.dry_run import DryRunMotor


def test_sources_are_cameras_and_their_errors_are_device_errors(episode_file, tmp_path):
    assert issubclass(LiveCamera, Camera) and issubclass(ReplaySource, Camera)
    with open_camera(str(episode_file)) as cam:
        assert isinstance(cam, Camera)
        frame = cam.read()
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.index == 0
    with pytest.raises(DeviceError, match="episode file not found"):
        open_camera(str(tmp_path / "missing.h5"))
    assert issubclass(CameraError, DeviceError)


def test_ros2_classes_implement_the_seams_without_importing_rclpy():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import sys; from runtime.cameras.ros2 import Ros2Camera; "
            "from runtime.motors.ros2 import Ros2MotorController; "
            "from runtime.hardware import Camera, MotorController; "
            "assert issubclass(Ros2Camera, Camera) and issubclass(Ros2MotorController, MotorController); "
            "assert 'rclpy' not in sys.modules, 'rclpy imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_dry_run_motor_is_as_strict_as_a_link():
    motor = DryRunMotor()
    assert isinstance(motor, MotorController) and not motor.is_connected
    assert motor.send_velocity(0.1, 0.0, 0.0) == SentCommand((0.0, 0.0, 0.0), sent=False)  # not connected
    with motor:
        result = motor.send_velocity(0.1, -0.2, 0.3)
        assert result == SentCommand((0.1, -0.2, 0.3), sent=True, acknowledged=None) and result.delivered
        assert motor.last_sent == (0.1, -0.2, 0.3)
    assert not motor.is_connected and motor.sent[-1] == (0.0, 0.0, 0.0)  # leaving the context stopped it


def test_sent_command_delivered_means_sent_and_not_refused():
    assert SentCommand((0.1, 0, 0), sent=True, acknowledged=True).delivered
    assert SentCommand((0.1, 0, 0), sent=True, acknowledged=None).delivered  # a link without acks
    assert not SentCommand((0.1, 0, 0), sent=True, acknowledged=False).delivered
    assert not SentCommand((0.0, 0, 0), sent=False).delivered
