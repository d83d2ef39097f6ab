"""The robot's main job: camera -> policy -> safety -> motor controller.

    python -m runtime.drive --bundle bundle/ --serial /dev/ttyUSB0 --camera csi
    python -m runtime.drive --bundle bundle/ --dry-run --camera episode.h5 --max-steps 18
    python -m runtime.drive --bundle bundle/ --serial /tmp/mobile-vla-motor --camera 0 --mode step
    python -m sim.drive --bundle bundle/ --seed 3 --mode step --dead-zone 0.1 --max-steps 30   # the simulated robot

Two threads. The inference thread reads the newest camera frame, runs the
policy (preprocess -> vision -> language -> ring -> head) and publishes the
action with the time it arrived. The control thread (this one) runs at
`--rate` Hz and alone talks to the motor controller: it sends the action
through the safety gate while it is fresh, and zero when it is older than
`--cmd-timeout` (inference stalled), when the camera stalled, on NaN/inf, on
any exception, on SIGINT/SIGTERM and at exit. So a hung model or camera can
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

from runtime.camera import CameraError, EndOfStream
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
    arrived: float  # time.monotonic() when it was published
    step: int
    record: dict
    reason: str = ""


class DriveLoop:
    def __init__(self, policy, camera, motor, gate: SafetyGate, config: DriveConfig = DriveConfig(),
                 log: StepLog | None = None, printer=None):
        self.policy, self.camera, self.motor, self.gate, self.config = policy, camera, motor, gate, config
        self.log = log or StepLog(None)
        self.printer = printer or (lambda s: print(s, file=sys.stderr))
        self.stop_event = threading.Event()
        self.step_done = threading.Event()
        self.step_done.set()
        self._lock = threading.Lock()
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

    # -- inference thread ----------------------------------------------------------
    def _publish(self, action, record: dict, reason: str = "") -> None:
        with self._lock:
            self._published = Published(action, time.monotonic(), self.steps, record, reason)

    def _inference(self) -> None:
        try:
            last = time.monotonic()
            while not self.stop_event.is_set():
                if self.config.max_steps is not None and self.steps >= self.config.max_steps:
                    self.ended_by = "max-steps"
                    self._drain()
                    return
                if self.config.mode == "step":
                    while not self.step_done.wait(0.01):
                        if self.stop_event.is_set():
                            return
                try:
                    frame = self.camera.read(timeout=self.config.camera_timeout)
                except EndOfStream:
                    self.ended_by = "end of camera stream"
                    self._drain()
                    return
                except CameraError as e:  # stalled or too old: stop now, keep trying
                    self._publish(None, {}, f"camera: {e}")
                    continue
                t0 = time.monotonic()
                out = self.policy.infer(frame.image)
                t1 = time.monotonic()
                record = {"type": "step", "step": self.steps, "t_capture": frame.stamp, "t_infer_start": t0,
                          "t_action": t1, "timings_ms": {k: round(v * 1e3, 3) for k, v in out.timings.items()},
                          "action": [float(v) for v in out.action]}
                if self.config.mode == "step":
                    self.step_done.clear()
                self._publish(out.action if out.finite else None, record, "" if out.finite else "non-finite action")
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
            done = self.step_done.is_set() if self.config.mode == "step" else last in self._logged
            if done or last < 0:
                return
            time.sleep(0.005)

    # -- control thread ------------------------------------------------------------
    def _send_zero(self, now: float, reason: str) -> None:
        was_moving = any(self.motor.last_sent)
        self.motor.send_velocity(*self.gate.zero(now))  # explicit zeros keep the controller's watchdog fed
        if was_moving or not self.zero_events or self.zero_events[-1][1] != reason:
            self.zero_events.append((now, reason))
            self.log.write({"type": "zero", "reason": reason, "t": now})

    def _tick(self, now: float, current: Published | None) -> None:
        if current is None:
            self._send_zero(now, "no action yet")
            return
        if current.action is None:
            self._send_zero(now, current.reason)
            self.step_done.set()
            return
        first_send = current.step not in self._logged
        if first_send:
            self.watchdog.feed(current.arrived)
        started = self._step_started.setdefault(current.step, now)  # a step's clock starts at its first send
        if self.config.mode == "step" and (current.step in self._finished
                                           or now - started >= self.config.step_duration):
            self._send_zero(now, "step done")
            self._finished.add(current.step)
            self.step_done.set()  # the inference thread may take the next frame
            return
        if not self.watchdog.fresh(now):
            self._send_zero(now, "command timeout")
            return
        sent = self.motor.send_velocity(*self.gate.filter(current.action, now))
        if first_send:
            self._logged.add(current.step)
            # what really happened: a lost port or a silent controller is logged as such, not as a command
            self.log.write(dict(current.record, t_serial=time.monotonic(), command=[float(v) for v in sent.velocity],
                                sent=sent.sent, acknowledged=sent.acknowledged))
            self._status(sent.velocity)

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
        for _ in range(3):
            try:
                if self.motor.stop():
                    break
            except Exception:
                time.sleep(0.02)
        self.zero_events.append((now, "shutdown"))
        self.log.write({"type": "zero", "reason": "shutdown", "t": now})


def install_signal_handlers(loop: DriveLoop) -> None:
    def handler(signum, frame):
        loop.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def build_parser(motor_required: bool = True, description: str = __doc__) -> argparse.ArgumentParser:
    """The drive options. `motor_required=False` for callers that hand in their own motor (sim.drive)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="bundle folder from export.to_onnx")
    port = ap.add_mutually_exclusive_group(required=motor_required)
    port.add_argument("--serial", help="motor controller port, e.g. /dev/ttyUSB0 or /dev/mobile-vla-motor")
    port.add_argument("--dry-run", action="store_true", help="no serial: print the commands")
    ap.add_argument("--baudrate", type=int, default=115200)
    ap.add_argument("--wheels", choices=("mecanum", "omni3", "differential"),
                    help="send wheel speeds for this base instead of a body velocity")
    ap.add_argument("--camera", default="csi",
                    help="device index, /dev/videoN, 'csi', a GStreamer pipeline, a video, an image folder or an .h5 episode")
    ap.add_argument("--width", type=int, help="camera width (default 1280)")
    ap.add_argument("--height", type=int, help="camera height (default 720)")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--backend", default="auto", choices=("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu"))
    ap.add_argument("--variant", default="fp32", help="ONNX variant for ONNX Runtime backends (fp32, fp16, int8)")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="--backend trt: replay each engine as a CUDA graph (one per head length 1..W)")
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
    """Run the loop with the parsed options. A caller (sim.drive, a test) may hand in its own camera and motor."""
    from runtime.backends.base import BackendError
    from runtime.backends.registry import make_backend
    from runtime.behaviours import with_behaviours
    from runtime.bundle import BundleError, load_bundle
    from runtime.camera import open_camera
    from runtime.motor import DryRunMotor, MotorError, SerialMotorController
    from runtime.policy import Policy
    from runtime.prompt import PromptTooLongError

    try:
        bundle = load_bundle(args.bundle, verify=getattr(args, "verify", "quick"))
        backend = make_backend(bundle, args.backend, variant=args.variant,
                               cuda_graph=getattr(args, "cuda_graph", False)).activate()
        policy = with_behaviours(Policy(bundle, backend, instruction=args.instruction), args.chunk_mode,
                                 args.discrete)
        if motor is not None:
            pass
        elif args.dry_run:
            motor = DryRunMotor(printer=(lambda s: print(s, flush=True)))
        else:
            from runtime.kinematics import make_base

            wheels = make_base(args.wheels) if args.wheels else None
            motor = SerialMotorController(args.serial, args.baudrate, watchdog_ms=int(args.cmd_timeout * 1000),
                                          wheels=wheels).connect()
        if camera is None:
            camera = open_camera(args.camera, args.width or 1280, args.height or 720, args.fps,
                                 max_age=args.camera_timeout)
    except (BundleError, BackendError, MotorError, CameraError, PromptTooLongError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"driving with {backend.describe()}, instruction {policy.instruction!r}, mode {args.mode}; "
          f"Ctrl-C stops (motors go to zero)", file=sys.stderr)
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
