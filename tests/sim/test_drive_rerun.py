"""runtime.drive --rerun on the simulated robot: the .rrd file holds the frames the policy saw, its actions, the
commands sent after the safety gate, the state and the motion authority's transitions, read back with Rerun's
own reader; without rerun-sdk the drive still runs, and --rerun says how to install it."""

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest

from runtime.control.config import DriveConfig
from runtime.control.session import DriveSpec, build_parser, drive
from runtime.policy.select import PolicySpec
from runtime.recording.rerun_log import RerunSpec
from sim.world import SimMotor, SimWorld, random_layout
from tests.conftest import find_tool
from tests.helpers.processes import run_drive
from tests.helpers.rrd import column, rrd_entities

STEPS = 10


@pytest.fixture(scope="module")
def sim_drive_rrd(tiny_bundle_dir, tmp_path_factory):
    """`python -m sim.drive --bundle B --seed 3 --rerun out.rrd --max-steps N` (continuous, with its step log)."""
    pytest.importorskip("rerun")
    out = tmp_path_factory.mktemp("drive-rerun")
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--seed", "3", "--rerun", str(out / "out.rrd"), "--max-steps",
                     str(STEPS), "--mode", "continuous", "--quiet", "--log", str(out / "run.jsonl"), module="sim.drive")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stderr


def test_the_file_holds_the_frames_the_policy_saw_and_the_commands_sent(sim_drive_rrd, figure_dir):
    from runtime.control.steplog import read_log

    out, stderr = sim_drive_rrd
    rrd = out / "out.rrd"
    assert rrd.exists() and not (out / ".out.rrd.partial").exists()
    assert "items logged, 0 dropped" in stderr
    # the step log has the steps whose command went out (a newer plan may replace one before the next tick)
    steps = [r for r in read_log(out / "run.jsonl") if r["type"] == "step"]
    assert steps
    entities = rrd_entities(rrd)
    images = column(entities["/camera/image"], "EncodedImage:blob", by="step")
    assert column(entities["/camera/image"], "step", by="step") == list(range(STEPS))  # every inference's frame
    first = cv2.imdecode(np.frombuffer(bytes(images[0][0]), np.uint8), cv2.IMREAD_COLOR)
    assert first.shape == (144, 256, 3) and first.std() > 10  # the simulated camera's view, not a blank

    def by_step(entity: str) -> dict:
        return dict(zip(column(entities[entity], "step"), (v[0] for v in column(entities[entity], "Scalars:scalars"))))

    for axis, name in enumerate(("linear_x", "linear_y")):  # the policy's action of each step, as its log says
        logged = by_step(f"/action/{name}")
        assert [logged[s["step"]] for s in steps] == pytest.approx([s["action"][axis] for s in steps], abs=1e-6)
    vision = by_step("/latency/vision")
    assert [vision[s["step"]] for s in steps] == pytest.approx([s["timings_ms"]["vision"] for s in steps], abs=1e-3)
    assert all(0 <= ms < 1000 for ms in by_step("/latency/camera").values())
    sent = column(entities["/sent/linear_x"], "Scalars:scalars", by="time")
    assert len(sent) >= len(steps)  # every control tick (the drive of 10 steps lasts a few ticks)
    for s in steps:  # each step's command, after the gate, is among what was sent
        assert min(abs(v[0] - s["command"][0]) for v in sent) < 1e-6
    states = [t[0] for t in column(entities["/state"], "TextLog:text", by="time")]
    assert states[0] == "disarmed" and "driving" in states  # it started disarmed, armed itself, drove
    events = [t[0] for t in column(entities["/events"], "TextLog:text", by="time")]
    assert any(e.startswith("disarmed -> armed: arm by start-up") for e in events)
    assert column(entities["/instruction"], "TextDocument:text") == [[
        "Navigate around obstacles and reach the front of the beverage bottle on the left"]]  # the room's
    from plotting.rrd_figure import draw  # the view as a picture, from this file (docs/recording.md shows it)

    picture = draw(rrd, STEPS - 2, figure_dir / "drive-view.png",
                   f"python -m sim.drive --bundle tiny-bundle --seed 3 --rerun out.rrd: step {STEPS - 2} "
                   "(the tiny preset's random weights: the actions mean nothing)")
    assert picture.stat().st_size > 20_000


