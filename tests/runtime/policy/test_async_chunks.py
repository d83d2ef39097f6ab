"""Asynchronous chunks: the schedule on the time axis, and the drive loop playing chunks while inferring."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from runtime.control.config import DriveConfig
from runtime.control.loop import DriveLoop
from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.hardware import Camera, CameraStalled, Frame
from runtime.policy.async_chunks import AsyncChunks, AsyncConfig, ChunkSchedule
from tests.helpers.drive_doubles import RecordingDryRun

LIMITS = SafetyConfig(max_speed=(5.0, 5.0, 5.0), max_accel=(math.inf,) * 3, dead_zone=0.0)
SLACK = 0.08  # thread scheduling on a loaded CI machine (as tests/runtime/control/test_loop_faults.py)


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
    """Frames stamped when they are read (a live camera), `frames` of them, then the stream ends; `stall(seconds)`
    makes it deliver nothing for that long (a read waits `timeout`, then CameraStalled)."""

    def __init__(self, frames: int):
        self.frames, self.count, self.stamps = frames, 0, []
        self.stall_from = self.stall_until = math.inf

    def stall(self, seconds):
        self.stall_from = time.monotonic()
        self.stall_until = self.stall_from + seconds

    def read(self, timeout=0.5):
        from runtime.hardware import EndOfStream

        now = time.monotonic()
        if self.stall_from <= now < self.stall_until:
            time.sleep(max(min(self.stall_until, now + timeout) - now, 0.0))
            if time.monotonic() < self.stall_until:
                raise CameraStalled(f"no frame for {timeout} s")
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
        self.resets = 0

    def reset(self):  # the drive resets the behaviours after a fault
        self.resets += 1

    def infer(self, image):
        from runtime.policy.onboard import PolicyStep

        self.calls += 1
        time.sleep(self.hang if self.calls == self.hang_at else self.latency)
        chunk = np.stack([[0.1 * self.calls, 0.01 * i + 0.001] for i in range(self.n)]).astype(np.float32)
        return PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=chunk, timings={})


def test_the_drive_plays_chunks_at_the_control_rate_while_inference_takes_longer_than_a_period():
    """Inference takes 0.15 s, actions last 0.1 s, the loop ticks at 50 Hz: once the first chunk landed, every tick
    sends a moving command (no wait for inference) and the actions already past at landing are skipped. Then one
    inference hangs for 1.5 s: with a --cmd-timeout longer than a chunk, the motors go to zero when the last chunk
    runs out (8 x 0.1 s after its frame)."""
    policy, motor = SlowChunkPolicy(latency=0.15, hang_at=6, hang=1.5), RecordingDryRun()
    chunks = AsyncChunks(ChunkSchedule(AsyncConfig(action_period=0.1, blend=0.0), chunk_len=8))
    cfg = DriveConfig(rate=50.0, cmd_timeout=1.0, max_steps=6, status=False)
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


def test_an_inference_hang_zeroes_at_the_plans_capture_plus_cmd_timeout_not_at_the_chunks_end():
    """--async with chunks of 8 x 0.1 s and --cmd-timeout 0.5 s: the 6th inference hangs for 1.5 s. The plan in
    force (the 5th frame's) is never played once its frame is older than the replan age (one action period) plus
    --cmd-timeout, though it covers 0.8 s: zero within that plus one control period ("plan too old"), then
    "command timeout" (inference stalled) once the hung frame itself is 0.5 s old; the hung chunk, 1.5 s old when
    it lands, is never played."""
    rate, timeout = 50.0, 0.5
    policy, motor = SlowChunkPolicy(latency=0.15, hang_at=6, hang=1.5), RecordingDryRun()
    chunks = AsyncChunks(ChunkSchedule(AsyncConfig(action_period=0.1, blend=0.0), chunk_len=8))
    camera = LiveCamera(frames=100)
    loop = DriveLoop(policy, camera, motor, SafetyGate(LIMITS),
                     DriveConfig(rate=rate, cmd_timeout=timeout, max_steps=6, status=False), printer=lambda s: None,
                     chunks=chunks)
    assert loop.run() == 0 and policy.calls == 6
    planned, hung = camera.stamps[4], camera.stamps[5]  # the plan in force when inference hung, the hung frame
    assert any(any(v) for t, v in motor.times if planned < t < hung)  # the 5th frame's plan was playing
    zero_at = next(t for t, v in motor.times if t > hung and not any(v))
    assert chunks.max_plan_age(timeout) == pytest.approx(0.1 + timeout)
    assert zero_at - planned <= 0.1 + timeout + 1 / rate + SLACK, "the plan played past its age limit"
    assert zero_at - planned < 0.8 - 0.1  # not when the chunk ran out
    assert not any(any(v) for t, v in motor.times if t >= zero_at), "a move after the zero: a stale plan played"
    reasons = [(t, r) for t, r in loop.health.zero_events if t >= zero_at - 1e-3]
    assert reasons[0][1] == "plan too old"
    stalled_at = next(t for t, r in reasons if r == "command timeout")
    assert stalled_at - hung <= timeout + 1 / rate + SLACK


def test_a_healthy_slow_inference_never_zeroes_between_chunks_at_the_defaults():
    """A remote policy taking 0.2 s, the default 0.4 s action period and 0.5 s --cmd-timeout: the plan in force
    is up to 0.6 s old when the next lands, by design (a chunk runs ahead of its frame). No zero between the first
    landing and the last chunk's end: an age limit of --cmd-timeout alone zeroed 0.1 s of every 0.4 s here."""
    policy, motor = SlowChunkPolicy(latency=0.2, n=10), RecordingDryRun()
    chunks = AsyncChunks(ChunkSchedule(AsyncConfig(), chunk_len=10))
    assert chunks.schedule.config.action_period == 0.4 and DriveConfig().cmd_timeout == 0.5  # the defaults
    camera = LiveCamera(frames=8)
    loop = DriveLoop(policy, camera, motor, SafetyGate(LIMITS),
                     DriveConfig(rate=20.0, max_steps=8, status=False), printer=lambda s: None, chunks=chunks)
    assert loop.run() == 0 and policy.calls == 8
    start = next(t for t, v in motor.times if any(v))
    last_landing = camera.stamps[-1] + 0.2
    between = [v for t, v in motor.times if start <= t <= last_landing]
    assert len(between) > 40 and all(any(v) for v in between), "a zero while a healthy plan covered the present"
    assert not [r for _, r in loop.health.zero_events if r in ("plan too old", "command timeout")]


class IdChunkPolicy:
    """Chunk k (the k-th inference, from 1) has actions (k, i + 1) for i = 0..n-1: integers, exact in float32 and
    through the gate, so a sent command names its chunk, and a cross-fade of two chunks falls between their ids.
    `frames` holds (capture time, k) of every inference."""

    def __init__(self, latency: float = 0.03, n: int = 20):
        self.latency, self.n, self.calls, self.frames, self.resets = latency, n, 0, [], 0

    def reset(self):
        self.resets += 1

    def infer(self, frame):
        from runtime.policy.onboard import PolicyStep

        self.calls += 1
        self.frames.append((frame.stamp, self.calls))
        time.sleep(self.latency)
        chunk = np.array([[self.calls, i + 1] for i in range(self.n)], np.float32)
        return PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=chunk, timings={})


