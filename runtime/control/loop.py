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

The loop itself keeps the ticks, asks the authority and the person, and
reports; its parts do the rest: runtime/control/motor_channel.py is the one
path to the motors (the gate, the authority's lock, the zero owed after a
stop, the link watched, the shutdown zero), runtime/control/plan_handoff.py
hands the newest plan from the inference thread to this one (step mode's one
frame per move, the step log's line), and runtime/control/plan_player.py
plays it while armed (fresh, in its epoch, its step's move, `--async` chunks).
"""

from __future__ import annotations

import logging
import math
import threading
import time

from runtime.control.authority import ARMED, MotionAuthority, PreArmCheck
from runtime.control.config import DriveConfig
from runtime.control.inference import InferenceWorker, Published
from runtime.control.loop_health import LoopHealth
from runtime.control.motor_channel import MotorChannel
from runtime.control.plan_handoff import PlanHandoff
from runtime.control.plan_player import PlanPlayer
from runtime.control.safety import CommandWatchdog, SafetyGate
from runtime.control.sd_notify import ServiceNotifier
from runtime.control.status_line import StatusLine
from runtime.control.steplog import StepLog
from runtime.hardware import SentCommand
from runtime.logs import log_info

log = logging.getLogger(__name__)


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
        self.status = StatusLine(config.status)
        self.error: BaseException | None = None
        self.ended_by = ""
        self.stop_requested = ""  # set by signal handlers: a plain attribute, never a lock (see request_stop)
        self.watchdog = CommandWatchdog(config.cmd_timeout)
        self.health = LoopHealth(motor)  # the state, the zero events and the counters (control/loop_health.py)
        # the one path to the motors: the gate, the authority's lock, the zero owed, the link (motor_channel.py)
        self.channel = MotorChannel(motor, gate, self.authority, self.health, self.log, config, takeover)
        self.link = self.channel.link
        self.plans = PlanHandoff(self.log, config.mode == "step")  # between the two threads (plan_handoff.py)
        self.inference = InferenceWorker(
            policy, camera, config, self.authority, publish=self.plans.publish, stop=self.stop_event,
            wait_done=self.plans.handshake.wait_done, drained=self.plans.executed, health=self.health, chunks=chunks,
            takeover=takeover, retarget=retarget, status=self.status, plan_age_limit=self._plan_age_limit,
            rerun=rerun)
        if chunks is not None:  # a new epoch forgets the chunks at once, and drops one from before it when it lands
            self.authority.listeners.append(lambda epoch, started: chunks.reset(started))
        # the newest plan played while armed: fresh, in its epoch, its step's move (plan_player.py)
        self.player = PlanPlayer(self.plans, self.channel, gate, self.authority, self.inference, self.watchdog,
                                 config, chunks, self._plan_age_limit)
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
        return self.plans.newest

    def pre_arm_checks(self) -> list[PreArmCheck]:
        """What must hold before the robot may be armed, besides the e-stop inputs (docs/reliability.md)."""
        return [PreArmCheck("motor link", self.channel.link_problem),
                PreArmCheck("camera", self.inference.camera_problem),
                PreArmCheck("policy", self.inference.policy_problem)]

    # -- shared --------------------------------------------------------------------
    def request_reset(self, reason: str) -> None:
        """A new epoch: no plan from a frame captured before now moves the robot; the inference thread resets
        the behaviours and the ring before its next frame, and --async forgets its chunks now."""
        self.authority.fence(reason)

    def set_instruction(self, text: str) -> None:
        """A new instruction (the ROS topic ~/instruction): applied between two frames, as a new episode."""
        self.inference.set_instruction(text)

    # -- control thread ------------------------------------------------------------
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
            self.player.hold(now, current, "person driving: at rest")
            self.health.set_state("person driving")
            return True
        if self.channel.send_moving(command, now, None, person=True) is None:
            self.player.hold(now, current, self.authority.describe())
            return True
        self.health.set_state("person driving")
        if current is not None:
            self.plans.done(current)  # step mode: the policy's move is not made; the next frame may come
        return True

    def _tick(self, now: float, current: Published | None) -> None:
        self.authority.check_inputs(now)
        if self.ros is not None:
            problem = self.ros.problem()
            if problem and self.authority.state != "e-stop":  # its e-stop topic and services are gone: fail safe
                self.authority.estop(problem)
        self.channel.quiet_when_disarmed()
        if self.channel.zero_owed():  # a stop since the last tick (even one already reset and re-armed): a zero first
            self.player.hold(now, current if self.authority.state != ARMED else None, self.authority.describe())
            return
        if self.takeover is not None and self._person_drives(now, current):
            return
        if self.authority.state != ARMED:
            self.player.hold(now, current, self.authority.describe())
            return
        self.player.play(now, current)

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
                current = self.plans.newest
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
