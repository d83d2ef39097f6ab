"""The robot's main job: camera -> policy -> safety -> motor controller.

    python -m runtime.drive --bundle bundle/ --serial /dev/ttyUSB0 --camera csi
    python -m runtime.drive --bundle bundle/ --dry-run --camera episode.h5 --max-steps 18
    python -m runtime.drive --bundle bundle/ --motor ros2 --cmd-vel-stamped --camera ros2:/camera/image_raw
    python -m runtime.drive --bundle bundle/ --motor mypackage.base:MyBase --camera csi   # docs/motors.md
    python -m runtime.drive --bundle bundle/ --serial /tmp/mobile-vla-motor --camera 0 --mode step
    python -m sim.drive --bundle bundle/ --seed 3 --mode step --dead-zone 0.1 --max-steps 30   # the simulated robot

Two threads. The inference thread reads the newest camera frame, runs the
policy (preprocess -> vision -> language -> ring -> head) and publishes the
action with the time it arrived. The control thread (this one) runs at
`--rate` Hz and alone talks to the motor controller: it sends the action
through the safety gate while it is fresh, and zero when the frame it was
computed from is older than `--cmd-timeout` (ages count from capture:
inference or camera stalled), when the camera stalled, on NaN/inf, on any
exception, on SIGINT/SIGTERM/SIGHUP/SIGQUIT and at exit. In step mode a move
starts only from a frame younger than `--cmd-timeout` and then runs its
`--step-duration`, as the demonstrations' moves did. So a hung model or camera can
never leave the motors running, and the controller's own watchdog covers a
hung host.

No plan outlives a fault: every camera stall, non-finite action, command
timeout (inference stalled), motor link loss or reconnect, disarm and new
instruction resets the behaviours and the ring of features (a new
episode) before the next frame, and an action carries the capture time of
the frame it was planned from (an open-loop chunk's tail is as old as the
chunk's frame), so the watchdog judges the plan, not the newest frame. A
plan that would be older than `--cmd-timeout` is dropped and made again.
`--async` (runtime/async_chunks.py) is held to the same: a reset forgets
the chunks at once (one from a frame captured before it is dropped when it
lands, none is blended into a new one), an inference whose frame is older
than `--cmd-timeout` zeroes as a stalled one does, and a chunk, a plan
meant to run ahead of its frame, is played only while its frame is younger
than the schedule's replan age (one action period by default) plus
`--cmd-timeout`.

What the robot is doing and why is on the status line from the first tick
(`driving`, `zero: camera stale`, `link down`, `disarmed`, ...) with the
link's counters (missed acks, refusals, reconnects, failed publishes), and
every change of state is a logged event. A motor link down for longer than
`--give-up-after` (5 s) ends the run with a message instead of resuming by
itself when the cable comes back, unless `--auto-resume`.

`--start-disarmed` (the systemd unit's default) sends zeros until armed (a
key, a gamepad button, a GPIO line, the ROS 2 service ~/arm:
runtime/arming.py); an e-stop latches zero until re-armed. Signal handlers
are installed before anything is opened, so a SIGTERM during start-up
still releases what was opened. `--base diff` maps a lateral intent for a
differential base (runtime/safety.py). ROS 2 arguments pass through after
`--ros-args`; with any ROS part the drive also serves /diagnostics, its arm
and e-stop services and an instruction topic (runtime/ros2_drive.py).

Modes: `continuous` sends the newest action at the control rate; `step`
moves for `--step-duration` (0.4 s) per action, then stops and takes the
next frame, which is how the demonstrations were recorded.

The simulated robot is driven by `python -m sim.drive`, which hands this
module's `drive()` a simulated camera and motor: nothing here imports the
simulator.

As a library: `drive(DriveSpec(policy=PolicySpec(bundle), motor=MotorSpec(serial=port)))`;
each part of the spec (policy, motor, camera, loop, safety) owns its defaults,
and `build_parser()` reads them from there.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.arming import ArmSpec, ArmSwitch, add_arm_arguments, open_arm_sources
from runtime.async_chunks import AsyncConfig, add_async_arguments, async_config_from_args, open_chunks
from runtime.backends.base import BackendError
from runtime.bundle import BundleError, read_driving
from runtime.camera import CameraSpec, CameraStalled, EndOfStream, FrameTooOld, add_camera_arguments
from runtime.cli import exits_on
from runtime.driving import driving_settings
from runtime.hardware import DeviceError, SentCommand
from runtime.link_watch import LinkWatch, link_counter
from runtime.logs import add_log_level_argument, setup_logging
from runtime.loop_health import LoopHealth, command_state, zero_state
from runtime.motor_select import MotorSpec, add_motor_arguments, open_motor
from runtime.policy import bundle_frame_spacing, check_frame_spacing
from runtime.policy_setup import PolicySpec, add_policy_arguments, open_policy, retarget_policy
from runtime.prompt import PromptTooLongError
from runtime.remote_policy import RemoteConfig, add_remote_arguments, open_remote_policy, remote_config_from_args
from runtime.ros2 import set_ros_args, split_ros_args
from runtime.ros2_drive import Ros2DriveInterface
from runtime.safety import CommandWatchdog, SafetyConfig, SafetyGate, add_safety_arguments
from runtime.status_line import StatusLine
from runtime.step_handshake import StepHandshake
from runtime.steplog import StepLog
from runtime.takeover import TakeoverSpec, add_takeover_arguments, open_takeover

log = logging.getLogger(__name__)
MODES = ("continuous", "step")
CAMERA_LATE_S = 0.1  # s of waiting for a frame that makes a stale action the camera's fault (3 frames at 30 fps)


@dataclass(frozen=True)
class DriveConfig:
    mode: str = "continuous"  # "continuous" or "step"
    rate: float = 20.0  # control loop Hz (continuous mode); also how often step mode checks the clock
    step_duration: float = 0.4  # s per move in step mode (the recordings' 0.4 s keypress moves)
    cmd_timeout: float = 0.5  # s: zero when no fresh action arrived within this (ros2_control's default)
    camera_timeout: float = 0.5  # s: a camera read that waits longer, or a frame older, counts as a stall
    max_steps: int | None = None  # stop after this many inference steps
    status: bool = True  # one live status line on stderr
    give_up_after: float = 5.0  # s a motor link may stay down before the run ends (MotorLinkLost)
    auto_resume: bool = False  # never give up on the link: resume whenever it comes back
    quiet_when_disarmed: bool = False  # a ROS 2 motor side publishes nothing while disarmed (twist_mux hand-over)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DriveConfig:
        return cls(args.mode, args.rate, args.step_duration, args.cmd_timeout, args.camera_timeout,
                   args.max_steps, status=not args.quiet, give_up_after=args.give_up_after,
                   auto_resume=args.auto_resume, quiet_when_disarmed=args.quiet_when_disarmed)


def add_loop_arguments(ap: argparse.ArgumentParser) -> None:
    d = DriveConfig
    # --mode and --step-duration default to the bundle's driving record (spec_from_args), not to DriveConfig's
    ap.add_argument("--mode", choices=MODES, help="default: the bundle's driving record (step for key-press "
                                                  "recordings; runtime/driving.py)")
    ap.add_argument("--rate", type=float, default=d.rate, help="control loop Hz")
    ap.add_argument("--step-duration", type=float,
                    help="--mode step: seconds per move (default: the bundle's frame spacing, 0.4 s when unrecorded)")
    ap.add_argument("--cmd-timeout", type=float, default=d.cmd_timeout,
                    help="zero when the newest action's frame is older than this (s); also the serial "
                         "controller's own watchdog")
    ap.add_argument("--camera-timeout", type=float, default=d.camera_timeout,
                    help="a camera read that waits longer, or a frame older, is a stall (s)")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    ap.add_argument("--give-up-after", type=float, default=d.give_up_after,
                    help="end the run when the motor link stays down this long (s), rather than moving again by "
                         "itself when a cable is re-plugged")
    ap.add_argument("--auto-resume", action="store_true",
                    help="never give up on the motor link: resume whenever it comes back")
    ap.add_argument("--quiet-when-disarmed", action="store_true",
                    help="--motor ros2: publish nothing while disarmed, so that twist_mux hands the base to a "
                         "lower-priority input (docs/motors.md)")


@dataclass(frozen=True)
class DriveSpec:
    policy: PolicySpec  # which bundle, backend, instruction and behaviours
    motor: MotorSpec = MotorSpec()  # which motor side (ignored when drive() is handed a motor)
    camera: CameraSpec = CameraSpec()  # which camera (ignored when drive() is handed a camera)
    loop: DriveConfig = DriveConfig()  # mode, rates and timeouts
    safety: SafetyConfig = SafetyConfig()  # speed and acceleration limits, dead zone, base
    log: Path | None = None  # JSON-lines log of every step; None: no log
    takeover: TakeoverSpec | None = None  # --teleop/--record: a person may take over, the run recorded
    remote: RemoteConfig | None = None  # vision + language on a policy server (--policy ws://...); None: onboard
    chunks: AsyncConfig | None = None  # --async: play chunks while the next is inferred; None: one action a frame
    arm: ArmSpec = ArmSpec()  # disarmed start and the arm / e-stop sources

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DriveSpec:
        return cls(PolicySpec.from_args(args), MotorSpec.from_args(args), CameraSpec.from_args(args),
                   DriveConfig.from_args(args), SafetyConfig.from_args(args), args.log, TakeoverSpec.from_args(args),
                   remote_config_from_args(args), async_config_from_args(args), ArmSpec.from_args(args))


@dataclass
class Published:
    action: np.ndarray | None  # robot units, or None = zero now (camera stalled, NaN, ...)
    step: int
    record: dict
    reason: str = ""
    captured: float = -float("inf")  # time.monotonic() at capture of the frame it was computed from
    seq: int = 0  # publication number: step mode's "done" names the publication that finished


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
    def __init__(self, policy, camera, motor, gate: SafetyGate, config: DriveConfig = DriveConfig(),
                 log: StepLog | None = None, printer=None, takeover=None, chunks=None,
                 switch: ArmSwitch | None = None, ros=None, retarget=None):
        self.policy, self.camera, self.motor, self.gate, self.config = policy, camera, motor, gate, config
        self.takeover = takeover  # runtime.takeover.Takeover: a person may replace the policy's action
        self.chunks = chunks  # runtime.async_chunks.AsyncChunks in --async (continuous mode); None: one action a frame
        # --async: the oldest a plan's frame may be and the plan still play (AsyncChunks.max_plan_age)
        self._plan_age_limit = chunks.max_plan_age(config.cmd_timeout) if chunks is not None else math.inf
        self.log = log or StepLog(None)
        self.printer = printer or log_info
        self.switch = switch or ArmSwitch(armed=True)  # runtime.arming: zeros while not armed
        self.ros = ros  # runtime.ros2_drive.Ros2DriveInterface or None: /diagnostics
        self.retarget = retarget  # callable(instruction) -> a new policy on the same backend, or None
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self.handshake = StepHandshake(self._lock)
        self.status = StatusLine(config.status)
        self._published: Published | None = None
        self.error: BaseException | None = None
        self.steps = 0
        self.ended_by = ""
        self.stop_requested = ""  # set by signal handlers: a plain attribute, never a lock (see request_stop)
        self.watchdog = CommandWatchdog(config.cmd_timeout)
        self.health = LoopHealth(motor)  # the state, the zero events and the counters (runtime/loop_health.py)
        self.link = LinkWatch(motor, config.give_up_after, config.auto_resume, self.health.counters_text)
        self._progress = StepProgress()
        self.last_logged_step = -1  # the newest step whose command went out (read by the drain at the end)
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=False)  # what the motor side really did last
        self._reset_reason = ""  # control thread -> inference thread: reset before the next frame
        self._instruction: str | None = None  # a new instruction for the inference thread to apply
        self._stamps: deque[float] = deque(maxlen=256)  # capture times of the newest frames: a plan's age
        self._inferring: float | None = None  # capture time of the frame being inferred (--async: a stall)
        self._reading_since: float | None = None  # when the inference thread began waiting for a frame
        self._was_armed = self.switch.armed
        self._camera_age = float("nan")

    # -- shared --------------------------------------------------------------------
    def request_reset(self, reason: str) -> None:
        """Before the next frame the inference thread resets the behaviours and the ring (a new episode); --async
        forgets its chunks now, and drops one planned from a frame captured before now when it lands."""
        if self.chunks is not None:
            self.chunks.reset(time.monotonic())
        if not self._reset_reason:
            self._reset_reason = reason

    def set_instruction(self, text: str) -> None:
        """A new instruction (the ROS topic ~/instruction): applied between two frames, as a new episode."""
        self._instruction = text

    # -- inference thread ----------------------------------------------------------
    def _publish(self, action, record: dict, reason: str = "", captured: float = -float("inf")) -> None:
        with self._lock:
            seq = self.handshake.published()
            self._published = Published(action, self.steps, record, reason, captured, seq)

    def _signal_done(self, current: Published) -> None:
        self.handshake.done(current.seq)

    def _start_over(self) -> None:
        """Apply a reset or a new instruction asked for since the last frame (inference thread only)."""
        text, self._instruction = self._instruction, None
        if text is not None and self.retarget is not None:
            try:
                self.policy = self.retarget(text)
                log.warning("instruction now %r", text)
                self.request_reset("new instruction")
            except Exception as e:  # a prompt too long, ...: keep driving the old one, say why
                log.error("instruction %r refused: %s", text, e)
        reason, self._reset_reason = self._reset_reason, ""
        if reason:
            self.policy.reset()
            self._stamps.clear()
            self.health.resets += 1
            log.info("behaviours and ring reset (%s)", reason)

    def _inference(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    self.ended_by = "max-steps"
                    self._drain()
                    return
                if self.config.mode == "step" and not self.handshake.wait_done(self.stop_event):
                    return
                if self.chunks is not None and not self.chunks.wait_needed(self.stop_event, time.monotonic,
                                                                           self._plan_age_limit):
                    return
                self._start_over()
                self._reading_since = time.monotonic()
                try:
                    frame = self.camera.read(timeout=self.config.camera_timeout)
                except EndOfStream:
                    self.ended_by = "end of camera stream"
                    self._drain()
                    return
                except (CameraStalled, FrameTooOld) as e:  # stop now, keep trying; other camera errors end the run
                    self.request_reset("camera stall")
                    self._publish(None, {}, f"camera: {e}")
                    continue
                finally:
                    self._reading_since = None
                if self.takeover is not None:
                    self.takeover.captured(frame)  # recorded with the command in force, tagged by who drove
                t0 = time.monotonic()
                self._camera_age = t0 - frame.stamp
                # Continuous: the Frame, with its capture time, so the ring keeps the spacing the model was
                # trained at (runtime/policy.py); step mode: one frame per move is one recorded frame.
                self._inferring = frame.stamp
                out = self.policy.infer(frame if self.config.mode == "continuous" else frame.image)
                t1 = time.monotonic()
                self._inferring = None
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
                if not out.finite:
                    self.request_reset("non-finite action")
                    self._publish(None, record, "non-finite action", captured=planned)
                elif self.chunks is None and t1 - planned > self.config.cmd_timeout:
                    # an open-loop chunk's tail planned before --cmd-timeout: never sent; plan again
                    drop_plan = getattr(self.policy, "drop_plan", None)
                    if drop_plan is not None:
                        drop_plan()
                    self._publish(None, record, "plan too old", captured=planned)
                else:
                    self._publish(out.action, record, captured=planned)
                self.steps += 1
                self.status.inferred(time.monotonic(), record["timings_ms"], getattr(self.policy, "source", ""))
        except BaseException as e:  # any exception: the control thread zeroes and stops
            self.error = e
        finally:
            self.stop_event.set()

    def _drain(self) -> None:
        """At a normal end, let the last action be executed (its whole step in step mode) before stopping."""
        deadline = time.monotonic() + self.config.cmd_timeout + self.config.step_duration
        last = self.steps - 1
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if self.config.mode == "step":
                with self._lock:
                    done = self.handshake.finished()
            else:
                done = self.last_logged_step >= last
            if done or last < 0:
                return
            time.sleep(0.005)

    # -- control thread ------------------------------------------------------------
    def _send(self, command, now: float, person: bool = False) -> SentCommand:
        vx, vy, wz = (float(v) for v in command)
        result = self.motor.send_velocity(vx, vy, wz)
        if not isinstance(result, SentCommand):  # the log must say what reached the robot, not guess
            raise TypeError(f"{type(self.motor).__name__}.send_velocity returned {type(result).__name__}, not "
                            f"runtime.hardware.SentCommand (see docs/motors.md)")
        self.last_command = result
        if self.takeover is not None:
            self.takeover.sent(time.monotonic(), result, person)
        reason = self.link.observe(result, now)
        if reason:
            self.request_reset(reason)
        return result

    def _person_drives(self, now: float) -> bool:
        """Take-over hook (runtime/takeover.py): while the person holds control, their command goes out
        through the same gate instead of the policy's; the policy's steps wait."""
        velocity = self.takeover.command(now)
        if velocity is None:
            return False
        self._send(self.gate.filter(velocity, now), now, person=True)
        self.health.set_state("person driving")
        return True

    def _send_zero(self, now: float, reason: str) -> None:
        was_moving = any(self.last_command.velocity)
        result = self._send(self.gate.zero(now), now)  # explicit zeros keep the controller's watchdog fed
        self.health.set_state(zero_state(reason, result))
        if self.health.zeroed(now, reason, was_moving):
            self.log.write({"type": "zero", "reason": reason, "t": now, "sent": result.sent,
                            "acknowledged": result.acknowledged})

    def _zero_disarmed(self, now: float, current: Published | None) -> None:
        self._send_zero(now, self.switch.state)
        if current is not None:  # step mode: a move not made is over, so the policy keeps seeing frames
            self._signal_done(current)

    def _arming(self) -> bool:
        """The switch's state this tick; a change of it resets the plan and, if asked, quiets a ROS motor."""
        armed = self.switch.armed
        if armed != self._was_armed:
            self._was_armed = armed
            self.request_reset("armed" if armed else self.switch.state)
            if self.config.quiet_when_disarmed and hasattr(self.motor, "set_quiet"):
                self.motor.set_quiet(not armed)
        return armed

    def _tick(self, now: float, current: Published | None) -> None:
        armed = self._arming()
        if not armed and self.switch.state.startswith("e-stop"):  # an e-stop holds everyone, a person too
            self._zero_disarmed(now, current)
            return
        if self.takeover is not None and self._person_drives(now):
            return
        if not armed:
            self._zero_disarmed(now, current)
            return
        if self.chunks is not None and current is not None and current.action is not None:
            self._tick_chunk(now, current)
            return
        if current is None:
            self._send_zero(now, "no action yet")
            return
        if current.action is None:
            self._send_zero(now, current.reason)
            self._signal_done(current)
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
            self._send_zero(now, "step done")
            progress.finished = True
            self._signal_done(current)  # the inference thread may take the next frame
            return
        if not self.watchdog.fresh(now):
            reason = self._stale_reason(now)
            self.request_reset(reason)
            self._send_zero(now, reason)
            return
        if first_send and self.config.mode == "step":
            # A move whose frame was fresh when it started runs its recorded --step-duration (the
            # demonstrations' 0.4 s key presses) instead of being cut at capture + --cmd-timeout; a stale
            # frame still never starts one, and the move stays bounded by its own clock and the timeout.
            self.watchdog.feed(now)
        refused, lateral = link_counter(self.motor, "refused"), self.gate.refused_lateral
        result = self._send(self.gate.filter(current.action, now), now)
        self.health.set_state(command_state(result, link_counter(self.motor, "refused") != refused,
                                      self.gate.refused_lateral != lateral))
        if first_send:
            progress.logged = True
            self.last_logged_step = current.step
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=list(result.velocity),
                                sent=result.sent, acknowledged=result.acknowledged))

    def _report(self, now: float) -> None:
        """The status line (every tick: it redraws when something changed) and /diagnostics (every second)."""
        counters = self.health.counters()
        self.status.update(now, self.health.state, self.last_command.velocity, self.steps, counters)
        if self.ros is not None and self.health.diagnostics_due(now):
            self.ros.publish_diagnostics(self.health.level(), self.health.state, {
                "loop rate (Hz)": round(self.status.rate.hz, 2),
                "inference (ms)": round(sum(self.status.stage_ms.values()), 1),
                "camera age (ms)": round(self._camera_age * 1e3, 1),
                "link": "up" if self.link.up else "down",
                "armed": self.switch.armed, "arm state": self.switch.state, "steps": self.steps, **counters})

    def _stale_reason(self, now: float) -> str:
        """Why the action in force is too old: the camera when the inference thread has been waiting for a frame
        longer than CAMERA_LATE_S (it raises CameraStalled only after --camera-timeout), else the inference."""
        reading = self._reading_since
        if reading is not None and now - reading > CAMERA_LATE_S:
            return "camera: no new frame"
        return "command timeout"

    def _tick_chunk(self, now: float, current: Published) -> None:
        """--async: play what the chunks plan for now; zero when the frame being inferred is --cmd-timeout old
        (inference stalled: reset, as on the normal path), when no chunk covers the present, or when the plan's
        frame is older than the schedule's replan age plus --cmd-timeout (never sent; the next frame is taken)."""
        inferring = self._inferring
        if inferring is not None and now - inferring > self.config.cmd_timeout:
            self.request_reset("command timeout")
            self._send_zero(now, "command timeout")
            return
        planned = self.chunks.planned_at(now, oldest=now - self._plan_age_limit)
        if planned is None:
            self._send_zero(now, "no chunk covers the present")
            return
        action, captured = planned
        # The loop wakes at the watchdog's deadline (stamp + --cmd-timeout): fed the stamp that puts that deadline
        # where this plan turns too old (capture + replan age + --cmd-timeout).
        self.watchdog.feed(captured + self._plan_age_limit - self.config.cmd_timeout)
        if action is None:  # planned from a frame older than the limit: never sent
            self._send_zero(now, "plan too old")
            return
        refused, lateral = link_counter(self.motor, "refused"), self.gate.refused_lateral
        result = self._send(self.gate.filter(action, now), now)
        self.health.set_state(command_state(result, link_counter(self.motor, "refused") != refused,
                                      self.gate.refused_lateral != lateral))
        if current.step != self.last_logged_step:
            self.last_logged_step = current.step
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=list(result.velocity),
                                sent=result.sent, acknowledged=result.acknowledged))

    def run(self) -> int:
        """Drive until max steps, end of stream, a signal or an error. Motors end at zero. Returns an exit code."""
        worker = threading.Thread(target=self._inference, name="inference", daemon=True)
        period = 1.0 / self.config.rate
        if self.config.quiet_when_disarmed and not self.switch.armed and hasattr(self.motor, "set_quiet"):
            self.motor.set_quiet(True)  # a disarmed start leaves the base to the other inputs from the first tick
        worker.start()
        try:
            next_tick = time.monotonic() + period  # the first tick is now
            while not self.stop_event.is_set() and not self.stop_requested:
                now = time.monotonic()
                with self._lock:
                    current = self._published
                self._tick(now, current)
                self._report(now)
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
            if self.stop_requested:
                self.ended_by = self.stop_requested
            self.stop_event.set()
            self.shutdown()
            worker.join(timeout=5)
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

    def shutdown(self) -> None:
        """Zero the motors: tried several times, because this is the one command that must arrive."""
        now = time.monotonic()
        self.gate.zero(now)
        confirmed = False
        for _ in range(3):
            try:
                if self.motor.stop():
                    confirmed = True
                    break
            except Exception:
                time.sleep(0.02)
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=confirmed)
        self.health.zeroed(now, "shutdown", was_moving=True)
        self.log.write({"type": "zero", "reason": "shutdown", "t": now, "confirmed": confirmed})


