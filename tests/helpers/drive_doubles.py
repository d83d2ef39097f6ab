"""Stand-ins for the drive loop's policy and motor in tests that drive `runtime.drive.DriveLoop` in-process.

    from tests.helpers.drive_doubles import RecordingDryRun, ScriptedPolicy
    loop = DriveLoop(ScriptedPolicy(latency=0.02), camera, RecordingDryRun(), gate, config)
    loop.run(); spans = loop.motor.moves()  # {velocity: (first, last time sent)}

ScriptedPolicy offers what the loop calls on runtime.policy.onboard.Policy (infer, reset); RecordingDryRun is the
real dry-run motor that also notes when each command went out; PacedCamera hands out frames at a rate and stalls
on request.
"""

import math
import threading
import time

import numpy as np

from runtime.hardware import Camera, CameraStalled, Frame
from runtime.motors.dry_run import DryRunMotor


class ScriptedPolicy:
    """A policy whose step k returns a distinct action (0.05 (k + 1), 0), after `latency` seconds."""

    def __init__(self, latency=0.0):
        self.latency, self.calls, self.returned = latency, 0, threading.Condition()
        self.resets = 0

    def reset(self):  # a policy's other method (runtime.policy.onboard.Policy): the drive resets it after a fault
        self.resets += 1

    def infer(self, image):
        from runtime.policy.onboard import PolicyStep

        time.sleep(self.latency)
        action = np.array([0.05 * (self.calls + 1), 0.0], np.float32)
        with self.returned:
            self.calls += 1
            self.returned.notify_all()
        return PolicyStep(action=action, chunk=action[None], normalized_chunk=action[None], timings={})


class RecordingDryRun(DryRunMotor):
    """The dry-run motor, recording when each command went out."""

    def __init__(self):
        super().__init__()
        self.times = []
        self.connect()

    def send_velocity(self, vx, vy, wz=0.0):
        result = super().send_velocity(vx, vy, wz)
        self.times.append((time.monotonic(), (float(vx), float(vy), float(wz))))
        return result

    def moves(self):
        """{velocity: (first time, last time)} of every non-zero command."""
        spans = {}
        for t, v in self.times:
            if any(v):
                first, _ = spans.get(v, (t, t))
                spans[v] = (first, t)
        return spans


class PacedCamera(Camera):
    """Frames of a replay at `fps`, stamped when handed out; `stall(seconds)` makes it deliver nothing."""

    def __init__(self, source, fps=20.0):
        self.source, self.period = source, 1.0 / fps
        self.next_at = 0.0
        self.stall_from = self.stall_until = math.inf
        self.index = 0

    def stall(self, seconds):
        self.stall_from = time.monotonic()
        self.stall_until = self.stall_from + seconds

    def read(self, timeout=0.5):
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            due = max(self.next_at, self.stall_until if now >= self.stall_from else 0.0)
            if now >= due:
                break
            if now >= deadline:
                raise CameraStalled(f"no frame for {timeout} s")
            time.sleep(min(due, deadline) - now)
        self.next_at = time.monotonic() + self.period
        image = self.source[self.index % len(self.source)]
        self.index += 1
        return Frame(image, time.monotonic(), self.index)

    def disconnect(self):
        pass
