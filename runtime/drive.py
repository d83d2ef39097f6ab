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
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.camera import CameraSpec, CameraStalled, EndOfStream, FrameTooOld, add_camera_arguments
from runtime.hardware import SentCommand
from runtime.logs import add_log_level_argument, setup_logging
from runtime.motor_select import MotorSpec, add_motor_arguments
from runtime.policy_setup import PolicySpec, add_policy_arguments
from runtime.safety import CommandWatchdog, SafetyConfig, SafetyGate, add_safety_arguments
from runtime.status_line import StatusLine
from runtime.step_handshake import StepHandshake
from runtime.steplog import StepLog

log = logging.getLogger(__name__)
MODES = ("continuous", "step")


@dataclass(frozen=True)
class DriveConfig:
    mode: str = "continuous"  # "continuous" or "step"
    rate: float = 20.0  # control loop Hz (continuous mode); also how often step mode checks the clock
    step_duration: float = 0.4  # s per move in step mode (the recordings' 0.4 s keypress moves)
    cmd_timeout: float = 0.5  # s: zero when no fresh action arrived within this (ros2_control's default)
    camera_timeout: float = 0.5  # s: a camera read that waits longer, or a frame older, counts as a stall
    max_steps: int | None = None  # stop after this many inference steps
    status: bool = True  # one live status line on stderr

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DriveConfig":
        return cls(args.mode, args.rate, args.step_duration, args.cmd_timeout, args.camera_timeout,
                   args.max_steps, status=not args.quiet)


def add_loop_arguments(ap: argparse.ArgumentParser) -> None:
    d = DriveConfig
    ap.add_argument("--mode", default=d.mode, choices=MODES)
    ap.add_argument("--rate", type=float, default=d.rate, help="control loop Hz")
    ap.add_argument("--step-duration", type=float, default=d.step_duration, help="--mode step: seconds per move")
    ap.add_argument("--cmd-timeout", type=float, default=d.cmd_timeout,
                    help="zero when the newest action's frame is older than this (s); also the serial "
                         "controller's own watchdog")
    ap.add_argument("--camera-timeout", type=float, default=d.camera_timeout,
                    help="a camera read that waits longer, or a frame older, is a stall (s)")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--quiet", action="store_true", help="no live status line")


@dataclass(frozen=True)
class DriveSpec:
    policy: PolicySpec  # which bundle, backend, instruction and behaviours
    motor: MotorSpec = MotorSpec()  # which motor side (ignored when drive() is handed a motor)
    camera: CameraSpec = CameraSpec()  # which camera (ignored when drive() is handed a camera)
    loop: DriveConfig = DriveConfig()  # mode, rates and timeouts
    safety: SafetyConfig = SafetyConfig()  # speed and acceleration limits, dead zone
    log: Path | None = None  # JSON-lines log of every step; None: no log

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DriveSpec":
        return cls(PolicySpec.from_args(args), MotorSpec.from_args(args), CameraSpec.from_args(args),
                   DriveConfig.from_args(args), SafetyConfig.from_args(args), args.log)


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

    def follow(self, step: int) -> "StepProgress":
        return self if step == self.step else StepProgress(step)


