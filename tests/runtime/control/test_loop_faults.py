"""The drive loop under faults: no stale plan survives a stall, every fault is on the status line within one
control period, a link down too long ends the run, a disarmed start and a latched e-stop, signals during start-up,
the controller's configuration checked, a differential base's lateral intent. Real ONNX Runtime on the tiny
bundle and the controller emulator on a pty where the wire matters."""

import io
import math
import signal
import threading
import time

import numpy as np
import pytest

from runtime.cameras.select import open_camera
from runtime.control.authority import MotionAuthority
from runtime.control.config import DriveConfig
from runtime.control.link_watch import MotorLinkLost
from runtime.control.loop import DriveLoop
from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.control.status_line import StatusLine
from runtime.motors.protocol import Limits
from runtime.motors.serial_controller import SerialMotorController
from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
from runtime.policy.behaviours import with_behaviours
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy
from tests.conftest import ROOT
from tests.helpers.drive_doubles import PacedCamera, RecordingDryRun, ScriptedPolicy
from tests.helpers.processes import drive_process, finish, run_drive

RATE = 50.0
PERIOD = 1 / RATE
SLACK = 0.08  # serial round trip + thread scheduling on a loaded 2-core CI machine
LIMITS = SafetyConfig(max_speed=(0.5, 0.5, 1.0), max_accel=(math.inf,) * 3, dead_zone=0.0)


class ChunkRecorder:
    """The behaviours-wrapped policy; keeps every chunk it planned (PolicyStep.chunk when planned fresh)."""

    def __init__(self, policy):
        self.policy, self.chunks = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def infer(self, image):
        step = self.policy.infer(image)
        if step.planned_steps_ago == 0:
            self.chunks.append((time.monotonic(), step.chunk.copy()))
        return step


@pytest.fixture
def frames(episode_file):
    cam = open_camera(str(episode_file))
    return [cam.read().image for _ in range(12)]


def key(velocity) -> tuple[float, ...]:
    """A velocity as the controller logged it (each float32 exactly, `%.9g`), rounded to compare."""
    return tuple(round(float(v), 5) for v in velocity)


def as_sent(action) -> tuple[float, ...]:
    """A planned action as the controller receives it: the gate's per-axis clip, then float32 on the wire."""
    a = np.clip(np.pad(np.asarray(action, dtype=np.float64), (0, 1))[:3], -np.array(LIMITS.max_speed),
                np.array(LIMITS.max_speed))
    return key(np.float32(a).tolist())


def drive_chunk_mode_through(tiny_bundle_dir, frames, emulator, fault):
    """The tiny policy in chunk mode (open loop) on the emulated controller; once two actions of the first
    chunk are out, `fault(camera)` runs and returns when the fault is over, then 1 s more of driving.
    Returns (policy, loop, fault start, fault end)."""
    bundle = load_bundle(tiny_bundle_dir)
    assert bundle.chunk >= 4  # a chunk long enough to be cut in the middle
    camera = PacedCamera(frames, fps=10.0)
    marks = []
    with OnnxRuntimeBackend(bundle) as backend:
        policy = ChunkRecorder(with_behaviours(Policy(bundle, backend), "chunk"))
        motor = SerialMotorController(emulator.port, reconnect_s=0.05).connect()
        loop = DriveLoop(policy, camera, motor, SafetyGate(LIMITS),
                         DriveConfig(rate=RATE, cmd_timeout=0.5, camera_timeout=0.3, status=False),
                         printer=lambda s: None)

        def fault_mid_chunk():
            while len(policy.chunks) < 1 or loop.steps < 2:  # two actions of the first chunk out
                time.sleep(0.005)
            marks.append(time.monotonic())
            fault(camera)
            marks.append(time.monotonic())
            time.sleep(1.0)
            loop.request_stop("test over")

        threading.Thread(target=fault_mid_chunk, daemon=True).start()
        assert loop.run() == 0, loop.error
        motor.disconnect()
    return policy, loop, *marks