class PluggableDryRun(RecordingDryRun):
    """The dry-run motor with a cable: unplugged, nothing goes out (sent=False); plugged back, one reconnect."""

    def unplug(self):
        self._connected = False

    def replug(self):
        self._connected = True
        self.reconnects += 1


@pytest.mark.parametrize("fault, threshold", [("camera stall", 19), ("link down", 2)])
def test_no_chunk_planned_before_a_fault_is_played_or_blended_after_it(fault, threshold):
    """--async, chunks of 20 x 0.1 s (each covers 2 s), a 0.3 s cross-fade and a --cmd-timeout (3 s) too long to
    hide anything: a camera stall (1 s; a frame asked every 0.1 s, so the stall is seen) or an unplugged motor link
    (0.3 s; replanned only when 2 actions are left, so one plan lives 1.7 s) while a chunk plays. The loop's reset
    forgets the chunks: after the fault every move comes from a chunk planned from a frame captured after the
    fault began, alone or cross-faded with another such chunk. The old loop kept the pre-fault plan: after a
    stall it was cross-faded into the new chunk, after a reconnect it played on."""
    policy = IdChunkPolicy(latency=0.03, n=20)
    motor = PluggableDryRun()
    camera = LiveCamera(frames=10**6)
    chunks = AsyncChunks(ChunkSchedule(AsyncConfig(action_period=0.1, threshold=threshold, blend=0.3), chunk_len=20))
    limits = SafetyConfig(max_speed=(1000.0,) * 3, max_accel=(math.inf,) * 3, dead_zone=0.0)
    loop = DriveLoop(policy, camera, motor, SafetyGate(limits),
                     DriveConfig(rate=50.0, cmd_timeout=3.0, camera_timeout=0.3, status=False),
                     printer=lambda s: None, chunks=chunks)
    window = {}

    def inject():
        while not any(any(v) for _, v in list(motor.times)):
            time.sleep(0.005)
        time.sleep(0.3)  # the first chunk is playing
        window["start"] = time.monotonic()
        if fault == "camera stall":
            camera.stall(1.0)
            time.sleep(1.0)
        else:
            motor.unplug()
            time.sleep(0.3)
            motor.replug()
        window["end"] = time.monotonic()
        time.sleep(2.5)
        loop.request_stop("test over")

    threading.Thread(target=inject, daemon=True).start()
    assert loop.run() == 0
    start, end = window["start"], window["end"]
    pre = {k for stamp, k in policy.frames if stamp < start}
    post = {k for stamp, k in policy.frames if stamp >= start}
    assert pre and post and max(pre) < min(post)
    moving = [(t, v) for t, v in motor.times if any(v)]
    # the comparison is not vacuous: commands before the fault lie within the pre-fault chunks' ids, and name one
    # exactly where no cross-fade is under way
    before = [v for t, v in moving if t < start]
    assert before and all(min(pre) <= v[0] <= max(pre) for v in before) and any(v[0] in pre for v in before)
    after = [(t, v) for t, v in moving if t > end]
    assert after, "the robot moved again after the fault"
    for t, v in after:  # a pre-fault chunk, alone or cross-faded, puts vx below the first post-fault chunk's id
        assert v[0] >= min(post), (t - end, v, sorted(pre), sorted(post))
    assert any(v[0] in post for _, v in after)
    assert policy.resets >= 1 and loop.health.resets >= 1
