"""The drive loop: camera -> policy -> safety -> motor controller, in two threads.

    loop = DriveLoop(policy, camera, motor, SafetyGate(SafetyConfig()), DriveConfig(mode="step"))
    code = loop.run()        # until max steps, end of stream, a signal or an error; motors end at zero

Two threads. The inference thread (runtime/control/inference.py) reads the
newest camera frame, runs the policy (preprocess -> vision -> language ->
ring -> head) and publishes the action with the time it arrived. The
control thread (this one) runs at `--rate` Hz and alone talks to the motor
controller: it sends the action through the safety gate while it is fresh,
and zero when the frame it was computed from is older than `--cmd-timeout`
(ages count from capture: inference or camera stalled), when the camera
stalled, on NaN/inf, on any exception, on a signal and at exit. In step
mode a move starts only from a frame younger than `--cmd-timeout` and then
runs its `--step-duration`, as the demonstrations' moves did. So a hung
model or camera can never leave the motors running, and the controller's own
watchdog covers a hung host.

One motion authority decides what may move the robot (runtime/control/
authority.py): on every tick the control thread asks it, and a non-zero
command leaves only while it is armed and, for a policy's plan, while the
plan's epoch is the current one; its lock is held while such a command is
sent, so no e-stop, disarm or fault can interleave. No plan outlives an
event: every arm, disarm, e-stop, fault, take-over, camera stall, non-finite
action, motor link loss or reconnect and new instruction starts a new epoch
(a plan that merely aged out, a slow inference, is a zero, not an event), a plan carries the epoch in force
when its frame was captured, the inference thread resets the behaviours and
the ring before its next frame (a new episode), and a frame captured before
the new epoch never enters it. An action carries the capture time of the
frame it was planned from (an open-loop chunk's tail is as old as the
chunk's frame), so the watchdog judges the plan, not the newest frame. A
plan that would be older than `--cmd-timeout` is dropped and made again. `--async`
(runtime/policy/async_chunks.py) is held to the same: a reset forgets the
chunks at once (one from a frame captured before it is dropped when it
lands, none is blended into a new one), an inference whose frame is older
than `--cmd-timeout` zeroes as a stalled one does, and a chunk, a plan meant
to run ahead of its frame, is played only while its frame is younger than
the schedule's replan age (one action period by default) plus
`--cmd-timeout`.

A person's take-over (runtime/recording/takeover.py) is a mode of armed: the
person's command goes out only while the authority is armed, through the same
gate and the same lock. The motor link is watched: a command not sent, or
sent and left unanswered (a deaf controller), counts toward `--give-up-after`
and holds the authority in `fault` while it lasts; a controller that restarts
(its READY after the link was up) disarms.

What the robot is doing and why is on the status line from the first tick
(runtime/control/status_line.py), every change of state is a logged event
(runtime/control/loop_health.py, runtime/control/authority.py), and a motor
link down for longer than `--give-up-after` ends the run
(runtime/control/link_watch.py). Under systemd the loop feeds the service's
watchdog on every tick (runtime/control/sd_notify.py): a hung loop is
restarted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from runtime.control.authority import ARMED, MotionAuthority, PreArmCheck
from runtime.control.config import DriveConfig
from runtime.control.inference import InferenceWorker, Published
from runtime.control.loop_health import LoopHealth
from runtime.control.motor_channel import MotorChannel
from runtime.control.safety import CommandWatchdog, SafetyGate
from runtime.control.sd_notify import ServiceNotifier
from runtime.control.status_line import StatusLine
from runtime.control.step_handshake import StepHandshake
from runtime.control.steplog import StepLog
from runtime.hardware import SentCommand
from runtime.logs import log_info

log = logging.getLogger(__name__)
CAMERA_LATE_S = 0.1  # s of waiting for a frame that makes a stale action the camera's fault (3 frames at 30 fps)


@dataclass
class StepProgress:
    """The control thread's view of the newest step: logged once, its move's clock, finished (step mode)."""
    step: int = -1
    logged: bool = False
    started: float | None = None
    finished: bool = False

    def follow(self, step: int) -> StepProgress:
        return self if step == self.step else StepProgress(step)


class DriveLoop:
    """The control thread, and the inference thread it starts (runtime/control/inference.py)."""

    def __init__(self, policy, camera, motor, gate: SafetyGate, config: DriveConfig = DriveConfig(),
                 log: StepLog | None = None, printer=None, takeover=None, chunks=None,
                 authority: MotionAuthority | None = None, ros=None, retarget=None, notifier=None,
                 rerun=None):
        self.camera, self.motor, self.gate, self.config = camera, motor, gate, config
        self.takeover = takeover  # runtime.recording.takeover.Takeover: a person may replace the policy's action
        self.chunks = chunks  # runtime.policy.async_chunks.AsyncChunks in --async; None: one action a frame
        # --async: the oldest a plan's frame may be and the plan still play (AsyncChunks.max_plan_age)
        self._plan_age_limit = chunks.max_plan_age(config.cmd_timeout) if chunks is not None else math.inf
        self.log = log or StepLog(None)
        self.printer = printer or log_info
        # runtime.control.authority: what may move the robot; a library caller's loop starts armed (no checks)
        self.authority = authority or MotionAuthority(armed=True)
        self.ros = ros  # runtime.control.ros2.Ros2DriveInterface or None: /diagnostics
        self.notifier = notifier or ServiceNotifier()  # systemd's watchdog, fed on every tick (when under it)
        self.rerun = rerun  # runtime.recording.rerun_log.RerunLog (--rerun): a put on its queue a tick, or None
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.handshake = StepHandshake(self._lock)
        self.status = StatusLine(config.status)
        self._published: Published | None = None
        self.error: BaseException | None = None
        self.ended_by = ""
        self.stop_requested = ""  # set by signal handlers: a plain attribute, never a lock (see request_stop)
        self.watchdog = CommandWatchdog(config.cmd_timeout)
        self.health = LoopHealth(motor)  # the state, the zero events and the counters (control/loop_health.py)
        # the one path to the motors: the gate, the authority's lock, the zero owed, the link (motor_channel.py)
        self.channel = MotorChannel(motor, gate, self.authority, self.health, self.log, config, takeover)
        self.link = self.channel.link
        self._progress = StepProgress()
        self.last_logged_step = -1  # the newest step whose command went out (read by the drain at the end)
        self._async_stall: float | None = None  # --async: the stalled frame already fenced for
        self.inference = InferenceWorker(
            policy, camera, config, self.authority, publish=self._publish, stop=self.stop_event,
            wait_done=self.handshake.wait_done, drained=self._executed, health=self.health, chunks=chunks,
            takeover=takeover, retarget=retarget, status=self.status, plan_age_limit=self._plan_age_limit,
            rerun=rerun)
        if chunks is not None:  # a new epoch forgets the chunks at once, and drops one from before it when it lands
            self.authority.listeners.append(lambda epoch, started: chunks.reset(started))
        self.authority.checks += self.pre_arm_checks()

    @property
    def policy(self):
        return self.inference.policy

    @property
    def steps(self) -> int:
        return self.inference.steps

    @property
    def last_command(self) -> SentCommand:
        """What the motor side really did last."""
        return self.channel.last_command

    @property
    def newest_plan(self) -> Published | None:
        """The plan the inference thread published last (what the control thread acts on)."""
        with self._lock:
            return self._published

    def pre_arm_checks(self) -> list[PreArmCheck]:
        """What must hold before the robot may be armed, besides the e-stop inputs (docs/reliability.md)."""
        def camera_fresh() -> str:
            age = time.monotonic() - self.inference.last_capture
            return "" if age <= self.config.camera_timeout else (
                "no frame yet" if math.isinf(age) else f"newest frame {age:.2f} s old")

        def policy_warmed() -> str:
            return "" if self.inference.inferences else "no inference done yet"

        return [PreArmCheck("motor link", self.channel.link_problem), PreArmCheck("camera", camera_fresh),
                PreArmCheck("policy", policy_warmed)]

    # -- shared --------------------------------------------------------------------
    def request_reset(self, reason: str) -> None:
        """A new epoch: no plan from a frame captured before now moves the robot; the inference thread resets
        the behaviours and the ring before its next frame, and --async forgets its chunks now."""
        self.authority.fence(reason)

    def set_instruction(self, text: str) -> None:
        """A new instruction (the ROS topic ~/instruction): applied between two frames, as a new episode."""
        self.inference.set_instruction(text)

    def _publish(self, plan: Published) -> None:
        """The inference thread hands over a plan (or a "zero now" with its reason)."""
        with self._lock:
            plan.seq = self.handshake.published()
            self._published = plan

    def _signal_done(self, current: Published) -> None:
        self.handshake.done(current.seq)

    def _executed(self, last_step: int) -> bool:
        """The drain's question at a normal end: did `last_step` go out (its whole move, in step mode)?"""
        if self.config.mode == "step":
            with self._lock:
                return self.handshake.finished()
        return self.last_logged_step >= last_step

    # -- control thread ------------------------------------------------------------
    def _zero_held(self, now: float, current: Published | None, reason: str) -> None:
        """Zero while the authority holds the robot (or the plan is from an earlier epoch); the plan's step is
        logged once with what really went out and why; step mode: a move not made is over, so the policy keeps
        seeing frames (and stays warm for the pre-arm check)."""
        self.channel.send_zero(now, reason)
        if current is None:
            return
        if current.record and current.step != self.last_logged_step:
            self.last_logged_step = current.step
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=list(self.last_command.velocity),
                                sent=self.last_command.sent, acknowledged=self.last_command.acknowledged,
                                held=reason))
        self._signal_done(current)

    def _person_drives(self, now: float, current: Published | None) -> bool:
        """Take-over hook (runtime/recording/takeover.py): while the person holds control, their command goes out
        through the same gate and the same authority instead of the policy's, only while armed."""
        velocity = self.takeover.command(now)
        self.authority.take_over(velocity is not None, "the person took over" if velocity is not None
                                 else "the person let go")
        if velocity is None:
            return False
        command = self.gate.filter(velocity, now)
        if not any(command):
            self._zero_held(now, current, "person driving: at rest")
            self.health.set_state("person driving")
            return True
        if self.channel.send_moving(command, now, None, person=True) is None:
            self._zero_held(now, current, self.authority.describe())
            return True
        self.health.set_state("person driving")
        if current is not None:
            self._signal_done(current)  # step mode: the policy's move is not made; the next frame may come
        return True

    def _tick(self, now: float, current: Published | None) -> None:
        self.authority.check_inputs(now)
        if self.ros is not None:
            problem = self.ros.problem()
            if problem and self.authority.state != "e-stop":  # its e-stop topic and services are gone: fail safe
                self.authority.estop(problem)
        self.channel.quiet_when_disarmed()
        if self.channel.zero_owed():  # a stop since the last tick (even one already reset and re-armed): a zero first
            self._zero_held(now, current if self.authority.state != ARMED else None, self.authority.describe())
            return
        if self.takeover is not None and self._person_drives(now, current):
            return
        if self.authority.state != ARMED:
            self._zero_held(now, current, self.authority.describe())
            return
        if self.chunks is not None and current is not None and current.action is not None:
            self._tick_chunk(now, current)
            return
        if current is None:
            self.channel.send_zero(now, "no action yet")
            return
        if current.action is None:
            self.channel.send_zero(now, current.reason)
            self._signal_done(current)
            return
        if current.epoch != self.authority.epoch:
            self._zero_held(now, current, "plan from before " + self.authority.history[-1].cause
                            if self.authority.history else "plan from an earlier epoch")
            return
        progress = self._progress = self._progress.follow(current.step)
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
            self._signal_done(current)  # the inference thread may take the next frame
            return
        if not self.watchdog.fresh(now):
            reason = self._stale_reason(now)
            if reason.startswith("camera"):
                # The robot went blind: no plan from before it moves the robot again. A plan merely aged out
                # (slow inference) is a zero, not a fence: the next plan, if fresh, is a fresh view of the world.
                self.request_reset(reason)
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
            self._zero_held(now, current, self.authority.describe())
            return
        if log_step:
            self.last_logged_step = current.step
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=list(result.velocity),
                                sent=result.sent, acknowledged=result.acknowledged))

    def _report(self, now: float) -> None:
        """The status line (every tick: it redraws when something changed) and /diagnostics (every second)."""
        counters = self.health.counters()
        self.status.update(now, self.health.state, self.last_command.velocity, self.steps, counters)
        if self.ros is not None and self.health.diagnostics_due(now):
            last = self.authority.history[-1] if self.authority.history else None
            self.ros.publish_diagnostics(self.health.level(), self.health.state, {
                "loop rate (Hz)": round(self.status.rate.hz, 2),
                "inference (ms)": round(sum(self.status.stage_ms.values()), 1),
                "camera age (ms)": round(self.inference.camera_age * 1e3, 1),
                "link": "up" if self.link.up else "down",
                "armed": self.authority.armed, "arm state": self.authority.describe(),
                "last transition": f"{last.event} by {last.cause}" if last else "",
                "epoch": self.authority.epoch, "steps": self.steps, **counters})

    def _stale_reason(self, now: float) -> str:
        """Why the action in force is too old: the camera when the inference thread has been waiting for a frame
        longer than CAMERA_LATE_S (it raises CameraStalled only after --camera-timeout), else the inference."""
        reading = self.inference.reading_since
        if reading is not None and now - reading > CAMERA_LATE_S:
            return "camera: no new frame"
        return "command timeout"

    def _tick_chunk(self, now: float, current: Published) -> None:
        """--async: play what the chunks plan for now; zero when the frame being inferred is --cmd-timeout old
        (inference stalled: reset, as on the normal path), when no chunk covers the present, or when the plan's
        frame is older than the schedule's replan age plus --cmd-timeout (never sent; the next frame is taken)."""
        inferring = self.inference.inferring
        if inferring is not None and now - inferring > self.config.cmd_timeout:
            if self._async_stall != inferring:  # one new epoch per stalled inference, not one per tick
                self._async_stall = inferring
                self.request_reset("command timeout")
            self.channel.send_zero(now, "command timeout")
            return
        planned = self.chunks.planned_at(now, oldest=now - self._plan_age_limit)
        if planned is None:
            self.channel.send_zero(now, "no chunk covers the present")
            return
        action, captured = planned
        # The loop wakes at the watchdog's deadline (stamp + --cmd-timeout): fed the stamp that puts that deadline
        # where this plan turns too old (capture + replan age + --cmd-timeout).
        self.watchdog.feed(captured + self._plan_age_limit - self.config.cmd_timeout)
        if action is None:  # planned from a frame older than the limit: never sent
            self.channel.send_zero(now, "plan too old")
            return
        self._execute(now, current, self.gate.filter(action, now), self.authority.epoch_at(captured),
                      current.step != self.last_logged_step)

    def run(self) -> int:
        """Drive until max steps, end of stream, a signal or an error. Motors end at zero. Returns an exit code."""
        worker = threading.Thread(target=self.inference.run, name="inference", daemon=True)
        period = 1.0 / self.config.rate
        self.channel.quiet_when_disarmed()  # a disarmed start leaves the base to the other inputs from the first tick
        worker.start()
        self.authority.started()  # the pre-arm checks exist: arms are judged from now on
        self.notifier.ready()
        try:
            next_tick = time.monotonic() + period  # the first tick is now
            while not self.stop_event.is_set() and not self.stop_requested:
                now = time.monotonic()
                with self._lock:
                    current = self._published
                self._tick(now, current)
                self._report(now)
                if self.rerun is not None:  # what went out this tick and why (never waits: a bounded queue)
                    self.rerun.sent(now, self.last_command, self.health.state)
                self.notifier.alive()  # only a loop that ticks feeds systemd's watchdog
                if now >= next_tick - 1e-3:  # a regular tick (not a deadline wake-up): schedule the next one
                    next_tick = max(next_tick + period, now)
                # also wake at the command's own deadline: the zero goes out when the action turns stale,
                # not up to a control period later
                expiry = self.watchdog.stamp + self.config.cmd_timeout + 1e-3
                wake = min(next_tick, expiry) if now < expiry else next_tick
                delay = wake - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
        except BaseException as e:
            self.error = self.error or e
        finally:
            self.notifier.stopping()
            self.stop_event.set()
            self.channel.shutdown()
            worker.join(timeout=5)
            self.ended_by = self.stop_requested or self.inference.ended_by
            self.error = self.inference.error or self.error  # the inference thread's error is why the loop stopped
        self.status.end()
        if self.error is not None and not isinstance(self.error, KeyboardInterrupt):
            self.printer(f"error: stopped after {self.steps} steps: {type(self.error).__name__}: {self.error}")
            return 1
        self.printer(f"stopped after {self.steps} steps ({self.ended_by or 'signal'}); motors at zero")
        return 0

    def request_stop(self, reason: str) -> None:
        """Safe to call from a signal handler. It must not touch stop_event: Event.set() takes the
        event's lock, which the interrupted main thread may hold inside Event.wait(); that deadlocked
        one CI run in a few hundred. The control loop sees the flag within one period and stops."""
        self.stop_requested = reason