def log_info(message: str) -> None:
    """The loop's closing line as an event: an error at error level, without a second 'error:' prefix."""
    if message.startswith("error: "):
        log.error("%s", message[len("error: "):])
    else:
        log.info("%s", message)


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class StopRequest:
    """What a signal asked, before and after the loop exists: drive() installs the handlers on one of these
    before it opens anything (a ROS motor side takes up to 9 s, a camera up to 5 s), then attaches the loop."""

    def __init__(self):
        self.reason = ""
        self.loop: DriveLoop | None = None

    def request_stop(self, reason: str) -> None:  # a signal handler: plain attributes only
        self.reason = reason
        if self.loop is not None:
            self.loop.request_stop(reason)

    def attach(self, loop: DriveLoop) -> None:
        self.loop = loop
        if self.reason:
            loop.request_stop(self.reason)


def install_signal_handlers(loop) -> None:
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT call `loop.request_stop(NAME)` (a DriveLoop or a StopRequest)."""
    def handler(signum, frame):
        loop.request_stop(signal.Signals(signum).name)

    # SIGHUP (the terminal or SSH session went away) and SIGQUIT (Ctrl-\) end the process by default
    # without running any cleanup, which would leave the last command on the motors.
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, handler)


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """The drive options (sim.drive and the recorder add their own to them); defaults come from the specs."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_policy_arguments(ap)
    add_motor_arguments(ap)
    add_camera_arguments(ap)
    add_loop_arguments(ap)
    add_safety_arguments(ap)
    add_takeover_arguments(ap)
    add_remote_arguments(ap)
    add_async_arguments(ap)
    add_arm_arguments(ap)
    ap.add_argument("--log", type=Path,
                    help="JSON-lines log of every step (an existing one is renamed, never overwritten)")
    add_log_level_argument(ap)
    return ap


