"""The drive loop against the controller emulator on a real pty, with faults injected at the edges."""

import math
import signal
import threading
import time

import numpy as np
import pytest

from runtime.cameras.select import open_camera
from runtime.control.config import DriveConfig
from runtime.control.loop import DriveLoop
from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.control.steplog import StepLog, read_log, replay_commands
from runtime.hardware import Camera, CameraStalled, SentCommand
from runtime.motors.dry_run import DryRunMotor
from runtime.motors.serial_controller import SerialMotorController
from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy
from tests.helpers.drive_doubles import RecordingDryRun, ScriptedPolicy
from tests.helpers.processes import drive_process, finish, run_drive

RATE = 50.0
PERIOD = 1 / RATE
TIMEOUT = 0.3
SLACK = 0.08  # serial round trip + thread scheduling on a loaded 2-core CI machine
LIMITS = SafetyConfig(max_speed=(0.5, 0.5, 1.0), max_accel=(math.inf,) * 3, dead_zone=0.0)


@pytest.fixture
def bundle(tiny_bundle_dir):
    return load_bundle(tiny_bundle_dir)


class StallingBackend:
    """Wraps a real backend; sleeps inside encode_frame from call `at` on (inference stalls)."""

    def __init__(self, inner, at, sleep=None, nan_at=None):
        self.inner, self.at, self.sleep, self.nan_at = inner, at, sleep, nan_at
        self.calls = 0

    @property
    def timings(self):
        return self.inner.timings

    def encode_frame(self, *a):
        self.calls += 1
        if self.sleep and self.calls > self.at:
            time.sleep(self.sleep)
        return self.inner.encode_frame(*a)

    def predict_chunk(self, features):
        chunk = self.inner.predict_chunk(features)
        if self.nan_at is not None and self.calls > self.nan_at:
            chunk = np.full_like(chunk, np.nan)
        return chunk


class StallingCamera:
    """Wraps a replay source; after `at` frames it delivers nothing (reads time out)."""

    def __init__(self, inner, at):
        self.inner, self.at, self.count = inner, at, 0

    def read(self, timeout=0.5):
        self.count += 1
        if self.count > self.at:
            time.sleep(timeout)
            raise CameraStalled(f"no frame for {timeout} s")
        return self.inner.read(timeout)

    def disconnect(self):
        pass


def run_loop(bundle, camera, emulator, backend=None, config=None, log=None, during=None):
    with OnnxRuntimeBackend(bundle) as ort_backend:
        policy = Policy(bundle, backend(ort_backend) if backend else ort_backend)
        motor = SerialMotorController(emulator.port, watchdog_ms=1000, reconnect_s=0.05).connect()
        loop = DriveLoop(policy, camera, motor, SafetyGate(LIMITS),
                         config or DriveConfig(rate=RATE, cmd_timeout=TIMEOUT, status=False), log,
                         printer=lambda s: None)
        if during:
            during(loop)
        code = loop.run()
        motor.disconnect()
    return loop, code


def zero_after(emulator, t):
    """Time at which the emulator had zero velocity after moment t (None if never)."""
    for r in emulator.commands():
        if r.time >= t and r.velocity == (0.0, 0.0, 0.0):
            return r.time
    return None


def test_emulator_receives_the_policys_actions_after_limits(bundle, episode_file, emulator, tmp_path):
    cfg = DriveConfig(mode="step", rate=RATE, step_duration=0.05, cmd_timeout=TIMEOUT, status=False)
    log_path = tmp_path / "drive.jsonl"
    with StepLog(log_path) as log:
        loop, code = run_loop(bundle, open_camera(str(episode_file)), emulator, config=cfg, log=log)
    assert code == 0 and loop.ended_by == "end of camera stream" and loop.steps == 12
    # what the policy produces offline on the same frames, through the same limits
    with OnnxRuntimeBackend(bundle) as backend:
        policy = Policy(bundle, backend)
        cam = open_camera(str(episode_file))
        expected = [np.clip(np.pad(policy.infer(cam.read().image).action, (0, 1)), -0.5, 0.5) for _ in range(12)]
    moves = [r.velocity for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]
    distinct = [v for i, v in enumerate(moves) if i == 0 or v != moves[i - 1]]
    assert len(distinct) == 12
    assert np.allclose(np.array(distinct), np.array(expected, dtype=np.float32), atol=1e-6)
    assert emulator.velocity == (0.0, 0.0, 0.0)
    records = read_log(log_path)
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) == 12
    for r in steps:
        assert r["t_capture"] <= r["t_infer_start"] <= r["t_action"] <= r["t_serial"]
        assert set(r["timings_ms"]) >= {"preprocess", "vision", "language", "head"}
    assert records[-1] == {"type": "zero", "reason": "shutdown", "t": records[-1]["t"], "confirmed": True}
    # the log replays onto a controller
    emulator.history.clear()
    with SerialMotorController(emulator.port) as motor:
        assert replay_commands(records, motor, speed=10.0) == 12
    assert len([r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]) == 12


