"""The bundle's driving record sets the defaults of the offline evaluation, the closed loop and the simulated
drive alike, so a bundle's figures describe the policy the simulator (and the robot) drives."""

import json

import numpy as np
import pytest

from runtime.policy.bundle import load_bundle
from runtime.policy.driving import Driving, driving_settings
from sim.evaluate import EvaluationSpec, evaluate
from tests.helpers.processes import run_drive

RECORD = {"mode": "step", "discrete": True, "frame_spacing_s": 0.25, "source": "test: key presses, 0.25 s"}


@pytest.fixture
def recorded_bundle(bundle_copy):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    manifest["driving"] = RECORD  # bundle.json is not among the hashed files
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    return bundle_copy


def test_an_older_bundle_without_the_record_gets_the_defaults_and_says_so(tiny_bundle_dir):
    driving = load_bundle(tiny_bundle_dir).driving
    assert (driving.mode, driving.discrete, driving.frame_spacing_s) == ("step", False, 0.4)
    assert driving.source.startswith("defaulted")
    with pytest.raises(ValueError, match="driving.mode: expected one of step, continuous, found 'fast'"):
        Driving.from_dict({"mode": "fast"})


def test_evaluation_and_the_simulated_drive_use_the_same_record_unless_told_otherwise(recorded_bundle, tmp_path,
                                                                                     episode_file):
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    (held_out / "ep.h5").symlink_to(episode_file)
    offline = evaluate(EvaluationSpec(bundle=recorded_bundle, episodes=str(held_out), plot=tmp_path / "o.png"))
    closed = evaluate(EvaluationSpec(bundle=recorded_bundle, episodes="1", width=128, height=72, max_steps=3,
                                     plot=tmp_path / "c.png", progress=False))
    for report in (offline, closed):
        assert report["discrete"] is True
        assert report["driving"] == {"mode": "step", "discrete": True, "step_duration": 0.25, "overridden": [],
                                     "source": RECORD["source"]}

    log = tmp_path / "drive.jsonl"
    proc = run_drive("--bundle", str(recorded_bundle), "--seed", "2", "--width", "128", "--height", "72",
                     "--max-steps", "3", "--direct", "--quiet", "--log", str(log), module="sim.drive")
    assert proc.returncode == 0, proc.stderr
    assert "mode step (bundle), discrete moves (bundle), 0.25 s per step-mode move (bundle)" in proc.stderr
    from runtime.control.steplog import read_log

    actions = np.array([r["action"][:2] for r in read_log(log) if r["type"] == "step"])
    assert len(actions) and np.all(np.isclose(np.abs(actions), 1.15) | (actions == 0)), actions  # snapped

    told = run_drive("--bundle", str(recorded_bundle), "--seed", "2", "--width", "128", "--height", "72",
                     "--max-steps", "2", "--direct", "--quiet", "--mode", "continuous", "--no-discrete",
                     module="sim.drive")
    assert told.returncode == 0, told.stderr
    assert "mode continuous (as asked), raw actions (as asked), 0.25 s per step-mode move (bundle)" in told.stderr
    raw = evaluate(EvaluationSpec(bundle=recorded_bundle, episodes=str(held_out), discrete=False,
                                  plot=tmp_path / "r.png"))
    assert raw["discrete"] is False and raw["driving"]["overridden"] == ["discrete"]


def test_settings_take_the_record_where_the_caller_passed_none():
    record = Driving(mode="continuous", discrete=True, frame_spacing_s=0.05, source="s")
    s = driving_settings(record)
    assert (s.mode, s.discrete, s.step_duration, s.overridden) == ("continuous", True, 0.05, ())
    s = driving_settings(record, mode="step", discrete=False)
    assert (s.mode, s.discrete, s.step_duration, s.overridden) == ("step", False, 0.05, ("mode", "discrete"))