def spec_from_args(args: argparse.Namespace) -> DriveSpec:
    """The DriveSpec a command line asks for. Mode, snapping and move duration not given on it (None) come from
    the bundle's driving record, so the robot drives the policy as it was validated; a log line says which."""
    settings = driving_settings(read_driving(args.bundle), args.mode, args.discrete, args.step_duration)
    log.info("driving settings: %s", settings.describe())
    chosen = {"mode": settings.mode, "discrete": settings.discrete, "step_duration": settings.step_duration}
    return DriveSpec.from_args(argparse.Namespace(**{**vars(args), **chosen}))


@exits_on()  # CommandError: an option combination refused after parsing (--record without --teleop)
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sim" in argv:  # moved in 0.2; this message goes in the release after
        print("error: --sim moved to its own entry: python -m sim.drive --bundle B --seed S ... "
              "(same options, --sim-seed is --seed, --sim-layout is --layout)", file=sys.stderr)
        return 2
    argv, ros_args = split_ros_args(argv)  # `--ros-args ...` as ROS tools take it (ros2 run, launch files)
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    set_ros_args(ros_args)
    try:
        spec = spec_from_args(args)
    except BundleError as e:
        log.error("%s", e)
        return 1
    return drive(spec)


def uses_ros(spec: DriveSpec, camera, motor) -> bool:
    """Whether this run has a ROS 2 part, and so serves /diagnostics, ~/arm, ~/estop and ~/instruction."""
    return (type(motor).__module__ == "runtime.ros2" or type(camera).__module__ == "runtime.ros2"
            or spec.motor.motor == "ros2" or spec.camera.source.startswith("ros2:"))