def test_inference_stall_zeroes_within_timeout(bundle, episode_file, emulator):
    loop, code = run_loop(bundle, open_camera(str(episode_file)), emulator,
                          backend=lambda b: StallingBackend(b, at=3, sleep=1.0),
                          config=DriveConfig(rate=RATE, cmd_timeout=TIMEOUT, max_steps=5, status=False))
    assert code == 0
    moving = [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]
    last_fresh = max(r.time for r in moving)
    stopped = zero_after(emulator, last_fresh)
    # the action was published just before its first send; zero must follow within timeout + a period
    assert stopped is not None and stopped - last_fresh <= TIMEOUT + PERIOD + SLACK
    assert any(reason == "command timeout" for _, reason in loop.health.zero_events)


def test_camera_stall_mid_run_gives_an_immediate_zero(bundle, episode_file, emulator):
    camera = StallingCamera(open_camera(str(episode_file)), at=3)
    # no max_steps: the loop keeps trying the camera; stop it from outside after the stall
    def stop_later(loop):

        threading.Timer(1.0, loop.stop_event.set).start()

    loop, code = run_loop(bundle, camera, emulator,
                          config=DriveConfig(rate=RATE, cmd_timeout=5.0, camera_timeout=0.1, status=False),
                          during=stop_later)
    assert code == 0
    reasons = [reason for _, reason in loop.health.zero_events]
    assert any(r.startswith("camera:") for r in reasons)
    moving = [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]
    # cmd_timeout is 5 s here, so only the stall detection can have stopped it this fast
    assert zero_after(emulator, moving[-1].time) - moving[-1].time <= 0.1 + PERIOD + SLACK


def test_nan_action_zeroes_at_once(bundle, episode_file, emulator):
    loop, code = run_loop(bundle, open_camera(str(episode_file)), emulator,
                          backend=lambda b: StallingBackend(b, at=0, sleep=0.1, nan_at=2),
                          config=DriveConfig(rate=RATE, cmd_timeout=5.0, max_steps=4, status=False))
    assert any(reason == "non-finite action" for _, reason in loop.health.zero_events)
    moving = [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]
    assert zero_after(emulator, moving[-1].time) - moving[-1].time <= PERIOD + SLACK + 0.2


def test_exception_in_inference_zeroes_and_fails(bundle, episode_file, emulator):
    class Exploding(StallingBackend):
        def encode_frame(self, *a):
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("CUDA error: an illegal memory access")
            return self.inner.encode_frame(*a)

    loop, code = run_loop(bundle, open_camera(str(episode_file)), emulator, backend=lambda b: Exploding(b, at=0))
    assert code == 1 and "illegal memory access" in str(loop.error)
    assert emulator.velocity == (0.0, 0.0, 0.0)
    assert emulator.commands()[-1].command == "STOP"


