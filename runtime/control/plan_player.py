"""The control thread plays the policy's newest plan: while it is fresh and in the current epoch, its step's
move for its `--step-duration`, `--async` chunks at the present; a zero, and why, otherwise.

    player = PlanPlayer(plans, channel, gate, authority, inference, CommandWatchdog(0.5), DriveConfig())
    player.play(now, plans.newest)       # a tick while armed and nobody else drives
    player.hold(now, current, reason)    # a zero while the authority holds the robot: the plan's step logged as held

The drive loop (runtime/control/loop.py) asks it once a tick, after the
motion authority and a person's take-over have had their say. A plan from
before the current epoch never moves the robot. Its age counts from the
capture of the frame it was planned from (`CommandWatchdog`), so a plan from
a stale frame is a zero: a camera that went blind starts a new epoch, a plan
that merely aged out (slow inference) does not. In step mode a move starts
only from a fresh frame and then runs its `--step-duration`, as the
demonstrations' moves did; its end releases the next frame
(runtime/control/plan_handoff.py). Every command goes out through the motor
channel (runtime/control/motor_channel.py): a non-zero one under the
authority's lock, so an authority that changed its mind since the tick's check
still gets a zero.
"""

from __future__ import annotations

import math

from runtime.control.authority import MotionAuthority
from runtime.control.config import DriveConfig
from runtime.control.inference import InferenceWorker, Published
from runtime.control.motor_channel import MotorChannel
from runtime.control.plan_handoff import PlanHandoff
from runtime.control.safety import CommandWatchdog, SafetyGate


class PlanPlayer:
    """What the control thread does with the newest plan: send it (through the channel), or a zero and why."""

    def __init__(self, plans: PlanHandoff, channel: MotorChannel, gate: SafetyGate, authority: MotionAuthority,
                 inference: InferenceWorker, watchdog: CommandWatchdog, config: DriveConfig, chunks=None,
                 plan_age_limit: float = math.inf):
        self.plans, self.channel, self.gate, self.authority = plans, channel, gate, authority
        self.inference = inference  # what it is waiting for (a stale plan's reason), --async: the frame inferred
        self.watchdog = watchdog  # the age of the plan in force; the loop also wakes at its deadline
        self.config = config
        self.chunks = chunks  # runtime.policy.async_chunks.AsyncChunks in --async; None: one action a frame
        self.plan_age_limit = plan_age_limit  # --async: the oldest a plan's frame may be and the plan still play
        self._async_stall: float | None = None  # --async: the stalled frame already fenced for

    def hold(self, now: float, current: Published | None, reason: str) -> None:
        """Zero while the authority holds the robot (or the plan is from an earlier epoch); the plan's step is
        logged once with what really went out and why; step mode: a move not made is over, so the policy keeps
        seeing frames (and stays warm for the pre-arm check)."""
        self.channel.send_zero(now, reason)
        if current is None:
            return
        if current.record and current.step != self.plans.last_logged_step:
            self.plans.log_step(current, self.channel.last_command, held=reason)
        self.plans.done(current)

    def play(self, now: float, current: Published | None) -> None:
        """One tick while armed and nobody else drives."""
        if self.chunks is not None and current is not None and current.action is not None:
            self._play_chunk(now, current)
            return
        if current is None:
            self.channel.send_zero(now, "no action yet")
            return
        if current.action is None:
            self.channel.send_zero(now, current.reason)
            self.plans.done(current)
            return
        if current.epoch != self.authority.epoch:
            self.hold(now, current, "plan from before " + self.authority.history[-1].cause
                      if self.authority.history else "plan from an earlier epoch")
            return
        progress = self.plans.follow(current)
        first_send = not progress.logged
        if first_send:
            # Age counts from the capture of the frame the action was planned from, not from when it was
            # published: an action computed from an old frame describes a world that has moved on.
            self.watchdog.feed(current.captured)
        if progress.started is None:
            progress.started = now  # a step's clock starts at its first send
        if self.config.mode == "step" and (progress.finished or now - progress.started >= self.config.step_duration):
            self.channel.send_zero(now, "step done")
            progress.finished = True
            self.plans.done(current)  # the inference thread may take the next frame
            return
        if not self.watchdog.fresh(now):
            reason = self.inference.stale_reason(now)
            if reason.startswith("camera"):
                # The robot went blind: no plan from before it moves the robot again. A plan merely aged out
                # (slow inference) is a zero, not a fence: the next plan, if fresh, is a fresh view of the world.
                self.authority.fence(reason)
            self.channel.send_zero(now, reason)
            return
        if first_send and self.config.mode == "step":
            # A move whose frame was fresh when it started runs its recorded --step-duration (the
            # demonstrations' 0.4 s key presses) instead of being cut at capture + --cmd-timeout; a stale
            # frame still never starts one, and the move stays bounded by its own clock and the timeout.
            self.watchdog.feed(now)
        self._execute(now, current, self.gate.filter(current.action, now), current.epoch, first_send)
        if first_send:
            progress.logged = True

    def _execute(self, now: float, current: Published, command, plan_epoch: int, log_step: bool) -> None:
        """Send a policy's command under the authority, with the state it leaves and the step's log line."""
        result = self.channel.send_plan(command, now, plan_epoch)
        if result is None:  # the authority changed its mind between the tick's check and the send
            self.hold(now, current, self.authority.describe())
            return
        if log_step:
            self.plans.log_step(current, result)

    def _play_chunk(self, now: float, current: Published) -> None:
        """--async: play what the chunks plan for now; zero when the frame being inferred is --cmd-timeout old
        (inference stalled: reset, as on the normal path), when no chunk covers the present, or when the plan's
        frame is older than the schedule's replan age plus --cmd-timeout (never sent; the next frame is taken)."""
        inferring = self.inference.inferring
        if inferring is not None and now - inferring > self.config.cmd_timeout:
            if self._async_stall != inferring:  # one new epoch per stalled inference, not one per tick
                self._async_stall = inferring
                self.authority.fence("command timeout")
            self.channel.send_zero(now, "command timeout")
            return
        planned = self.chunks.planned_at(now, oldest=now - self.plan_age_limit)
        if planned is None:
            self.channel.send_zero(now, "no chunk covers the present")
            return
        action, captured = planned
        # The loop wakes at the watchdog's deadline (stamp + --cmd-timeout): fed the stamp that puts that deadline
        # where this plan turns too old (capture + replan age + --cmd-timeout).
        self.watchdog.feed(captured + self.plan_age_limit - self.config.cmd_timeout)
        if action is None:  # planned from a frame older than the limit: never sent
            self.channel.send_zero(now, "plan too old")
            return
        self._execute(now, current, self.gate.filter(action, now), self.authority.epoch_at(captured),
                      current.step != self.plans.last_logged_step)