def assert_no_plan_from_before_sent_after(policy, emulator, fault_start, fault_end):
    before = [(t, c) for t, c in policy.chunks if t < fault_start]
    pre_fault_actions = {as_sent(a) for _, c in before for a in c}
    moving = [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]
    # The comparison matches what it should: the moves sent before the fault are pre-fault plans.
    sent_before = [r for r in moving if r.time < fault_start]
    assert sent_before and all(key(r.velocity) in pre_fault_actions for r in sent_before)
    sent_after = [r for r in moving if r.time > fault_end]
    assert sent_after, "the robot moved again after the fault"
    for r in sent_after:  # the controller got only post-fault plans
        assert key(r.velocity) not in pre_fault_actions, r
    assert any(t > fault_end for t, _ in policy.chunks)  # a fresh chunk was planned after the fault


def test_no_action_planned_before_a_camera_stall_is_sent_after_it(tiny_bundle_dir, frames, emulator, tmp_path):
    """Chunk mode (open loop): a stall in the middle of a chunk, then frames again. The old loop played the rest
    of the pre-stall chunk, each action stamped with a new frame's capture time so the watchdog passed it."""
    def stall(camera):
        camera.stall(1.0)
        time.sleep(1.0)

    policy, loop, stall_start, stall_end = drive_chunk_mode_through(tiny_bundle_dir, frames, emulator, stall)
    assert_no_plan_from_before_sent_after(policy, emulator, stall_start, stall_end)
    assert loop.health.resets >= 1
    # and the motors stood still during the stall, from capture + cmd_timeout on
    during = [r for r in emulator.commands() if stall_start + 0.5 + PERIOD + SLACK < r.time < stall_end]
    assert during and all(not any(r.velocity) for r in during)


def test_no_action_planned_before_a_link_loss_is_sent_after_the_reconnect(tiny_bundle_dir, frames, emulator):
    """The cable out for 0.2 s mid-chunk, less than --cmd-timeout: without the reset at the reconnect, the
    rest of the chunk would still be fresh enough for the watchdog and would play on."""
    def unplug(camera):
        emulator.unplug()
        time.sleep(0.2)
        emulator.replug()

    policy, loop, out, back = drive_chunk_mode_through(tiny_bundle_dir, frames, emulator, unplug)
    assert loop.motor.reconnects >= 1 and loop.health.resets >= 1
    assert_no_plan_from_before_sent_after(policy, emulator, out, back)


def test_an_action_carries_its_plans_capture_time_and_an_old_plan_is_dropped():
    """A chunk of 8 at 0.1 s per step: from the 6th step on, the plan is older than --cmd-timeout (0.5 s):
    those actions are never sent, and the plan is made again from the newest frame."""
    from runtime.policy.behaviours import OpenLoopChunk
    from runtime.policy.onboard import PolicyStep

    class ChunkPolicy:
        def __init__(self):
            self.plans = 0

        def reset(self):
            pass

        def encode(self, frame):
            return None, {}

        def infer(self, frame):
            self.plans += 1
            chunk = np.array([[0.01 * self.plans + 0.001 * k, 0.0] for k in range(8)], np.float32)
            return PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=chunk, timings={})

    inner = ChunkPolicy()
    motor = RecordingDryRun()
    camera = PacedCamera([np.zeros((8, 8, 3), np.uint8)], fps=10.0)
    loop = DriveLoop(OpenLoopChunk(inner), camera, motor, SafetyGate(LIMITS),
                     DriveConfig(rate=RATE, cmd_timeout=0.5, status=False, max_steps=14), printer=lambda s: None)
    assert loop.run() == 0
    sent = {round(v[0], 4) for _, v in motor.times if any(v)}
    assert inner.plans >= 2  # planned again once the first plan aged out
    first_plan_tail = {round(0.01 + 0.001 * k, 4) for k in range(6, 8)}  # planned >= 0.6 s before it would run
    assert not sent & first_plan_tail, sorted(sent)
    assert any(reason == "plan too old" for _, reason in loop.health.zero_events)


