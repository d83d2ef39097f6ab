"""The README's main command: demonstrations -> training -> merge -> export -> evaluation -> a live drive."""

import json
import re
import time

import pytest

from tests.conftest import run_python

STEPS = [f"[{i}/7]" for i in range(1, 8)]


def test_demo_runs_every_stage_end_to_end_on_a_small_budget(tmp_path):
    out = tmp_path / "demo"
    proc = run_python("-m", "pipeline", "--out", str(out), "--episodes", "12", "--held-out", "3", "--epochs", "1",
                      "--eval-episodes", "2", "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for step in [*STEPS, "PASS", "closed loop on 2 unseen layouts", "8-way agreement fp32 vs int8"]:
        assert step in proc.stdout, step
    assert "sim: room seed 1" in proc.stderr and "motors at zero" in proc.stderr
    for name in ("bundle/bundle.json", "checkpoint/config.json", "runs/sim/curves.png", "closed_loop.png",
                 "offline.png", "closed_loop.json", "offline.json", "drive.jsonl"):
        assert (out / name).is_file(), name
    assert len(list((out / "episodes").glob("*.h5"))) == 12
    # the expert's key-press moves: the bundle records discrete step driving, and every stage used it
    driving = json.loads((out / "bundle" / "bundle.json").read_text())["driving"]
    assert (driving["mode"], driving["discrete"], driving["frame_spacing_s"]) == ("step", True, 0.4)
    for name in ("offline.json", "closed_loop.json"):
        assert json.loads((out / name).read_text())["driving"]["discrete"] is True
    assert "mode step (bundle), discrete moves (bundle), 0.4 s per step-mode move (bundle)" in proc.stderr


@pytest.mark.slow
def test_demo_full_size_meets_the_success_figures_in_under_10_minutes(tmp_path):
    """The figures the README quotes: 200 demonstrations, 8 epochs, 50 unseen rooms (about 4 min on 2 cores)."""
    out = tmp_path / "demo"
    start = time.monotonic()
    proc = run_python("-m", "pipeline", "--out", str(out), "--no-progress", timeout=900)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["policy"]: r for r in json.loads((out / "closed_loop.json").read_text())["results"]}
    assert rows["policy"]["success_rate"] >= 0.6, rows
    assert rows["random"]["success_rate"] <= 0.2 and rows["expert"]["success_rate"] >= 0.95
    offline = json.loads((out / "offline.json").read_text())
    assert offline["cross_agreement"]["fp32 vs fp16"] >= 0.95
    assert offline["cross_agreement"]["fp32 vs int8"] >= 0.95
    assert re.search(r"done in \d+ s", proc.stdout)
    assert elapsed < 600, elapsed