def test_port_unplugged_and_replugged_mid_run_resumes(bundle, episode_file, emulator, tmp_path):

    frames = open_camera(str(episode_file))

    class SlowReplay:  # ~12 frames over ~1.2 s so the unplug lands mid-run
        def read(self, timeout=0.5):
            time.sleep(0.1)
            return frames.read(timeout)

        def disconnect(self):
            pass

    def cable(loop):
        def pull():
            time.sleep(0.35)
            emulator.unplug()
            time.sleep(0.25)
            emulator.replug()
        threading.Thread(target=pull, daemon=True).start()

    loop, code = run_loop(bundle, SlowReplay(), emulator, during=cable,
                          config=DriveConfig(rate=RATE, cmd_timeout=TIMEOUT, status=False))
    # every frame was read: inferred, or dropped unseen when captured before the epoch the fault began
    assert code == 0 and loop.steps + loop.inference.dropped_frames == 12 and loop.inference.dropped_frames <= 3
    unplug = next(r for r in emulator.commands() if r.command == "UNPLUG")
    assert unplug.velocity == (0.0, 0.0, 0.0)
    after = [r for r in emulator.commands("SET_VELOCITY") if r.time > unplug.time and any(r.velocity)]
    assert after, "driving did not resume after the port came back"
    assert loop.motor.reconnects >= 1
    assert emulator.velocity == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_signals_to_the_drive_process_stop_the_motors(tiny_bundle_dir, episode_file, emulator, tmp_path, signum):
    """SIGHUP (terminal or SSH session gone) and SIGQUIT (Ctrl-\\) used to kill the process with no
    cleanup, leaving the last command on the motors until the controller's own watchdog fired."""
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    from runtime.cameras.sample_frames import sample_frames

    for i, f in enumerate(sample_frames(300, height=48, width=64)):
        cv2.imwrite(str(frames / f"{i:04d}.png"), f)
    with drive_process("--bundle", str(tiny_bundle_dir), "--serial", emulator.port, "--camera", str(frames),
                       "--rate", "50", "--quiet", "--log", str(tmp_path / "log.jsonl")) as proc:
        deadline = time.monotonic() + 60
        while not [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]:
            assert proc.poll() is None, finish(proc)[1]
            assert time.monotonic() < deadline, "drive never moved"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = finish(proc, timeout=10)
    assert proc.returncode == 0, err
    assert "motors at zero" in err and signal.Signals(signum).name in err
    stop = next(r for r in emulator.commands() if r.time >= sent and r.velocity == (0.0, 0.0, 0.0))
    assert stop.time - sent <= 0.5 + PERIOD + SLACK
    # zeroed by the driver (STOP or a zero velocity), not by the controller's own watchdog
    assert stop.command in ("STOP", "SET_VELOCITY")
    assert emulator.velocity == (0.0, 0.0, 0.0)


def test_signal_handler_takes_no_lock_the_interrupted_thread_may_hold(bundle, episode_file):
    """A handler runs between two bytecodes of the main thread, which may be inside stop_event.wait()
    holding the event's lock; a handler that took that lock deadlocked a CI run. Here another thread
    holds the lock while the handler runs: it must return at once and the loop must still stop."""
    from runtime.control.signals import install_signal_handlers

    camera = open_camera(str(episode_file), 64, 48, 30)
    loop = DriveLoop(Policy(bundle, OnnxRuntimeBackend(bundle).activate()), camera, DryRunMotor().connect(),
                     SafetyGate(LIMITS), DriveConfig(rate=RATE, cmd_timeout=TIMEOUT, status=False))
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        install_signal_handlers(loop)
        handler = signal.getsignal(signal.SIGTERM)
        with loop.stop_event._cond:  # what the interrupted main thread may be holding
            import threading

            t = threading.Thread(target=handler, args=(signal.SIGTERM, None), daemon=True)
            t.start()
            t.join(timeout=2)
            assert not t.is_alive(), "the signal handler blocked on the drive loop's lock"
        started = time.monotonic()
        assert loop.run() == 0
        assert time.monotonic() - started < 1.0
        assert loop.ended_by == "SIGTERM" and loop.motor.last_sent == (0.0, 0.0, 0.0)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        camera.disconnect()


def test_dry_run_prints_commands(tiny_bundle_dir, episode_file):
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--dry-run", "--camera", str(episode_file), "--mode", "step",
                     "--step-duration", "0.02", "--quiet")
    assert proc.returncode == 0, proc.stderr
    cmds = [line for line in proc.stdout.splitlines() if line.startswith("cmd_vel")]
    assert len([c for c in cmds if c != "cmd_vel +0.000 +0.000 +0.000"]) >= 12
    assert cmds[-1] == "cmd_vel +0.000 +0.000 +0.000"


@pytest.mark.parametrize("args, message", [
    (["--serial", "/dev/ttyUSB9"], "not found"),
    (["--dry-run", "--camera", "/dev/video9"], "/dev/video9 not found"),
])
def test_clear_errors(tiny_bundle_dir, args, message):
    proc = run_drive("--bundle", str(tiny_bundle_dir), *args)
    assert proc.returncode == 1 and message in proc.stderr


def test_bundle_failing_its_checks_is_refused(tiny_bundle_dir, tmp_path):
    import shutil

    bad = tmp_path / "b"
    shutil.copytree(tiny_bundle_dir, bad)
    with open(bad / "vision.onnx", "ab") as f:
        f.write(b"x")
    proc = run_drive("--bundle", str(bad), "--dry-run")
    assert proc.returncode == 1 and "vision.onnx: sha256" in proc.stderr