class TimedStream(io.StringIO):
    """A terminal that remembers when each status line was drawn."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def write(self, s):
        if s.startswith("\r"):
            self.lines.append((time.monotonic(), s[1:]))
        return super().write(s)


def first_line(stream, text, after=0.0):
    return next(((t, line) for t, line in stream.lines if t >= after and text in line), (None, None))


def status_loop(policy, camera, motor, **config):
    loop = DriveLoop(policy, camera, motor, SafetyGate(LIMITS), DriveConfig(rate=RATE, status=True, **config),
                     printer=lambda s: None)
    loop.status = StatusLine(True, stream=TimedStream())
    return loop


def test_status_line_shows_state_and_counters_from_the_first_tick(episode_file):
    camera = PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20)
    loop = status_loop(ScriptedPolicy(latency=0.02), camera, RecordingDryRun(), max_steps=5)
    start = time.monotonic()
    assert loop.run() == 0
    t, line = loop.status.stream.lines[0]
    assert t - start < PERIOD + SLACK and line.startswith("waiting for a frame")
    assert "zeros 1 resets 0" in line
    t, line = first_line(loop.status.stream, "driving")
    assert line is not None and "| step " in line


def test_a_stale_camera_is_on_the_status_line_within_one_period(emulator):
    camera = PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20)
    motor = SerialMotorController(emulator.port).connect()
    loop = status_loop(ScriptedPolicy(latency=0.01), camera, motor, cmd_timeout=0.3, camera_timeout=0.3)

    def fault():
        time.sleep(0.5)
        camera.stall(0.8)
        time.sleep(1.2)
        loop.request_stop("test over")

    threading.Thread(target=fault, daemon=True).start()
    assert loop.run() == 0
    motor.disconnect()
    stale_by = camera.stall_from + 0.3  # the last frame before the stall is at most this old then
    t, line = first_line(loop.status.stream, "zero: ", after=camera.stall_from)
    assert t is not None and t <= stale_by + PERIOD + SLACK, (t - camera.stall_from, line)
    assert "zero: camera stale" in line  # named for its cause from the first zero: not "inference stalled"
    assert "zero: inference stalled" not in "".join(x for t, x in loop.status.stream.lines
                                                    if camera.stall_from <= t <= camera.stall_until)
    t, _ = first_line(loop.status.stream, "driving", after=camera.stall_until)
    assert t is not None  # back to driving after the stall


def test_a_refused_command_is_on_the_status_line_within_one_period(tmp_path):
    from sim.controller_emulator import ControllerEmulator

    strict = ControllerEmulator(link=tmp_path / "motor", limits=Limits(max_linear=0.01)).start()
    try:
        motor = SerialMotorController(strict.port).connect()  # no max_speed: the check at connect is skipped
        loop = status_loop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                           max_steps=4)
        assert loop.run() == 0
        motor.disconnect()
        refused = strict.commands("REFUSED")
        assert refused
        t, line = first_line(loop.status.stream, "zero: refused by controller")
        assert t is not None and t - refused[0].time <= PERIOD + SLACK
        assert " refused 1 " in line or " refused 2 " in line
    finally:
        strict.stop()


def test_a_dropped_link_is_on_the_status_line_within_one_period_and_the_run_gives_up(emulator):
    motor = SerialMotorController(emulator.port, reconnect_s=0.05).connect()
    loop = status_loop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                       give_up_after=0.6)
    unplugged = []

    def pull():
        time.sleep(0.4)
        unplugged.append(time.monotonic())
        emulator.unplug()

    threading.Thread(target=pull, daemon=True).start()
    start = time.monotonic()
    assert loop.run() == 1
    assert isinstance(loop.error, MotorLinkLost) and "--give-up-after 0.6" in str(loop.error)
    assert time.monotonic() - start < 0.4 + 0.6 + 1.0
    t, line = first_line(loop.status.stream, "link down")
    assert t is not None and t - unplugged[0] <= PERIOD + 0.05 + SLACK  # the next write fails: EIO
    motor.disconnect()


def test_a_link_back_within_the_limit_resumes_and_auto_resume_never_gives_up(emulator):
    for config, outage in ((dict(give_up_after=1.0), 0.3), (dict(give_up_after=0.2, auto_resume=True), 0.6)):
        motor = SerialMotorController(emulator.port, reconnect_s=0.05).connect()
        loop = status_loop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                           **config)

        def outage_then_stop(outage=outage, loop=loop):
            time.sleep(0.3)
            emulator.unplug()
            time.sleep(outage)
            emulator.replug()
            time.sleep(0.6)
            loop.request_stop("test over")

        threading.Thread(target=outage_then_stop, daemon=True).start()
        assert loop.run() == 0, loop.error
        assert motor.reconnects >= 1 and loop.health.resets >= 1
        assert emulator.commands("SET_VELOCITY")[-1].velocity != (0.0, 0.0, 0.0)  # it drove again
        motor.disconnect()
        emulator.history.clear()


def test_a_board_that_reboots_mid_run_disarms_the_robot_and_a_deaf_one_is_given_up_on(controller):
    """Finding 4, on the C firmware and the emulator: a board deaf for longer than --give-up-after was never given
    up on (only unsent commands counted), and one that rebooted took motion commands again 4 ms after its READY.
    Now a silent board is a fault (zeros only) counting toward the give-up, and its READY disarms: nothing moves
    after it until a person arms."""
    cfg = DriveConfig(rate=RATE, cmd_timeout=0.5, give_up_after=0.6, status=False)
    motor = SerialMotorController(controller.port, reconnect_s=0.05).connect()
    authority = MotionAuthority(armed=True)
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                     SafetyGate(LIMITS), cfg, printer=lambda s: None, authority=authority)
    marks = {}

    def reboot():
        time.sleep(0.5)
        marks["reboot"] = time.monotonic()
        controller.reboot(0.3)  # deaf 0.3 s (< 0.6 s give-up), then READY
        time.sleep(1.0)
        loop.request_stop("test over")

    threading.Thread(target=reboot, daemon=True).start()
    assert loop.run() == 0, loop.error
    motor.disconnect()
    ready = marks["reboot"] + 0.3
    moving = [r for r in controller.commands("SET_VELOCITY") if any(r.velocity)]
    assert [r for r in moving if r.time < marks["reboot"]], "it drove before the reboot"
    assert not [r for r in moving if r.time > ready], "motion reached the board after its READY, without an arm"
    assert authority.state == "disarmed" and "restarted" in authority.cause

    deaf = SerialMotorController(controller.port, reconnect_s=0.05).connect()
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), deaf,
                     SafetyGate(LIMITS), cfg, printer=lambda s: None, authority=MotionAuthority(armed=True))
    threading.Timer(0.3, lambda: controller.reboot(3.0)).start()  # deaf far past the give-up
    started = time.monotonic()
    assert loop.run() == 1 and "down for" in str(loop.error) and "give-up-after" in str(loop.error)
    assert time.monotonic() - started < 0.3 + 0.6 + 1.0  # given up on, not waited out
    deaf.disconnect()


def test_a_board_that_restarts_while_its_cable_is_out_disarms_the_robot(controller):
    """A USB-powered board loses power with its cable: it restarts while the port is closed, and its READY goes
    nowhere (review of issue 29). Its uptime gives it away at the reconnect's configuration check: the robot is
    disarmed, and nothing moves after the replug without an arm."""
    motor = SerialMotorController(controller.port, reconnect_s=0.05).connect()
    authority = MotionAuthority(armed=True)
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                     SafetyGate(LIMITS), DriveConfig(rate=RATE, give_up_after=2.0, status=False),
                     printer=lambda s: None, authority=authority)
    marks = {}

    def power_cycle():
        time.sleep(0.6)
        controller.unplug()
        controller.reboot(0.05)  # the board restarts behind the unplugged cable: its READY reaches nobody
        time.sleep(0.3)
        controller.replug()
        marks["back"] = time.monotonic()
        time.sleep(0.8)
        loop.request_stop("test over")

    threading.Thread(target=power_cycle, daemon=True).start()
    assert loop.run() == 0, loop.error
    motor.disconnect()
    moving = [r for r in controller.commands("SET_VELOCITY") if any(r.velocity)]
    assert [r for r in moving if r.time < marks["back"] - 0.3], "it drove before the unplug"
    assert not [r for r in moving if r.time > marks["back"]], "driven again after the power cycle without an arm"
    assert authority.state == "disarmed" and motor.controller_starts == 1


def test_a_disarmed_start_sends_only_zeros_until_armed_and_an_estop_latches():
    motor = RecordingDryRun()
    authority = MotionAuthority(armed=False)
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                     SafetyGate(LIMITS), DriveConfig(rate=RATE, status=False), printer=lambda s: None,
                     authority=authority)
    marks = {}

    def operator():
        time.sleep(0.5)
        marks["arm"] = time.monotonic()
        assert authority.arm("test") == ""
        time.sleep(0.4)
        marks["estop"] = time.monotonic()
        authority.estop("test button")
        time.sleep(0.3)
        assert authority.arm("test") != ""  # refused: the latch holds until a reset
        time.sleep(0.3)
        marks["rearm"] = time.monotonic()
        assert authority.reset_estop("test") == "" and authority.arm("test") == ""
        time.sleep(0.3)
        loop.request_stop("test over")

    threading.Thread(target=operator, daemon=True).start()
    assert loop.run() == 0
    moving = [t for t, v in motor.times if any(v)]
    assert loop.steps > 5  # inference ran all along
    assert moving and min(moving) >= marks["arm"]  # nothing moved before the arm
    assert not [t for t in moving if marks["estop"] <= t < marks["rearm"]]  # latched, from the e-stop call on
    assert [t for t in moving if t > marks["rearm"]]  # moves again once reset and re-armed
    reasons = {reason for _, reason in loop.health.zero_events}
    assert {"disarmed", "e-stop (test button)"} <= reasons


@pytest.mark.parametrize("user_settings", [{}, {"ARMING": "--gamepad /dev/input/js0 --arm-button 7"}],
                         ids=["defaults", "arm-sources-set"])
def test_systemd_unit_starts_disarmed_so_a_crash_restart_comes_back_disarmed(user_settings):
    """The unit's ExecStart passes --start-disarmed, and Restart= re-runs that same line; a user who sets the
    arm sources in /etc/default/mobile-vla (ARMING) still starts disarmed."""
    import shlex

    from runtime.control.session import DriveSpec, build_parser

    unit = (ROOT / "jetson" / "mobile-vla-drive.service").read_text()
    lines = unit.splitlines()
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    defaults = dict(kv.split("=", 1) for line in lines if line.startswith("Environment=")
                    for kv in shlex.split(line[len("Environment="):]))
    assert "Restart=on-failure" in unit and defaults["START"] == "--start-disarmed"
    defaults.update(user_settings)
    # the line systemd runs on every (re)start, with the unit's defaults
    drive_args = exec_start.split("-m runtime.drive", 1)[1].split("'")[0]
    drive_args = drive_args.replace("$${MOTOR_ARGS:---serial $PORT}", "--dry-run").replace("$EXTRA_ARGS", "")
    for name, value in defaults.items():
        drive_args = drive_args.replace(f'"${name}"', value).replace(f"${name}", value)
    spec = DriveSpec.from_args(build_parser().parse_args(shlex.split(drive_args)))
    assert spec.arm.start_disarmed and spec.loop.status is False
    if user_settings:
        assert spec.arm.gamepad == "/dev/input/js0"  # the user's arm source reached the drive


def test_a_disarmed_drive_process_sends_zeros_only(tiny_bundle_dir, episode_file):
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--dry-run", "--camera", str(episode_file), "--start-disarmed",
                     "--quiet")
    assert proc.returncode == 0, proc.stderr
    commands = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("cmd_vel")]
    assert commands and all(float(v) == 0.0 for c in commands for v in c)
    assert "disarmed: zeros until armed" in proc.stderr and "no way to arm is configured" in proc.stderr


def test_sigterm_while_the_motor_side_opens_still_releases_everything(tiny_bundle_dir, episode_file, peer):
    """--motor ros2 with nobody on /cmd_vel waits 5 s at connect. A SIGTERM then used to kill the process
    (handlers came after); now it ends cleanly, exit 0, once the open returns."""
    topic = f"/nobody_{time.time_ns()}"
    with drive_process("--bundle", str(tiny_bundle_dir), "--motor", "ros2", "--cmd-vel-topic", topic, "--camera",
                       str(episode_file), "--quiet") as proc:
        deadline = time.monotonic() + 60
        while peer.node.count_publishers(topic) == 0:  # the motor side is open and waits for a subscriber
            assert time.monotonic() < deadline and proc.poll() is None, "the drive never opened its motor side"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc, timeout=30)
    assert proc.returncode == 0, err
    assert "SIGTERM before driving: stopped; motors at zero" in err


def test_the_controllers_wheel_count_is_refused_by_the_drive_naming_both(tiny_bundle_dir, episode_file,
                                                                        firmware_bin, tmp_path):
    from tests.fakes.firmware import FirmwareController

    board = FirmwareController(firmware_bin / "pty_controller", link=tmp_path / "motor",
                               args=["--base", "mecanum"]).start()
    try:
        proc = run_drive("--bundle", str(tiny_bundle_dir), "--serial", board.port, "--wheels", "omni3", "--camera",
                         str(episode_file), "--quiet")
    finally:
        board.stop()
    assert proc.returncode == 1
    assert "reports 4 wheels, but --wheels omni3 sends 3 wheel speeds" in proc.stderr


@pytest.mark.parametrize("lateral,expected", [("rotate", (0.2, 0.0, 0.5)), ("refuse", (0.0, 0.0, 0.0))])
def test_a_differential_base_turns_a_lateral_intent_into_rotation_or_refuses_it(lateral, expected):
    gate = SafetyGate(SafetyConfig(max_speed=(0.5, 0.4, 1.0), max_accel=(math.inf,) * 3, base="diff",
                                   lateral=lateral))
    assert tuple(gate.filter([0.2, 0.2], 0.0)) == pytest.approx(expected)  # left intent -> turn left
    assert tuple(gate.filter([0.2, 0.0], 0.1)) == pytest.approx((0.2, 0.0, 0.0))  # no lateral: as predicted
    assert tuple(SafetyGate(SafetyConfig(max_accel=(math.inf,) * 3)).filter([0.2, 0.2], 0.0)) == (0.2, 0.2, 0.0)
    assert gate.refused_lateral == (lateral == "refuse")


def test_a_new_instruction_is_applied_between_frames_as_a_new_episode():
    motor = RecordingDryRun()
    policies = []

    def retarget(text):
        p = ScriptedPolicy(latency=0.01)
        p.instruction = text
        policies.append(p)
        return p

    first = ScriptedPolicy(latency=0.01)
    loop = DriveLoop(first, PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor, SafetyGate(LIMITS),
                     DriveConfig(rate=RATE, status=False), printer=lambda s: None, retarget=retarget)

    def later():
        time.sleep(0.3)
        loop.set_instruction("go to the bottle on the right")
        time.sleep(0.3)
        loop.request_stop("test over")

    threading.Thread(target=later, daemon=True).start()
    assert loop.run() == 0
    assert [p.instruction for p in policies] == ["go to the bottle on the right"]
    assert loop.policy is policies[0] and policies[0].calls > 0 and policies[0].resets == 1


def test_zero_events_are_bounded_and_counted(monkeypatch):
    import runtime.control.loop_health as loop_health

    monkeypatch.setattr(loop_health, "ZERO_EVENTS_KEPT", 5)
    authority = MotionAuthority(armed=False)
    loop = DriveLoop(ScriptedPolicy(), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), RecordingDryRun(),
                     SafetyGate(LIMITS), DriveConfig(rate=RATE, status=False), printer=lambda s: None,
                     authority=authority)

    def flip():
        for _ in range(8):  # each flip is a new zero reason: disarmed, e-stop, disarmed, ...
            authority.estop("flip")
            time.sleep(0.05)
            authority.reset_estop("flip")
            time.sleep(0.05)
        loop.request_stop("test over")

    threading.Thread(target=flip, daemon=True).start()
    assert loop.run() == 0
    assert len(loop.health.zero_events) == 5 and loop.health.zero_count > 10


def test_the_rate_column_is_the_rate_from_the_second_step():
    from runtime.control.status_line import RateEstimate

    rate = RateEstimate()
    assert rate.tick(0.0) == 0.0  # one step: no rate yet (not a seeded 100 Hz that decays)
    assert rate.tick(0.1) == pytest.approx(10.0)
    for k in range(2, 20):
        rate.tick(k * 0.1)
    assert rate.hz == pytest.approx(10.0)


def test_closing_the_ssh_terminal_zeroes_disarms_and_exits_cleanly(tiny_bundle_dir, episode_file):
    """Finding 3: closing the SSH terminal zeroed the motors but exited 1 with a termios.error traceback (the
    arm keys' terminal could not be restored). The drive runs on a pseudo-terminal as its controlling terminal,
    as under ssh -t; the terminal's other side closes (the session ended): SIGHUP, the terminal's keys lost
    (disarmed), motors at zero, exit 0, no traceback."""
    import fcntl
    import os
    import pty
    import subprocess
    import sys
    import termios

    from tests.helpers.processes import ROOT

    leader, follower = pty.openpty()

    def controlling_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "runtime.drive", "--bundle", str(tiny_bundle_dir), "--dry-run",
                             "--camera", str(episode_file), "--quiet", "--fps", "30"], cwd=ROOT, stdin=follower,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=controlling_terminal)
    os.close(follower)
    try:
        first = proc.stdout.readline()  # the first command: the drive runs (12 frames, 0.4 s moves: ~5 s)
        assert first.startswith("cmd_vel"), first
        os.close(leader)  # the SSH session ended
        out, err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "termios.error" not in err
    assert "SIGHUP" in err
    commands = [line for line in out.splitlines() if line.startswith("cmd_vel")]
    assert commands and commands[-1] == "cmd_vel +0.000 +0.000 +0.000"


class QuietBoard(RecordingDryRun):
    """A ROS 2-like motor side that can go quiet (twist_mux hand-over), recording each setting."""

    def __init__(self):
        super().__init__()
        self.quiet = []

    def set_quiet(self, quiet):
        self.quiet.append(bool(quiet))


def test_quiet_when_disarmed_goes_quiet_only_disarmed_never_in_an_estop():
    """Review of issue 29: behind twist_mux a quiet drive hands the base to a lower-priority input (navigation),
    so an e-stop that went quiet would let the robot move. Quiet while disarmed only; an e-stop publishes zeros."""
    motor = QuietBoard()
    authority = MotionAuthority(armed=False)
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                     SafetyGate(LIMITS), DriveConfig(rate=RATE, status=False, quiet_when_disarmed=True),
                     printer=lambda s: None, authority=authority)

    def operator():
        time.sleep(0.2)
        authority.estop("button")  # disarmed -> e-stop: must speak again (zeros)
        time.sleep(0.2)
        authority.reset_estop("key")  # -> disarmed: quiet again
        time.sleep(0.2)
        loop.request_stop("test over")

    threading.Thread(target=operator, daemon=True).start()
    assert loop.run() == 0
    assert motor.quiet == [True, False, True]


class FailingFace:
    """The drive's ROS 2 interface after a callback failed (its spin thread ended): problem() says so."""

    def __init__(self):
        self.broken = ""

    def problem(self):
        return self.broken

    def publish_diagnostics(self, *args):
        pass


def test_a_broken_ros_interface_latches_the_estop():
    """Review of issue 29: an exception in a ROS callback ended the spin thread, and ~/estop silently stopped
    working. A broken interface is a lost e-stop source: latched."""
    face = FailingFace()
    authority = MotionAuthority(armed=True)
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20),
                     RecordingDryRun(), SafetyGate(LIMITS), DriveConfig(rate=RATE, status=False),
                     printer=lambda s: None, authority=authority, ros=face)

    def break_it():
        time.sleep(0.3)
        face.broken = "the drive's ROS 2 interface: the ROS 2 spin thread of /vla stopped"
        time.sleep(0.2)
        loop.request_stop("test over")

    threading.Thread(target=break_it, daemon=True).start()
    assert loop.run() == 0
    assert authority.state == "e-stop" and "spin thread" in authority.cause