class DriveLoop:
    def __init__(self, policy, camera, motor, gate: SafetyGate, config: DriveConfig = DriveConfig(),
                 log: StepLog | None = None, printer=None):
        self.policy, self.camera, self.motor, self.gate, self.config = policy, camera, motor, gate, config
        self.log = log or StepLog(None)
        self.printer = printer or log_info
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
        self.zero_events: list[tuple[float, str]] = []
        self._progress = StepProgress()
        self.last_logged_step = -1  # the newest step whose command went out (read by the drain at the end)
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=False)  # what the motor side really did last

    # -- inference thread ----------------------------------------------------------
    def _publish(self, action, record: dict, reason: str = "", captured: float = -float("inf")) -> None:
        with self._lock:
            seq = self.handshake.published()
            self._published = Published(action, self.steps, record, reason, captured, seq)

    def _signal_done(self, current: Published) -> None:
        self.handshake.done(current.seq)

    def _inference(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    self.ended_by = "max-steps"
                    self._drain()
                    return
                if self.config.mode == "step" and not self.handshake.wait_done(self.stop_event):
                    return
                try:
                    frame = self.camera.read(timeout=self.config.camera_timeout)
                except EndOfStream:
                    self.ended_by = "end of camera stream"
                    self._drain()
                    return
                except (CameraStalled, FrameTooOld) as e:  # stop now, keep trying; other camera errors end the run
                    self._publish(None, {}, f"camera: {e}")
                    continue
                t0 = time.monotonic()
                out = self.policy.infer(frame.image)
                t1 = time.monotonic()
                record = {"type": "step", "step": self.steps, "t_capture": frame.stamp, "t_infer_start": t0,
                          "t_action": t1, "timings_ms": {k: round(v * 1e3, 3) for k, v in out.timings.items()},
                          "action": [float(v) for v in out.action]}
                self._publish(out.action if out.finite else None, record, "" if out.finite else "non-finite action",
                              captured=frame.stamp)
                self.steps += 1
                self.status.inferred(time.monotonic(), record["timings_ms"])
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
    def _send(self, command) -> SentCommand:
        vx, vy, wz = (float(v) for v in command)
        result = self.motor.send_velocity(vx, vy, wz)
        if not isinstance(result, SentCommand):  # the log must say what reached the robot, not guess
            raise TypeError(f"{type(self.motor).__name__}.send_velocity returned {type(result).__name__}, not "
                            f"runtime.hardware.SentCommand (see docs/motors.md)")
        self.last_command = result
        return result

    def _send_zero(self, now: float, reason: str) -> None:
        was_moving = any(self.last_command.velocity)
        result = self._send(self.gate.zero(now))  # explicit zeros keep the controller's watchdog fed
        if was_moving or not self.zero_events or self.zero_events[-1][1] != reason:
            self.zero_events.append((now, reason))
            self.log.write({"type": "zero", "reason": reason, "t": now, "sent": result.sent,
                            "acknowledged": result.acknowledged})

    def _tick(self, now: float, current: Published | None) -> None:
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
            # Age counts from the frame's capture, not from when the action was published: an action
            # computed from an old frame describes a world that has moved on.
            self.watchdog.feed(current.captured)
        if progress.started is None:
            progress.started = now  # a step's clock starts at its first send
        if self.config.mode == "step" and (progress.finished or now - progress.started >= self.config.step_duration):
            self._send_zero(now, "step done")
            progress.finished = True
            self._signal_done(current)  # the inference thread may take the next frame
            return
        if not self.watchdog.fresh(now):
            self._send_zero(now, "command timeout")
            return
        if first_send and self.config.mode == "step":
            # A move whose frame was fresh when it started runs its recorded --step-duration (the
            # demonstrations' 0.4 s key presses) instead of being cut at capture + --cmd-timeout; a stale
            # frame still never starts one, and the move stays bounded by its own clock and the timeout.
            self.watchdog.feed(now)
        result = self._send(self.gate.filter(current.action, now))
        if first_send:
            progress.logged = True
            self.last_logged_step = current.step
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=list(result.velocity),
                                sent=result.sent, acknowledged=result.acknowledged))
            self.status.show(result.velocity, self.steps)

    def run(self) -> int:
        """Drive until max steps, end of stream, a signal or an error. Motors end at zero. Returns an exit code."""
        worker = threading.Thread(target=self._inference, name="inference", daemon=True)
        period = 1.0 / self.config.rate
        worker.start()
        try:
            next_tick = time.monotonic()
            while not self.stop_event.is_set() and not self.stop_requested:
                now = time.monotonic()
                with self._lock:
                    current = self._published
                self._tick(now, current)
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
                else:
                    next_tick = time.monotonic()
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
        self.zero_events.append((now, "shutdown"))
        self.log.write({"type": "zero", "reason": "shutdown", "t": now, "confirmed": confirmed})


def log_info(message: str) -> None:
    """The loop's closing line as an event: an error at error level, without a second 'error:' prefix."""
    if message.startswith("error: "):
        log.error("%s", message[len("error: "):])
    else:
        log.info("%s", message)


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def install_signal_handlers(loop: DriveLoop) -> None:
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
    ap.add_argument("--log", type=Path, help="JSON-lines log of every step (an existing one is renamed, never overwritten)")
    add_log_level_argument(ap)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sim" in argv:  # moved in 0.2; this message goes in the release after
        print("error: --sim moved to its own entry: python -m sim.drive --bundle B --seed S ... "
              "(same options, --sim-seed is --seed, --sim-layout is --layout)", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return drive(DriveSpec.from_args(args))


def drive(spec: DriveSpec, camera=None, motor=None) -> int:
    """Drive as `spec` says. A caller (the simulator) may hand in its own `camera` (a runtime.hardware.Camera)
    and `motor` (a MotorController, connected here if it is not yet); otherwise they come from spec.camera and
    spec.motor. Both are disconnected when the drive ends, and the backend is released."""
    from contextlib import ExitStack

    from runtime.backends.base import BackendError
    from runtime.bundle import BundleError
    from runtime.hardware import DeviceError
    from runtime.motor_select import open_motor
    from runtime.policy_setup import open_policy
    from runtime.prompt import PromptTooLongError

    with ExitStack() as stack:
        try:
            policy = stack.enter_context(open_policy(spec.policy))
            if motor is None:
                motor = open_motor(spec.motor, watchdog_s=spec.loop.cmd_timeout,
                                   printer=(lambda s: print(s, flush=True)))
            elif not motor.is_connected:
                motor.connect()
            stack.callback(motor.disconnect)  # zero and release what was opened (a ROS node, a port)
            if camera is None:
                camera = spec.camera.open(max_age=spec.loop.camera_timeout)
            stack.callback(camera.disconnect)
        except (BundleError, BackendError, DeviceError, PromptTooLongError) as e:
            log.error("%s", e)
            return 1
        log.info("driving with %s, instruction %r, mode %s, motor %s; Ctrl-C stops (motors go to zero)",
                 policy.backend.describe(), policy.instruction, spec.loop.mode, motor.name)
        steplog = stack.enter_context(StepLog(spec.log))
        loop = DriveLoop(policy, camera, motor, SafetyGate(spec.safety), spec.loop, steplog)
        install_signal_handlers(loop)
        return loop.run()


if __name__ == "__main__":
    sys.exit(main())