def test_auto_backend_says_which_and_missing_providers_are_refused(tiny_bundle_dir, episode_file):
    from runtime.policy.backends.base import BackendError
    from runtime.policy.backends.onnxruntime import available_providers
    from runtime.policy.backends.registry import make_backend, resolve_backend_name

    bundle = load_bundle(tiny_bundle_dir)
    assert resolve_backend_name(bundle, "auto") == "ort-cpu"  # no engines, no GPU providers here
    if "CUDAExecutionProvider" not in available_providers():
        with pytest.raises(BackendError, match="onnxruntime-gpu"):
            make_backend(bundle, "ort-cuda").activate()
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--dry-run", "--camera", str(episode_file), "--max-steps", "2",
                     "--quiet")
    assert proc.returncode == 0 and "driving with ort-cpu (fp32)" in proc.stderr


def test_step_mode_takes_the_next_frame_only_after_the_new_move_ran(episode_file):
    """The race: the inference thread cleared step_done, then published step k; a control tick that had
    read step k-1 (finished) set step_done in between, so frame k+1 was taken while move k had barely
    started. Here the motor's zero for step k-1 is slow exactly while step k is published, which opens
    that window every step."""
    policy = ScriptedPolicy(latency=0.01)

    class SlowZero(RecordingDryRun):
        def send_velocity(self, vx, vy, wz=0.0):
            if not any((vx, vy, wz)) and policy.calls:
                with policy.returned:  # the next inference returns (and publishes) during this zero
                    seen = policy.calls
                    policy.returned.wait_for(lambda: policy.calls > seen, timeout=0.1)
                time.sleep(0.003)
            return super().send_velocity(vx, vy, wz)

    motor = SlowZero()
    step, steps = 0.1, 6
    cfg = DriveConfig(mode="step", rate=RATE, step_duration=step, cmd_timeout=1.0, max_steps=steps, status=False)
    loop = DriveLoop(policy, open_camera(str(episode_file)), motor, SafetyGate(LIMITS), cfg, printer=lambda s: None)
    assert loop.run() == 0 and loop.steps == steps
    spans = motor.moves()
    expected = [(pytest.approx(0.05 * (k + 1)), 0.0, 0.0) for k in range(steps)]
    assert sorted(spans) == expected, "every step's move must reach the motor"
    for v, (first, last) in spans.items():
        assert last - first >= step - 2 * PERIOD, f"move {v} ran {last - first:.3f} s of its {step} s"


class OldFrameCamera(Camera):
    """A camera whose frames were captured `age` seconds before they are handed out (a lagging
    driver or transport); after `frames` frames it hangs for `hang` seconds, then ends."""

    def __init__(self, age, frames=1, hang=1.0):
        self.age, self.frames, self.hang, self.count = age, frames, hang, 0
        self.stamps = []

    def read(self, timeout=0.5):
        from runtime.hardware import EndOfStream, Frame

        self.count += 1
        if self.count > self.frames:
            time.sleep(self.hang)
            raise EndOfStream("done")
        self.stamps.append(time.monotonic() - self.age)
        return Frame(np.zeros((48, 64, 3), np.uint8), self.stamps[-1], self.count - 1)

    def disconnect(self):
        pass


def test_an_action_from_a_frame_older_than_the_timeout_never_runs():
    """A frame captured 1 s ago, 0.1 s of inference: the old loop fed the watchdog the publish time and
    ran the action for 0.5 s. Age counts from capture, so it must not run at all."""
    motor = RecordingDryRun()
    cfg = DriveConfig(rate=RATE, cmd_timeout=0.5, status=False)
    loop = DriveLoop(ScriptedPolicy(latency=0.1), OldFrameCamera(age=1.0, frames=3, hang=0.3), motor,
                     SafetyGate(LIMITS), cfg, printer=lambda s: None)
    assert loop.run() == 0 and loop.steps == 3
    assert motor.moves() == {}
    # refused when published (the plan is older than --cmd-timeout) or at the watchdog: never sent
    assert any(reason in ("command timeout", "plan too old") for _, reason in loop.health.zero_events)


