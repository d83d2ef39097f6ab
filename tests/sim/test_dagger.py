"""The correction loop on the simulated robot, with the documented commands: docs/recording.md section 6 followed
word for word in continuous and in step mode (the re-fit runs and keeps the trained spacing), and `python -m
sim.dagger` reduced to a few minutes (the full experiment: docs/evaluation.md)."""

import json

import h5py
import numpy as np
import pytest

from runtime.policy.bundle import read_driving
from tests.conftest import run_python

FIT = ["--preset", "tiny", "--window", "4", "--chunk", "4", "--batch-size", "2", "--no-progress", "--max-epochs", "1",
       "--action-range", "0.5"]


@pytest.fixture(scope="module")
def demonstrations(tmp_path_factory):
    """`sim.record --teleop expert` (docs/recording.md section 8): two demonstrations, step mode, 0.4 s."""
    rec = tmp_path_factory.mktemp("demos") / "rec"
    proc = run_python("-m", "sim.record", "--out", str(rec), "--teleop", "expert", "--episodes", "2", "--seed", "3",
                      "--direct", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rec


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["continuous", "step"])
def test_section_6_word_for_word_refits_on_the_corrections_at_the_trained_spacing(demonstrations, tiny_bundle_dir,
                                                                                  tmp_path, mode):
    trained = read_driving(tiny_bundle_dir).frame_spacing_s
    runs = tmp_path / "runs"
    # take over while it drives, recorded (the scripted expert is the person: sim/expert_person.py)
    drive = run_python("-m", "sim.drive", "--bundle", str(tiny_bundle_dir), "--seed", "11", "--direct", "--mode", mode,
                       "--teleop", "expert", "--record", str(runs), "--end-at-goal", "--time-limit", "12",
                       "--width", "96", "--height", "54", "--quiet", timeout=120)
    assert drive.returncode == 0, drive.stderr[-3000:]
    with h5py.File(runs / "episode_0000.h5", "r") as f:
        assert f.attrs["policy_driven"] and f.attrs["recording_mode"] == mode
        assert f.attrs["frame_spacing_s"] == pytest.approx(trained, rel=0.1)  # the spacing the policy was trained on
        if mode == "continuous":
            assert np.median(np.diff(f["capture_time"][()])) == pytest.approx(trained, abs=0.06)
        taken = int(f["intervention"][()].sum())
        assert taken > 0 and f.attrs["takeovers"] >= 1  # the expert took over: there are corrections to fit on
    # then, as section 6 says
    summary = run_python("-m", "train.data", "summary", str(runs))
    assert summary.returncode == 0 and f"intervention {taken} of " in summary.stdout
    merge = run_python("-m", "train.data", "merge", str(demonstrations), str(runs), "--out", str(tmp_path / "round2"))
    assert merge.returncode == 0 and "different frame spacings" not in merge.stderr, merge.stderr
    fit = run_python("-m", "train.fit", "--data", str(tmp_path / "round2"), "--intervention-weight", "3",
                     "--policy-weight", "0", "--out", str(tmp_path / "fits"), "--name", "round2", *FIT, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    config = json.loads((tmp_path / "fits" / "round2" / "checkpoints" / "best" / "config.json").read_text())
    assert config["driving"]["frame_spacing_s"] == pytest.approx(trained)  # the bundle's record keeps the spacing


@pytest.mark.slow
def test_sim_dagger_reduced_runs_the_whole_loop_with_the_documented_commands(tmp_path):
    out = tmp_path / "dagger"
    proc = run_python("-m", "sim.dagger", "--out", str(out), "--seeds", "0", "--demos", "3", "--runs", "2",
                      "--rounds", "1", "--eval-episodes", "3", "--epochs", "1", "--time-limit", "8", "--no-control",
                      timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "dagger.json").read_text())
    rounds = report["seeds"]["0"]
    assert [r["name"] for r in rounds] == ["r0", "r1"]
    assert all(0.0 <= r["success"] <= 1.0 for r in rounds) and all(len(r["drives"]) == 2 for r in rounds)
    assert (out / "dagger.png").exists() and "| r1 | 3 demos + corrections of 2 drives |" in report["table"]
    seed = out / "seed-0"
    logs = sorted(p.name for p in (seed / "logs").glob("*.log"))
    assert {"fit-r0.log", "fit-r1.log", "evaluate-r1.log", "merge-data-r1.log"} <= set(logs)
    assert "--intervention-weight 3 --policy-weight 0" in (seed / "logs" / "fit-r1.log").read_text().splitlines()[0]
    with h5py.File(sorted((seed / "corrections" / "r1").glob("episode_*.h5"))[0], "r") as f:
        assert f.attrs["policy_driven"] and f.attrs["frame_spacing_s"] == pytest.approx(0.4, rel=0.1)
