"""A user's motor class as `--motor tests.runtime.motors.vendor_motor:RecordingMotor` loads it: built with no
arguments, configured by the environment (RECORDING_MOTOR_LOG: a JSON-lines file of every call)."""

import json
import os
import time

from runtime.hardware import MotorController, SentCommand


class RecordingMotor(MotorController):
    name = "recording"

    def __init__(self):
        self.path = os.environ["RECORDING_MOTOR_LOG"]
        self._file = None

    def _write(self, call, *args):
        self._file.write(json.dumps({"call": call, "args": list(args), "t": time.monotonic()}) + "\n")
        self._file.flush()

    def connect(self):
        self._file = open(self.path, "a")
        self._write("connect")
        return self

    def disconnect(self):
        if self._file is not None:
            self.stop()
            self._write("disconnect")
            self._file.close()
            self._file = None

    @property
    def is_connected(self):
        return self._file is not None

    def send_velocity(self, vx, vy, wz=0.0):
        if self._file is None:
            return SentCommand((0.0, 0.0, 0.0), sent=False)
        self._write("send_velocity", vx, vy, wz)
        return SentCommand((float(vx), float(vy), float(wz)), sent=True, acknowledged=None)

    def stop(self):
        self._write("stop")
        return True


class NotAMotor:
    """Has the methods but not the contract: refused by --motor."""

    def connect(self):
        return self


class FailingMotor(RecordingMotor):
    def connect(self):
        raise OSError(5, "Input/output error", "/dev/ttyACM0")
