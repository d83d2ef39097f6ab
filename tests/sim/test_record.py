"""sim.record: a scripted operator drives the simulated robot to the bottle through the serial driver and the
controller emulator; the episodes pass train.data, and train.fit trains the tiny preset on them."""

import json

import h5py
import numpy as np
import pytest

from tests.conftest import run_python

FIT = ["--preset", "tiny", "--window", "4", "--chunk", "4", "--batch-size", "2", "--no-progress", "--max-epochs", "1"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    rec = tmp_path_factory.mktemp("sim-record") / "rec"
    proc = run_python("-m", "sim.record", "--out", str(rec), "--teleop", "expert", "--episodes", "3", "--seed", "3",
                      "--mode", "step", "--step-duration", "0.25", "--control-rate", "40", "--width", "96",
                      "--height", "54", "--max-accel", "10", "10", "20", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rec, proc.stderr


def test_scripted_operator_drives_to_the_bottle_and_the_episodes_pass_train_data(recorded, tmp_path):
    rec, stderr = recorded
    assert "ended 3 episode(s), 3 in front of the bottle" in stderr
    files = sorted(rec.glob("*.h5"))
    assert [p.name for p in files] == ["episode_0000.h5", "episode_0001.h5", "episode_0002.h5"]
    for path in files:
        with h5py.File(path, "r") as f:
            actions = f["actions"][()]
            assert f.attrs["recording_mode"] == "step" and f.attrs["frame_spacing_s"] == 0.25
            assert f.attrs["motor"] == "serial: sim.controller_emulator on a pty" and f.attrs["camera"] == "sim"
            assert actions[0].tolist() == [0, 0, 0] and f["action_event_types"][0] == b"episode_start"
            assert f["images"].shape[1:] == (54, 96, 3) and len(actions) >= 5
            # every move whole, at the operator's top speed through the gate (the last one is not cut by the end)
            assert set(np.unique(actions)) <= {0.0, 0.5, -0.5}
            assert actions[:, 0].max() == 0.5  # it drove forward
            events = [e.decode() for e in f["action_event_types"][()]]
            assert events[-2:] == ["stop_action"] * 2 and not actions[-2:].any()  # and showed where to stop
    summary = run_python("-m", "train.data", "summary", str(rec))
    assert summary.returncode == 0 and "3 valid, 0 rejected" in summary.stdout
    assert "3 step (one frame per 0.25 s)" in summary.stdout
    split = run_python("-m", "train.data", "split", str(rec), "--out", str(tmp_path / "split.json"))
    assert split.returncode == 0, split.stderr
    first = json.loads((tmp_path / "split.json").read_text())
    assert len(first["val"]) == 1 and sorted(first["train"] + first["val"]) == [p.name for p in files]
    again = run_python("-m", "train.data", "split", str(rec), "--out", str(tmp_path / "again.json"))
    assert again.returncode == 0 and json.loads((tmp_path / "again.json").read_text()) == first  # deterministic


@pytest.mark.slow
def test_train_fit_trains_the_tiny_preset_on_the_recordings_and_records_their_frame_spacing(recorded, tmp_path):
    rec, _ = recorded
    split = run_python("-m", "train.data", "split", str(rec), "--out", str(tmp_path / "split.json"))
    assert split.returncode == 0, split.stderr
    fit = run_python("-m", "train.fit", "--data", str(rec), "--split", str(tmp_path / "split.json"), "--out",
                     str(tmp_path / "runs"), "--name", "rec", *FIT, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    config = json.loads((tmp_path / "runs" / "rec" / "checkpoints" / "best" / "config.json").read_text())
    driving = config["driving"]
    assert (driving["mode"], driving["frame_spacing_s"]) == ("step", 0.25)  # the recordings' own spacing
    assert driving["source"].startswith("train.fit on 3 episodes") and "frames 0.25 s apart" in driving["source"]


def test_each_episode_gets_a_room_of_its_own_unless_seed_pins_one(tmp_path, monkeypatch):
    """What sim.record hands the recorder, per session (the recording itself: the slow test below)."""
    import sim.record as sim_record
    from sim.task import instruction_for
    from sim.world import random_layout

    sessions = []

    def record_in_room(args, layout, spec, width, height, seed=None):
        sessions.append((layout.side, seed, spec.config.episodes, spec.config.resume, spec.config.instructions))
        return 0

    monkeypatch.setattr(sim_record, "record_in_room", record_in_room)
    assert sim_record.main(["--out", str(tmp_path / "a"), "--teleop", "expert", "--episodes", "3", "--quiet"]) == 0
    assert sessions == [(random_layout(k).side, k, 1, k > 0, (instruction_for(random_layout(k).side),))
                        for k in range(3)]
    assert {side for side, *_ in sessions} == {"left", "right"}
    sessions.clear()
    assert sim_record.main(["--out", str(tmp_path / "b"), "--teleop", "expert", "--episodes", "2", "--seed", "2",
                            "--quiet"]) == 0
    assert sessions == [(random_layout(2).side, None, 2, False, (instruction_for(random_layout(2).side),))]


@pytest.mark.slow
def test_without_seed_each_episode_is_recorded_in_a_room_of_its_own_and_seed_pins_one(tmp_path):
    """--episodes 3 alone: rooms 0, 1, 2 (their bottles right, right, left: each episode with its room's
    instruction); --seed 2 --episodes 2: both in room 2 (~25 s)."""
    from sim.record import main
    from sim.task import instruction_for
    from sim.world import random_layout

    def instructions(folder):
        out = []
        for path in sorted(folder.glob("*.h5")):
            with h5py.File(path, "r") as f:
                out.append(f["language_instruction"][0].decode())
        return out

    fast = ["--teleop", "expert", "--mode", "step", "--step-duration", "0.05", "--control-rate", "100", "--width",
            "48", "--height", "27", "--max-accel", "100", "100", "200", "--direct", "--quiet"]
    assert main(["--out", str(tmp_path / "varied"), "--episodes", "3", *fast]) == 0
    assert instructions(tmp_path / "varied") == [instruction_for(random_layout(k).side) for k in range(3)]
    assert len(set(instructions(tmp_path / "varied"))) == 2  # the bottle on both sides
    assert main(["--out", str(tmp_path / "pinned"), "--episodes", "2", "--seed", "2", *fast]) == 0
    assert instructions(tmp_path / "pinned") == [instruction_for(random_layout(2).side)] * 2