class HeldStick:
    """A person holding the stick forward the whole time."""

    def command(self, now):
        return (0.2, 0.0, 0.0)

    def sent(self, now, result, person):
        pass

    def captured(self, frame):
        pass

    def close(self):
        pass


def test_an_estop_reset_and_rearmed_within_one_tick_still_sends_a_zero_first():
    """Review of issue 29: an e-stop reset and re-armed between two ticks, while a person held the stick, was
    never acted on (the person's command skips the plan's epoch). Every stop owes a zero before anything moves."""
    motor = RecordingDryRun()
    authority = MotionAuthority(armed=True)
    loop = DriveLoop(ScriptedPolicy(latency=0.02), PacedCamera([np.zeros((8, 8, 3), np.uint8)], 20), motor,
                     SafetyGate(LIMITS), DriveConfig(rate=5.0, status=False), printer=lambda s: None,
                     authority=authority, takeover=HeldStick())
    marks = {}

    def flick():
        time.sleep(0.5)
        marks["estop"] = time.monotonic()
        authority.estop("button")
        authority.reset_estop("key")
        assert authority.arm("key") == ""  # all within microseconds: the 5 Hz loop never saw the e-stop state
        time.sleep(0.6)
        loop.request_stop("test over")

    threading.Thread(target=flick, daemon=True).start()
    assert loop.run() == 0
    after = [v for t, v in motor.times if t > marks["estop"]]
    assert after and after[0] == (0.0, 0.0, 0.0) and any(any(v) for v in after[1:])  # a zero, then driving on