def test_the_loop_logs_every_frame_it_inferred_as_the_camera_gave_it(tiny_bundle_dir, episode_file, tmp_path):
    """In process, with a replayed episode: the frames in the file are the episode's, in order, downscaled to the
    log's width within JPEG's error."""
    pytest.importorskip("rerun")
    from runtime.cameras.replay import hdf5_episode
    from runtime.control.authority import MotionAuthority
    from runtime.control.loop import DriveLoop
    from runtime.control.safety import SafetyConfig, SafetyGate
    from runtime.motors.dry_run import DryRunMotor
    from runtime.policy.select import open_policy
    from runtime.recording.episodes import read_episode_arrays
    from runtime.recording.rerun_log import RerunLog

    frames, _, _ = read_episode_arrays(episode_file)
    with open_policy(PolicySpec(tiny_bundle_dir, backend="ort-cpu")) as policy, \
            RerunLog(RerunSpec(str(tmp_path / "replay.rrd"), image_width=160)) as rerun:
        loop = DriveLoop(policy, hdf5_episode(episode_file), DryRunMotor().connect(), SafetyGate(SafetyConfig()),
                         DriveConfig(status=False), authority=MotionAuthority(armed=True), rerun=rerun)
        assert loop.run() == 0
    assert loop.steps == len(frames) and rerun.dropped == 0
    images = column(rrd_entities(tmp_path / "replay.rrd")["/camera/image"], "EncodedImage:blob", by="step")
    assert len(images) == len(frames)
    for logged, original in zip(images, frames):
        decoded = cv2.imdecode(np.frombuffer(bytes(logged[0]), np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
        expected = cv2.resize(original, (160, 120), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(decoded - expected).mean() < 4.0  # JPEG quality 75 on camera-like frames: ~2 grey levels


def test_without_rerun_sdk_the_drive_runs_and_rerun_says_how_to_install(tiny_bundle_dir, tmp_path, monkeypatch,
                                                                          caplog, signal_handlers):
    monkeypatch.setitem(sys.modules, "rerun", None)  # `import rerun` raises ImportError, as where it is missing
    assert "pip install -e '.[rerun]'" in " ".join(build_parser().format_help().split())
    world = SimWorld(random_layout(3))
    spec = DriveSpec(policy=PolicySpec(tiny_bundle_dir, backend="ort-cpu"),
                     loop=DriveConfig(max_steps=2, status=False))
    missing = replace(spec, policy=PolicySpec(tmp_path / "no-bundle"), rerun=RerunSpec(str(tmp_path / "out.rrd")))
    assert drive(missing, camera=world.camera(64, 36), motor=SimMotor(world)) == 1
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "rerun-sdk" in errors and "pip install -e '.[rerun]'" in errors
    assert "no-bundle" not in errors  # said before the bundle is even looked for: no waiting for it to load
    assert not (tmp_path / "out.rrd").exists()
    assert drive(spec, camera=world.camera(64, 36), motor=SimMotor(world)) == 0  # and without --rerun it drives


def test_a_bad_rerun_cpus_is_refused_naming_the_cores_there_are(tiny_bundle_dir):
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--dry-run", "--rerun", "x.rrd", "--rerun-cpus", "4096")
    assert proc.returncode == 1
    assert "--rerun-cpus '4096'" in proc.stderr and f"which has cores 0-{os.cpu_count() - 1}" in proc.stderr


def received_so_far(path) -> dict:
    """The entities of an .rrd a viewer is still writing: its last chunk may be half there, or the file not yet."""
    try:
        return rrd_entities(path)
    except (OSError, ValueError, RuntimeError):  # RrdReader's error on a half-written chunk, or no file yet
        return {}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:RRD file has no footer")  # what `rerun --save` streams has none; read whole
def test_a_live_stream_reaches_a_viewer_started_with_rerun(tiny_bundle_dir, tmp_path):
    """docs/recording.md's live stream: `rerun --serve-grpc` (a laptop's viewer, headless here, saving what it
    receives) and `sim.drive --rerun rerun+http://HOST:PORT/proxy --rerun-cpus N`."""
    pytest.importorskip("rerun")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    received = tmp_path / "received.rrd"
    # its log goes to a file: a pipe nobody reads fills (64 kB) and blocks the viewer, which then never exits
    log = (tmp_path / "viewer.log").open("wb")
    viewer = subprocess.Popen([find_tool("rerun"), "--serve-grpc", "--port", str(port), "--save", str(received)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # listening
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        core = str(max(os.sched_getaffinity(0)))
        proc = run_drive("--bundle", str(tiny_bundle_dir), "--seed", "3", "--rerun",
                         f"rerun+http://127.0.0.1:{port}/proxy", "--rerun-cpus", core, "--max-steps", str(STEPS),
                         "--mode", "continuous", "--quiet", module="sim.drive")
        assert proc.returncode == 0, proc.stderr[-3000:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the viewer writes what it received as it comes
            entities = received_so_far(received)
            if len(column(entities.get("/camera/image", []), "EncodedImage:blob")) >= STEPS:
                break
            time.sleep(0.5)
    finally:
        # Ctrl-C, as its log says; the test is about what it received, not how fast it stops (under a loaded
        # machine it once took over 20 s), so one that is still saving after 60 s is killed
        viewer.send_signal(signal.SIGINT)
        try:
            viewer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            viewer.kill()
        log.close()
        print((tmp_path / "viewer.log").read_text(errors="replace")[-2000:])
    entities = received_so_far(received)
    assert len(column(entities["/camera/image"], "EncodedImage:blob")) == STEPS
    assert len(column(entities["/sent/linear_x"], "Scalars:scalars")) > 0


def test_sim_record_logs_the_frames_recorded_and_the_actions_stored(tmp_path, signal_handlers):
    """runtime.record --rerun (through sim.record): each frame recorded with the action stored beside it, the
    commands sent and the recorder's state, the episode's start with its instruction."""
    pytest.importorskip("rerun")
    import h5py

    from sim.record import main

    rec, rrd = tmp_path / "rec", tmp_path / "rec.rrd"
    code = main(["--out", str(rec), "--teleop", "expert", "--episodes", "1", "--episode-seconds", "1.2", "--seed", "3",
                 "--mode", "step", "--step-duration", "0.1", "--control-rate", "40", "--width", "96", "--height", "54",
                 "--max-accel", "10", "10", "20", "--quiet", "--rerun", str(rrd)])
    assert code == 0
    with h5py.File(rec / "episode_0000.h5", "r") as f:
        actions, instruction = f["actions"][()], f["language_instruction"][()]
    entities = rrd_entities(rrd)
    assert len(column(entities["/camera/image"], "EncodedImage:blob")) == len(actions) > 3
    logged = [v[0] for v in column(entities["/action/linear_x"], "Scalars:scalars", by="time")]
    assert logged == pytest.approx(actions[:, 0].tolist())
    events = [t[0] for t in column(entities["/events"], "TextLog:text")]
    text = (instruction[0] if np.ndim(instruction) else instruction).decode().strip("\0 ")
    assert events == [f"episode_0000.h5 begins: {text}"]
    assert "recording" in [t[0] for t in column(entities["/state"], "TextLog:text", by="time")]