def drive(spec: DriveSpec, camera=None, motor=None) -> int:
    """Drive as `spec` says. A caller (the simulator) may hand in its own `camera` (a runtime.hardware.Camera)
    and `motor` (a MotorController, connected here if it is not yet); otherwise they come from spec.camera and
    spec.motor. Both are disconnected when the drive ends, and the backend is released. The signal handlers
    come first: a SIGTERM while the bundle, the motor or the camera opens still releases what was opened."""
    stop = StopRequest()
    install_signal_handlers(stop)

    def stopped() -> bool:
        if stop.reason:
            log.warning("%s before driving: stopped; motors at zero", stop.reason)
        return bool(stop.reason)

    with ExitStack() as stack:
        try:
            policy = stack.enter_context(open_remote_policy(spec.policy, spec.remote) if spec.remote
                                         else open_policy(spec.policy))
            check_frame_spacing(bundle_frame_spacing(policy.bundle), spec.loop.mode, spec.loop.step_duration)
            chunks = open_chunks(spec.chunks, policy, spec.policy.discrete, spec.loop.mode)
            if stopped():
                return 0
            if motor is None:
                motor = open_motor(spec.motor, watchdog_s=spec.loop.cmd_timeout, max_speed=spec.safety.max_speed,
                                   printer=(lambda s: print(s, flush=True)))
            elif not motor.is_connected:
                motor.connect()
            stack.callback(motor.disconnect)  # zero and release what was opened (a ROS node, a port)
            if stopped():
                return 0
            if camera is None:
                camera = spec.camera.open(max_age=spec.loop.camera_timeout)
            stack.callback(camera.disconnect)
            if stopped():
                return 0
            switch = ArmSwitch(armed=not spec.arm.start_disarmed)
            for source in open_arm_sources(spec.arm, switch):
                stack.callback(source.close)
            face = None
            if uses_ros(spec, camera, motor):
                face = Ros2DriveInterface(switch, on_instruction=lambda text: stop.loop and
                                          stop.loop.set_instruction(text)).open()
                stack.callback(face.close)
        except (BundleError, BackendError, DeviceError, PromptTooLongError, ValueError) as e:
            log.error("%s", e)
            return 1
        log.info("driving with %s, instruction %r, mode %s, motor %s, %s; Ctrl-C stops (motors go to zero)",
                 policy.backend.describe(), policy.instruction, spec.loop.mode, motor.name, switch.state)
        if not switch.armed:
            log.warning("disarmed: zeros until armed (%s)", arm_hint(spec.arm, face))
        takeover = None
        if spec.takeover is not None:
            try:
                takeover = open_takeover(spec.takeover, spec.safety.max_speed, policy.instruction)
            except DeviceError as e:
                log.error("%s", e)
                return 1
            stack.callback(takeover.close)  # after the loop: the run's episode saved, the device released
        steplog = stack.enter_context(StepLog(spec.log))
        loop = DriveLoop(policy, camera, motor, SafetyGate(spec.safety), spec.loop, steplog, takeover=takeover,
                         chunks=chunks, switch=switch, ros=face,
                         retarget=lambda text: retarget_policy(policy, spec.policy, text))
        stop.attach(loop)
        return loop.run()


def arm_hint(spec: ArmSpec, face) -> str:
    ways = []
    if sys.stdin is not None and sys.stdin.isatty():
        ways.append(f"key {spec.arm_key!r}")
    if spec.gamepad and spec.arm_button is not None:
        ways.append(f"gamepad button {spec.arm_button}")
    if spec.arm_gpio:
        ways.append(f"GPIO {spec.arm_gpio}")
    if face is not None:
        ways.append(f"ros2 service call {face.node_name}/arm std_srvs/srv/Trigger")
    return "arm with " + " or ".join(ways) if ways else "no way to arm is configured: give --gamepad and " \
        "--arm-button, --arm-gpio, or a ROS 2 part (the ~/arm service)"


if __name__ == "__main__":
    sys.exit(main())
