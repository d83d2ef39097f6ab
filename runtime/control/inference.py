"""The drive's inference thread: the newest camera frame -> the policy -> a published plan, with the frame's
capture time; a reset or a new instruction is applied between two frames.

    worker = InferenceWorker(policy, camera, config, authority, publish=..., stop=..., wait_done=...,
                             drained=..., health=...)      # what DriveLoop hands it (runtime/control/loop.py)
    threading.Thread(target=worker.run, name="inference", daemon=True).start()

The control thread (runtime/control/loop.py) alone talks to the motors; this
thread only plans. What it publishes carries the capture time of the frame
the action was planned from (`planned`: an open-loop chunk's tail is as old
as the chunk's frame), so the control thread's watchdog judges the plan, not
the newest frame, and the motion authority's epoch in force at that frame's
capture (runtime/control/authority.py), so a plan from before any event
never moves the robot after it. When the epoch moved since the last frame
this thread resets the behaviours and the ring first (a new episode), and a
frame captured before the new epoch is dropped unseen. A camera stall or a
non-finite action publishes "zero now" and starts a new epoch; a plan that
would already be older than `--cmd-timeout` when published is dropped (and,
for an open-loop chunk, made again).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from runtime.control.authority import MotionAuthority
from runtime.control.config import DriveConfig
from runtime.hardware import CameraStalled, EndOfStream, FrameTooOld

log = logging.getLogger(__name__)
CAMERA_LATE_S = 0.1  # s of waiting for a frame that makes a stale action the camera's fault (3 frames at 30 fps)


@dataclass
class Published:
    action: np.ndarray | None  # robot units, or None = zero now (camera stalled, NaN, ...)
    step: int
    record: dict
    reason: str = ""
    captured: float = -float("inf")  # time.monotonic() at capture of the frame it was computed from
    epoch: int = -1  # the motion authority's epoch at that capture: the plan moves the robot only in it
    seq: int = 0  # publication number: step mode's "done" names the publication that finished


class InferenceWorker:
    """One thread's state: the policy and camera it uses, the frames' capture times, the resets asked for."""

    def __init__(self, policy, camera, config: DriveConfig, authority: MotionAuthority, publish,
                 stop: threading.Event, wait_done, drained, health, chunks=None, takeover=None, retarget=None,
                 status=None, plan_age_limit=float("inf"), rerun=None):
        self.policy, self.camera, self.config, self.authority = policy, camera, config, authority
        self.publish = publish  # callable(Published): hand a plan to the control thread
        self.stop = stop  # set when the drive ends (by either thread)
        self.wait_done = wait_done  # callable(stop) -> bool: step mode, block until the control thread finished a move
        self.drained = drained  # callable(last_step) -> bool: the control thread executed the last step
        self.health = health  # runtime.control.loop_health.LoopHealth: counts the resets
        self.chunks = chunks  # runtime.policy.async_chunks.AsyncChunks in --async; None: one action a frame
        self.takeover = takeover  # runtime.recording.takeover.Takeover: sees every frame (recorded with the command)
        self.retarget = retarget  # callable(instruction) -> a new policy on the same backend, or None
        self.status = status  # runtime.control.status_line.StatusLine: shown timings
        self.plan_age_limit = plan_age_limit  # --async: the oldest a plan's frame may be and the plan still play
        self.rerun = rerun  # runtime.recording.rerun_log.RerunLog (--rerun): the frame, plan and timings, or None
        self.error: BaseException | None = None
        self.steps = 0  # plans published
        self.inferences = 0  # policy runs (the pre-arm check "policy warmed")
        self.dropped_frames = 0  # frames captured before the current epoch, never inferred
        self.ended_by = ""
        self._epoch = authority.epoch  # the epoch this thread's policy state belongs to
        self._instruction: str | None = None  # a new instruction to apply before the next frame
        self._stamps: deque[float] = deque(maxlen=256)  # capture times of the newest frames: a plan's age
        self.inferring: float | None = None  # capture time of the frame being inferred (--async: a stall)
        self.reading_since: float | None = None  # when this thread began waiting for a frame
        self.camera_age = float("nan")  # s between the newest frame's capture and the start of its inference
        self.last_capture = -float("inf")  # capture time of the newest frame read (the pre-arm check "camera")

    def request_reset(self, reason: str) -> None:
        self.authority.fence(reason)

    def set_instruction(self, text: str) -> None:
        self._instruction = text

    def camera_problem(self) -> str:
        """The pre-arm check "camera": "" while the newest frame read is younger than --camera-timeout."""
        age = time.monotonic() - self.last_capture
        return "" if age <= self.config.camera_timeout else (
            "no frame yet" if math.isinf(age) else f"newest frame {age:.2f} s old")

    def policy_problem(self) -> str:
        """The pre-arm check "policy": "" once the policy has run (warmed up)."""
        return "" if self.inferences else "no inference done yet"

    def stale_reason(self, now: float) -> str:
        """Why the plan in force is too old: the camera when this thread has been waiting for a frame longer than
        CAMERA_LATE_S (it raises CameraStalled only after --camera-timeout), else the inference."""
        reading = self.reading_since  # read once: the inference thread may end its wait between two reads
        if reading is not None and now - reading > CAMERA_LATE_S:
            return "camera: no new frame"
        return "command timeout"

    def _start_over(self) -> None:
        """Apply a new instruction asked for since the last frame, and a new epoch: reset the behaviours and the
        ring (a new episode). One integer read: no reset asked for can be lost between two threads."""
        text, self._instruction = self._instruction, None
        if text is not None and self.retarget is not None:
            try:
                self.policy = self.retarget(text)
                log.warning("instruction now %r", text)
                self.request_reset("new instruction")
            except Exception as e:  # a prompt too long, ...: keep driving the old one, say why
                log.error("instruction %r refused: %s", text, e)
        epoch = self.authority.epoch
        if epoch != self._epoch:
            self._epoch = epoch
            self.policy.reset()
            self._stamps.clear()
            self.health.resets += 1
            last = self.authority.history[-1] if self.authority.history else None
            log.info("behaviours and ring reset (epoch %d: %s)", epoch, last.cause if last else "")

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    self.ended_by = "max-steps"
                    self._drain()
                    return
                if self.config.mode == "step" and not self.wait_done(self.stop):
                    return
                if self.chunks is not None and not self.chunks.wait_needed(self.stop, time.monotonic,
                                                                           self.plan_age_limit):
                    return
                self._start_over()
                self.reading_since = time.monotonic()
                try:
                    frame = self.camera.read(timeout=self.config.camera_timeout)
                except EndOfStream:
                    self.ended_by = "end of camera stream"
                    self._drain()
                    return
                except (CameraStalled, FrameTooOld) as e:  # stop now, keep trying; other camera errors end the run
                    self.request_reset("camera stall")
                    self.publish(Published(None, self.steps, {}, f"camera: {e}"))
                    continue
                finally:
                    self.reading_since = None
                self.last_capture = frame.stamp
                if self.authority.epoch_at(frame.stamp) != self._epoch:  # captured before the epoch began
                    self.dropped_frames += 1
                    continue
                self._infer(frame)
        except BaseException as e:  # any exception: the control thread zeroes and stops
            self.error = e
        finally:
            self.stop.set()

    def _infer(self, frame) -> None:
        if self.takeover is not None:
            self.takeover.captured(frame)  # recorded with the command in force, tagged by who drove
        t0 = time.monotonic()
        self.camera_age = t0 - frame.stamp
        # Continuous: the Frame, with its capture time, so the ring keeps the spacing the model was trained at
        # (runtime/policy/onboard.py); step mode: one frame per move is one recorded frame.
        self.inferring = frame.stamp
        out = self.policy.infer(frame if self.config.mode == "continuous" else frame.image)
        t1 = time.monotonic()
        self.inferring = None
        self.inferences += 1
        self._stamps.append(frame.stamp)
        back = int(getattr(out, "planned_steps_ago", 0))
        planned = self._stamps[-1 - back] if back < len(self._stamps) else -float("inf")
        record = {"type": "step", "step": self.steps, "t_capture": frame.stamp, "t_planned": planned,
                  "t_infer_start": t0, "t_action": t1,
                  "timings_ms": {k: round(v * 1e3, 3) for k, v in out.timings.items()},
                  "action": [float(v) for v in out.action], "policy": getattr(self.policy, "source", "")
                  or "onboard"}
        if self.chunks is not None:
            record.update(self.chunks.inferred(out, frame.stamp, time.monotonic()))
        epoch = self._epoch  # the epoch of this frame's capture (checked when it was read)
        if not out.finite:
            self.request_reset("non-finite action")
            self.publish(Published(None, self.steps, record, "non-finite action", planned, epoch))
        elif self.chunks is None and t1 - planned > self.config.cmd_timeout:
            # an open-loop chunk's tail planned before --cmd-timeout: never sent; plan again
            drop_plan = getattr(self.policy, "drop_plan", None)
            if drop_plan is not None:
                drop_plan()
            self.publish(Published(None, self.steps, record, "plan too old", planned, epoch))
        else:
            self.publish(Published(out.action, self.steps, record, "", planned, epoch))
        self.steps += 1
        if self.rerun is not None:  # the frame the policy saw, its plan, the stages' timings (a put, never a wait)
            self.rerun.inferred(frame, out, record)
        if self.status is not None:
            self.status.inferred(time.monotonic(), record["timings_ms"], getattr(self.policy, "source", ""))

    def _drain(self) -> None:
        """At a normal end, let the last action be executed (its whole step in step mode) before stopping."""
        deadline = time.monotonic() + self.config.cmd_timeout + self.config.step_duration
        last = self.steps - 1
        while time.monotonic() < deadline and not self.stop.is_set():
            if last < 0 or self.drained(last):
                return
            time.sleep(0.005)
