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
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.camera import CameraStalled, EndOfStream, FrameTooOld
from runtime.hardware import SentCommand
from runtime.safety import CommandWatchdog, SafetyConfig, SafetyGate
from runtime.steplog import StepLog


@dataclass(frozen=True)
class DriveConfig:
    mode: str = "continuous"  # "continuous" or "step"
    rate: float = 20.0  # control loop Hz (continuous mode); also how often step mode checks the clock
    step_duration: float = 0.4  # s per move in step mode (the recordings' 0.4 s keypress moves)
    cmd_timeout: float = 0.5  # s: zero when no fresh action arrived within this
    camera_timeout: float = 0.5  # s: a camera read that waits longer counts as a stall
    max_steps: int | None = None  # stop after this many inference steps
    status: bool = True  # one live status line on stderr


@dataclass
class Published:
    action: np.ndarray | None  # robot units, or None = zero now (camera stalled, NaN, ...)
    step: int
    record: dict
    reason: str = ""
    captured: float = -float("inf")  # time.monotonic() at capture of the frame it was computed from
    seq: int = 0  # publication number: step mode's "done" names the publication that finished


class DriveLoop:
    def __init__(self, policy, camera, motor, gate: SafetyGate, config: DriveConfig = DriveConfig(),
                 log: StepLog | None = None, printer=None):
        self.policy, self.camera, self.motor, self.gate, self.config = policy, camera, motor, gate, config
        self.log = log or StepLog(None)
        self.printer = printer or (lambda s: print(s, file=sys.stderr))
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        # Step mode: the inference thread waits until the publication it made is done. "Done" carries
        # the publication's number, so a control tick still finishing the previous step cannot release
        # the next frame while the new move runs (a bare Event could be set between clear and publish).
        self._step_cond = threading.Condition(self._lock)
        self._done_seq = 0
        self._seq = 0
        self._published: Published | None = None
        self.error: BaseException | None = None
        self.steps = 0
        self.ended_by = ""
        self.stop_requested = ""  # set by signal handlers: a plain attribute, never a lock (see request_stop)
        self.watchdog = CommandWatchdog(config.cmd_timeout)
        self.zero_events: list[tuple[float, str]] = []
        self._stage_ms: dict[str, float] = {}
        self._logged: set[int] = set()  # steps whose command was logged (sent at least once)
        self._finished: set[int] = set()  # steps whose move ended (step mode)
        self._step_started: dict[int, float] = {}
        self._rate = 0.0
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=False)  # what the motor side really did last

    # -- inference thread ----------------------------------------------------------
    def _publish(self, action, record: dict, reason: str = "", captured: float = -float("inf")) -> None:
        with self._lock:
            self._seq += 1
            self._published = Published(action, self.steps, record, reason, captured, self._seq)

    def _step_finished(self) -> bool:
        """Step mode: the newest publication's move (or its zero) is over; True before the first."""
        with self._lock:
            return self._done_seq >= self._seq

    def _signal_done(self, current: Published) -> None:
        """Only the publication that is still the newest may release the next frame."""
        with self._step_cond:
            if self._published is current:
                self._done_seq = current.seq  # the newest publication: no later one is done yet
                self._step_cond.notify_all()

    def _wait_step_done(self) -> bool:
        """Step mode: wait until the newest publication is done; False when the loop is stopping."""
        with self._step_cond:
            while self._done_seq < self._seq:
                if self.stop_event.is_set():
                    return False
                self._step_cond.wait(0.01)
        return not self.stop_event.is_set()

    def _inference(self) -> None:
        try:
            last = time.monotonic()
            while not self.stop_event.is_set():
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    self.ended_by = "max-steps"
                    self._drain()
                    return
                if self.config.mode == "step" and not self._wait_step_done():
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
                self._stage_ms = record["timings_ms"]
                now = time.monotonic()
                self._rate = 0.8 * self._rate + 0.2 / max(now - last, 1e-6) if self._rate else 1 / max(now - last, 1e-6)
                last = now
        except BaseException as e:  # any exception: the control thread zeroes and stops
            self.error = e
        finally:
            self.stop_event.set()

    def _drain(self) -> None:
        """At a normal end, let the last action be executed (its whole step in step mode) before stopping."""
        deadline = time.monotonic() + self.config.cmd_timeout + self.config.step_duration
        last = self.steps - 1
        while time.monotonic() < deadline and not self.stop_event.is_set():
            done = self._step_finished() if self.config.mode == "step" else last in self._logged
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
        first_send = current.step not in self._logged
        if first_send:
            # Age counts from the frame's capture, not from when the action was published: an action
            # computed from an old frame describes a world that has moved on.
            self.watchdog.feed(current.captured)
        started = self._step_started.setdefault(current.step, now)  # a step's clock starts at its first send
        if self.config.mode == "step" and (current.step in self._finished
                                           or now - started >= self.config.step_duration):
            self._send_zero(now, "step done")
            self._finished.add(current.step)
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
            self._logged.add(current.step)
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=list(result.velocity),
                                sent=result.sent, acknowledged=result.acknowledged))
            self._status(result.velocity)

    def _status(self, sent) -> None:
        if not self.config.status:
            return
        t = self._stage_ms
        line = (f"\r{self._rate:5.1f} Hz | prep {t.get('preprocess', 0):5.1f} vis {t.get('vision', 0):6.1f} "
                f"lang {t.get('language', 0):6.1f} head {t.get('head', 0):5.1f} ms | "
                f"cmd {sent[0]:+.2f} {sent[1]:+.2f} {sent[2]:+.2f} | step {self.steps}")
        sys.stderr.write(line)
        sys.stderr.flush()

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
        if self.config.status:
            sys.stderr.write("\n")
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


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def install_signal_handlers(loop: DriveLoop) -> None:
    def handler(signum, frame):
        loop.request_stop(signal.Signals(signum).name)

    # SIGHUP (the terminal or SSH session went away) and SIGQUIT (Ctrl-\) end the process by default
    # without running any cleanup, which would leave the last command on the motors.
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, handler)


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    """The drive options (sim.drive adds its own to them)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="bundle folder from export.to_onnx")
    ap.add_argument("--motor", help="motor side: serial (with --serial PORT), dry-run, ros2, package.module:ClassName "
                                    "(a runtime.hardware.MotorController subclass, constructed with no arguments), "
                                    "or an entry point name in group mobile_vla.motors (docs/motors.md)")
    port = ap.add_mutually_exclusive_group()
    port.add_argument("--serial", help="motor controller port, e.g. /dev/ttyUSB0 or /dev/mobile-vla-motor "
                                       "(alone, it means --motor serial)")
    port.add_argument("--dry-run", action="store_true", help="no motors: print the commands (--motor dry-run)")
    ap.add_argument("--baudrate", type=int, default=115200)
    ap.add_argument("--cmd-vel-topic", default="/cmd_vel", help="--motor ros2: the velocity topic")
    ap.add_argument("--cmd-vel-stamped", action="store_true",
                    help="--motor ros2: publish geometry_msgs/TwistStamped (Jazzy's base controllers), "
                         "not Twist (Humble's)")
    ap.add_argument("--cmd-vel-frame", default="base_link", help="--motor ros2 --cmd-vel-stamped: header.frame_id")
    ap.add_argument("--wheels", choices=("mecanum", "omni3", "differential"),
                    help="send wheel speeds for this base instead of a body velocity")
    ap.add_argument("--camera", default="csi",
                    help="device index, /dev/videoN, 'csi', a GStreamer pipeline, a video, an image folder, an .h5 "
                         "episode, or ros2:/topic (sensor_msgs/Image; a topic ending in /compressed: CompressedImage)")
    ap.add_argument("--width", type=int, help="camera width (default 1280)")
    ap.add_argument("--height", type=int, help="camera height (default 720)")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--backend", default="auto", choices=("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu"))
    ap.add_argument("--variant", default="fp32", help="ONNX variant for ONNX Runtime backends (fp32, fp16, int8)")
    ap.add_argument("--verify", choices=("quick", "full"), default="quick",
                    help="bundle check at start: quick (big files by size/times since their last full hash) or full")
    ap.add_argument("--instruction", help="what to do (default: the bundle's default instruction)")
    ap.add_argument("--chunk-mode", default="first", choices=("first", "chunk", "ensemble"))
    ap.add_argument("--discrete", action="store_true",
                    help="snap each axis to the nearest demonstrated move (-range, 0, +range), as recorded")
    ap.add_argument("--mode", default="continuous", choices=("continuous", "step"))
    ap.add_argument("--rate", type=float, default=20.0, help="control loop Hz")
    ap.add_argument("--step-duration", type=float, default=0.4)
    ap.add_argument("--cmd-timeout", type=float, default=0.5)
    ap.add_argument("--camera-timeout", type=float, default=0.5)
    ap.add_argument("--max-speed", type=float, nargs=3, default=(0.5, 0.5, 1.0), metavar=("VX", "VY", "WZ"))
    ap.add_argument("--max-accel", type=float, nargs=3, default=(2.0, 2.0, 4.0), metavar=("AX", "AY", "AW"))
    ap.add_argument("--dead-zone", type=float, default=0.0)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--log", type=Path, help="JSON-lines log of every step (an existing one is renamed, never overwritten)")
    ap.add_argument("--quiet", action="store_true", help="no live status line")
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sim" in argv:  # moved in 0.2; this message goes in the release after
        print("error: --sim moved to its own entry: python -m sim.drive --bundle B --seed S ... "
              "(same options, --sim-seed is --seed, --sim-layout is --layout)", file=sys.stderr)
        return 2
    return drive(build_parser().parse_args(argv))


def drive(args, camera=None, motor=None) -> int:
    """The drive job for parsed `args`. A caller (the simulator) may hand in its own `camera` (a
    runtime.hardware.Camera) and `motor` (a MotorController, connected here if it is not yet); otherwise
    they come from --camera and --motor. Both are closed/disconnected when the drive ends."""
    from runtime.backends.base import BackendError
    from runtime.backends.registry import make_backend
    from runtime.behaviours import with_behaviours
    from runtime.bundle import BundleError, load_bundle
    from runtime.camera import open_camera
    from runtime.hardware import DeviceError
    from runtime.motor_select import open_motor
    from runtime.policy import Policy
    from runtime.prompt import PromptTooLongError

    backend = None
    try:
        bundle = load_bundle(args.bundle, verify=args.verify)
        backend = make_backend(bundle, args.backend, variant=args.variant).activate()
        policy = with_behaviours(Policy(bundle, backend, instruction=args.instruction), args.chunk_mode,
                                 args.discrete)
        if motor is None:
            motor = open_motor(args, printer=(lambda s: print(s, flush=True)))
        elif not motor.is_connected:
            motor.connect()
        if camera is None:
            try:
                camera = open_camera(args.camera, args.width or 1280, args.height or 720, args.fps,
                                     max_age=args.camera_timeout)
            except BaseException:
                motor.disconnect()  # zero and release what was already opened (a ROS node, a port)
                raise
    except (BundleError, BackendError, DeviceError, PromptTooLongError) as e:
        if backend is not None:  # a TensorRT backend holds a CUDA context on its thread: release it
            backend.deactivate()
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"driving with {backend.describe()}, instruction {policy.instruction!r}, mode {args.mode}, "
          f"motor {motor.name}; Ctrl-C stops (motors go to zero)", file=sys.stderr)
    gate = SafetyGate(SafetyConfig(tuple(args.max_speed), tuple(args.max_accel), args.dead_zone, args.cmd_timeout))
    config = DriveConfig(args.mode, args.rate, args.step_duration, args.cmd_timeout, args.camera_timeout,
                         args.max_steps, status=not args.quiet)
    with StepLog(args.log) as log:
        loop = DriveLoop(policy, camera, motor, gate, config, log)
        install_signal_handlers(loop)
        try:
            code = loop.run()
        finally:
            camera.close()
            motor.disconnect()
            backend.deactivate()
    return code


if __name__ == "__main__":
    sys.exit(main())