def test_a_fresh_enough_action_runs_until_its_frame_is_cmd_timeout_old():
    """Captured 0.3 s before it is read, 0.1 s of inference, then the camera hangs: the move must stop
    0.5 s after capture (about 0.1 s after it started), not 0.5 s after it was published."""
    motor = RecordingDryRun()
    camera = OldFrameCamera(age=0.3, frames=1, hang=1.0)
    cfg = DriveConfig(rate=RATE, cmd_timeout=0.5, status=False)
    loop = DriveLoop(ScriptedPolicy(latency=0.1), camera, motor, SafetyGate(LIMITS), cfg, printer=lambda s: None)
    assert loop.run() == 0
    (first, last), = motor.moves().values()
    captured = camera.stamps[0]
    stopped = next(t for t, v in motor.times if t > last and not any(v))
    assert stopped - captured <= 0.5 + PERIOD + SLACK
    assert last - captured >= 0.5 - PERIOD - SLACK  # it did run while fresh


def test_step_mode_runs_a_fresh_move_for_its_whole_duration_and_never_starts_a_stale_one():
    """Step mode with the defaults (0.4 s moves, 0.5 s timeout) and 0.3 s from capture to the first send:
    the move runs its 0.4 s, as the demonstrations' moves did, instead of being cut at capture + 0.5 s
    (0.2 s of motion). A frame 1 s old never starts a move."""
    motor = RecordingDryRun()
    camera = OldFrameCamera(age=0.2, frames=1, hang=1.0)
    cfg = DriveConfig(mode="step", rate=RATE, step_duration=0.4, cmd_timeout=0.5, status=False)
    loop = DriveLoop(ScriptedPolicy(latency=0.1), camera, motor, SafetyGate(LIMITS), cfg, printer=lambda s: None)
    assert loop.run() == 0
    (first, last), = motor.moves().values()
    assert first - camera.stamps[0] >= 0.3 - SLACK  # it started late...
    assert last - first >= 0.4 - 2 * PERIOD  # ...and still ran its whole step
    assert last - first <= 0.4 + PERIOD + SLACK

    stale = RecordingDryRun()
    loop = DriveLoop(ScriptedPolicy(latency=0.1), OldFrameCamera(age=1.0, frames=2, hang=0.3), stale,
                     SafetyGate(LIMITS), cfg, printer=lambda s: None)
    assert loop.run() == 0
    assert stale.moves() == {}


def test_the_log_says_what_the_motor_side_really_did(episode_file, tmp_path):
    """A link that is down: the step records say the command was not sent and the velocity was zero,
    instead of claiming the action as the command (what the old loop logged)."""

    class DownLink(RecordingDryRun):
        def send_velocity(self, vx, vy, wz=0.0):
            super().send_velocity(vx, vy, wz)
            return SentCommand((0.0, 0.0, 0.0), sent=False)

        def stop(self):
            return False

    log_path = tmp_path / "drive.jsonl"
    cfg = DriveConfig(mode="step", rate=RATE, step_duration=0.02, cmd_timeout=1.0, max_steps=3, status=False)
    with StepLog(log_path) as log:
        loop = DriveLoop(ScriptedPolicy(), open_camera(str(episode_file)), DownLink(), SafetyGate(LIMITS), cfg, log,
                         printer=lambda s: None)
        assert loop.run() == 0
    records = read_log(log_path)
    steps = [r for r in records if r["type"] == "step"]
    assert len(steps) == 3
    assert all(r["sent"] is False and r["command"] == [0.0, 0.0, 0.0] for r in steps)
    assert [r["action"][0] for r in steps] == pytest.approx([0.05, 0.10, 0.15])
    assert records[-1]["reason"] == "shutdown" and records[-1]["confirmed"] is False


def test_a_camera_that_cannot_be_used_ends_the_drive_with_its_message():
    """Stalled or old frames are waited out (zero, keep trying); any other camera error (an image encoding
    the camera refuses, an unreadable file) used to be retried forever, too. Now it ends the run, zeroed."""
    from runtime.hardware import CameraError

    class Refusing(Camera):
        def read(self, timeout=0.5):
            raise CameraError("ros2 camera /cam: image encoding 'yuv422' is not supported")

        def disconnect(self):
            pass

    motor = RecordingDryRun()
    messages = []
    loop = DriveLoop(ScriptedPolicy(), Refusing(), motor, SafetyGate(LIMITS),
                     DriveConfig(rate=RATE, status=False), printer=messages.append)
    started = time.monotonic()
    assert loop.run() == 1 and time.monotonic() - started < 1.0
    assert "image encoding 'yuv422'" in messages[-1]
    assert motor.sent[-1] == (0.0, 0.0, 0.0) and motor.moves() == {}
