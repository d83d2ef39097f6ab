"""Asynchronous chunks: the schedule on the time axis, and the drive loop playing chunks while inferring."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from runtime.async_chunks import AsyncChunks, AsyncConfig, ChunkSchedule
from runtime.drive import DriveConfig, DriveLoop
from runtime.hardware import Camera, Frame
from runtime.safety import SafetyConfig, SafetyGate
from tests.runtime.test_drive import RecordingDryRun

LIMITS = SafetyConfig(max_speed=(5.0, 5.0, 5.0), max_accel=(math.inf,) * 3, dead_zone=0.0)


def ramp(n: int, base: float = 0.0) -> np.ndarray:
    """Chunk whose action k is (base + k, -k): easy to tell which action played."""
    return np.stack([np.array([base + k, -k], np.float32) for k in range(n)])


def test_actions_are_aligned_by_capture_time_and_the_passed_ones_skipped():
    s = ChunkSchedule(AsyncConfig(action_period=0.1, blend=0.0), chunk_len=5)
    assert s.action_at(0.0) is None and s.needs_inference(0.0)
    assert s.land(ramp(5), captured=1.0, now=1.25) == 2  # 0.25 s of inference: actions 0 and 1 are the past
    assert np.array_equal(s.action_at(1.25), [2, -2])
    assert np.array_equal(s.action_at(1.49), [4, -4])
    assert s.action_at(1.5) is None  # the plan ran out: nothing covers the present -> the loop zeroes


def test_a_new_chunk_is_cross_faded_into_the_old_one():
    s = ChunkSchedule(AsyncConfig(action_period=0.1, blend=0.1), chunk_len=5)
    s.land(ramp(5, base=0.0), captured=0.0, now=0.0)
    s.land(ramp(5, base=10.0), captured=0.2, now=0.3)  # new plan index 1 at 0.3, old plan index 3
    np.testing.assert_allclose(s.action_at(0.3), [3, -3])  # weight 0 on the new plan at the switch
    np.testing.assert_allclose(s.action_at(0.35), [0.5 * 3 + 0.5 * 11, -3 * 0.5 - 1 * 0.5])
    np.testing.assert_allclose(s.action_at(0.42), [12, -2])  # after the blend: the new plan alone


def test_inference_is_asked_when_the_actions_left_reach_the_threshold_at_most_once_a_period():
    s = ChunkSchedule(AsyncConfig(action_period=0.1, threshold=2), chunk_len=5)
    s.started(0.0)
    assert not s.needs_inference(0.01)  # one in flight
    s.land(ramp(5), captured=0.0, now=0.05)
    assert not s.needs_inference(0.05)  # 4 left ahead
    assert not s.needs_inference(0.15)  # 3 left
    assert s.needs_inference(0.25)  # 2 left
    default = ChunkSchedule(AsyncConfig(action_period=0.1), chunk_len=5)  # threshold N - 1: every period
    default.land(ramp(5), captured=0.0, now=0.03)
    assert not default.needs_inference(0.05) and default.needs_inference(0.1)


def test_discrete_snaps_the_played_action():
    s = ChunkSchedule(AsyncConfig(action_period=0.1, blend=0.0), chunk_len=2, discrete_move=1.15)
    s.land(np.array([[0.7, -0.2], [0.0, 0.0]], np.float32), captured=0.0, now=0.0)
    np.testing.assert_allclose(s.action_at(0.01), [1.15, 0.0])


@pytest.mark.parametrize("threshold", [-1, 5])
def test_a_threshold_outside_the_chunk_is_refused(threshold):
    with pytest.raises(ValueError, match="async-threshold"):
        ChunkSchedule(AsyncConfig(threshold=threshold), chunk_len=5)


class LiveCamera(Camera):
    """Frames stamped when they are read (a live camera), `frames` of them, then the stream ends."""

    def __init__(self, frames: int):
        self.frames, self.count, self.stamps = frames, 0, []

    def read(self, timeout=0.5):
        from runtime.camera import EndOfStream

        if self.count >= self.frames:
            time.sleep(0.05)
            raise EndOfStream("done")
        self.count += 1
        self.stamps.append(time.monotonic())
        return Frame(np.zeros((8, 8, 3), np.uint8), self.stamps[-1], self.count - 1)

    def disconnect(self):
        pass


class SlowChunkPolicy:
    """A policy that takes `latency` s (call `hang_at`: `hang` s); action i of chunk k is (0.1 k, 0.01 i + 0.001)."""

    def __init__(self, latency: float, n: int = 8, hang_at: int = 0, hang: float = 0.0):
        self.latency, self.n, self.hang_at, self.hang, self.calls = latency, n, hang_at, hang, 0

    def infer(self, image):
        from runtime.policy import PolicyStep

        self.calls += 1
        time.sleep(self.hang if self.calls == self.hang_at else self.latency)
        chunk = np.stack([[0.1 * self.calls, 0.01 * i + 0.001] for i in range(self.n)]).astype(np.float32)
        return PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=chunk, timings={})


def test_the_drive_plays_chunks_at_the_control_rate_while_inference_takes_longer_than_a_period():
    """Inference takes 0.15 s, actions last 0.1 s, the loop ticks at 50 Hz: once the first chunk landed, every tick
    sends a moving command (no wait for inference) and the actions already past at landing are skipped. Then one
    inference hangs for 1.5 s: the motors go to zero when the last chunk runs out (8 x 0.1 s after its frame)."""
    policy, motor = SlowChunkPolicy(latency=0.15, hang_at=6, hang=1.5), RecordingDryRun()
    chunks = AsyncChunks(ChunkSchedule(AsyncConfig(action_period=0.1, blend=0.0), chunk_len=8))
    cfg = DriveConfig(rate=50.0, cmd_timeout=0.5, max_steps=6, status=False)
    camera = LiveCamera(frames=100)
    loop = DriveLoop(policy, camera, motor, SafetyGate(LIMITS), cfg, printer=lambda s: None, chunks=chunks)
    assert loop.run() == 0 and policy.calls == 6
    zero_at = next(t for t, reason in loop.health.zero_events if reason == "no chunk covers the present")
    assert zero_at - camera.stamps[4] == pytest.approx(0.8, abs=0.05)  # the 5th frame's plan ran out
    moving = [(t, v) for t, v in motor.times if any(v)]
    start = moving[0][0]
    playing = [(t, v) for t, v in motor.times if start <= t < zero_at - 0.03]
    assert all(any(v) for _, v in playing), "a zero while a chunk covered the present"
    assert np.max(np.diff([t for t, _ in playing])) < 0.045, "the control rate dropped while inferring"
    assert chunks.schedule.skipped >= 5  # each landed 0.15 s after its frame: action 0's time had passed
    assert all(abs(v[1] - 0.001) > 1e-4 for _, v in moving)  # so no chunk's action 0 ever played
