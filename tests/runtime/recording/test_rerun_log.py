"""runtime.recording.rerun_log: the drive's Rerun log through the real rerun-sdk, read back with Rerun's own RrdReader;
its queue never blocks the caller and counts what it drops."""

import threading
import time

import numpy as np
import pytest

from tests.helpers.rrd import column, rrd_entities


def test_frames_actions_commands_and_state_reach_the_file(tmp_path):
    pytest.importorskip("rerun")
    import cv2

    from runtime.recording.rerun_log import RerunLog, RerunSpec, partial_rrd

    out = tmp_path / "drive.rrd"
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :160] = (255, 0, 0)  # blue left half (BGR)
    with RerunLog(RerunSpec(str(out), image_width=160)) as rerun:
        assert partial_rrd(out).exists() and not out.exists()  # nothing under the final name while it runs
        for step in range(5):
            chunk = np.tile([0.5, 0.1 * step, 0.0], (10, 1))
            rerun.frame(100.0 + 0.1 * step, step, frame, (0.5, 0.1 * step, 0.0), chunk, {"vision": 3.0})
            rerun.sent(100.0 + 0.1 * step + 0.01, (0.25, 0.0, 0.0), "driving" if step < 3 else "zero: command timeout")
    assert out.exists() and not partial_rrd(out).exists()
    assert rerun.logged == 10 and rerun.dropped == 0
    entities = rrd_entities(out)
    images = column(entities["/camera/image"], "EncodedImage:blob", by="time")
    assert len(images) == 5
    decoded = cv2.imdecode(np.frombuffer(bytes(images[0][0]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (120, 160, 3)  # downscaled to --image-width
    assert decoded[:, :70, 0].mean() > 200 and decoded[:, 90:, 0].mean() < 50  # the frame as the policy saw it
    assert [v[0] for v in column(entities["/action/linear_y"], "Scalars:scalars", by="time")] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4])
    assert [v[0] for v in column(entities["/sent/linear_x"], "Scalars:scalars")] == [0.25] * 5
    states = column(entities["/state"], "TextLog:text", by="time")
    assert states == [["driving"], ["zero: command timeout"]]  # changes only
    assert len(column(entities["/plan/chunk"], "LineStrips2D:strips")) == 5
    assert column(entities["/latency/vision"], "Scalars:scalars") == [[3.0]] * 5


def test_a_full_queue_drops_and_counts_and_never_waits(tmp_path):
    pytest.importorskip("rerun")
    from runtime.recording.rerun_log import RerunLog, RerunSpec

    rerun = RerunLog(RerunSpec(str(tmp_path / "slow.rrd"), depth=4))
    gate = threading.Event()
    original = rerun._write
    rerun._write = lambda *a: (gate.wait(10), original(*a))  # a viewer that stopped reading
    frame = np.zeros((48, 64, 3), np.uint8)
    waits = []

    def control_loop():
        for step in range(50):
            start = time.perf_counter()
            rerun.frame(float(step), step, frame, (0.1, 0.0, 0.0))
            rerun.sent(float(step), (0.1, 0.0, 0.0), "driving")
            waits.append(time.perf_counter() - start)

    loop = threading.Thread(target=control_loop, daemon=True)
    loop.start()
    loop.join(timeout=2)
    assert not loop.is_alive(), "the loop waited on the stalled viewer"
    assert max(waits) < 0.005  # the control loop's two calls never wait on the viewer
    assert 90 <= rerun.dropped <= 96  # the queue held 4 (+1 being written); every other item was counted
    gate.set()
    rerun.close()
    assert rerun.logged + rerun.dropped == 100


def test_a_bad_target_is_refused_naming_it(tmp_path):
    pytest.importorskip("rerun")
    from runtime.recording.rerun_log import RerunLog, RerunSpec, RerunUnavailable

    with pytest.raises(RerunUnavailable, match=r"drive\.txt.*\.rrd"):
        RerunLog(RerunSpec(str(tmp_path / "drive.txt")))



def test_an_inference_and_the_authoritys_transitions_reach_the_file(tmp_path):
    """The drive's two hooks: `inferred` (the Frame, the policy's step, its record: the stages' latencies and the
    camera's, from the record's times) and `follow` (each transition of the motion authority, with its cause)."""
    pytest.importorskip("rerun")
    from runtime.control.authority import MotionAuthority
    from runtime.hardware import Frame, SentCommand
    from runtime.policy.onboard import PolicyStep
    from runtime.recording.rerun_log import RerunLog, RerunSpec

    authority = MotionAuthority(armed=False)
    chunk = np.tile(np.float32([0.2, 0.0]), (4, 1))
    step = PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=chunk, timings={"vision": 0.004})
    record = {"step": 7, "t_capture": 10.0, "t_infer_start": 10.03, "t_action": 10.05, "timings_ms": {"vision": 4.0}}
    with RerunLog(RerunSpec(str(tmp_path / "d.rrd"))) as rerun:
        rerun.follow(authority)
        assert authority.arm("key 'a'") == ""
        rerun.inferred(Frame(np.zeros((48, 64, 3), np.uint8), 10.0, 3), step, record)
        rerun.sent(10.06, SentCommand((0.2, 0.0, 0.0), sent=True), "driving")
        authority.estop("gpio 17 pressed")
    entities = rrd_entities(tmp_path / "d.rrd")
    assert column(entities["/camera/image"], "step") == [7]
    assert column(entities["/latency/camera"], "Scalars:scalars")[0][0] == pytest.approx(30.0)
    assert column(entities["/latency/inference"], "Scalars:scalars")[0][0] == pytest.approx(20.0)
    assert column(entities["/latency/capture_to_plan"], "Scalars:scalars")[0][0] == pytest.approx(50.0)
    assert column(entities["/latency/vision"], "Scalars:scalars") == [[4.0]]
    assert column(entities["/sent/linear_x"], "Scalars:scalars") == [[0.2]]
    events = [t[0] for t in column(entities["/events"], "TextLog:text", by="time")]
    assert events == ["disarmed -> armed: arm by key 'a' (epoch 1)",
                      "armed -> e-stop: estop by gpio 17 pressed (epoch 2)"]
    assert column(entities["/events"], "TextLog:level", by="time") == [["INFO"], ["ERROR"]]


def test_cpus_pins_the_log_and_rerun_s_threads_and_nothing_else(tmp_path):
    pytest.importorskip("rerun")
    import os

    from runtime.recording.rerun_log import RerunLog, RerunSpec

    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("one core: nothing to pin apart")

    def threads() -> dict[int, set[int]]:
        return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}

    before = threads()
    with RerunLog(RerunSpec(str(tmp_path / "p.rrd"), cpus=(usable[-1],))) as rerun:
        rerun.frame(0.0, 0, np.zeros((48, 64, 3), np.uint8), (0.1, 0.0, 0.0))
        time.sleep(0.2)
        started = {tid: cpus for tid, cpus in threads().items() if tid not in before}
    assert started and all(cpus == {usable[-1]} for cpus in started.values()), started  # the log's, Rerun's
    assert os.sched_getaffinity(0) == set(usable)  # the caller (the control loop's thread) is left alone
