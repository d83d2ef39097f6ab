"""benchmarks.recording: the recorder measured against not recording (the 60 s figure at 1280x720 is in
docs/recording.md). Here a short run at a small size checks what it reports, not how fast this machine is."""

import json

import pytest

from tests.conftest import run_python


@pytest.mark.slow  # ~8 s on a loaded 2-core machine (start-up, the emulator, two phases)
def test_the_recording_benchmark_counts_every_frame_and_reports_the_loop(tmp_path):
    out = tmp_path / "rec.json"
    proc = run_python("-m", "benchmarks.recording", "--seconds", "1.5", "--idle-seconds", "1", "--width", "160",
                      "--height", "90", "--episode-seconds", "0.7", "--json", str(out), "--log-level", "warning",
                      timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    # due frames are read from the stored capture times alone, the counts from the recorder: nothing unaccounted
    assert r["compression"] == "lzf" and abs(r["frames_lost_uncounted"]) <= r["frames_missed_counted"] + 1
    assert r["frames_due"] == (r["stored"]["frames"] + r["frames_dropped_counted"] + r["frames_missed_counted"]
                               + r["frames_lost_uncounted"]) and r["stored"]["frames"] >= 10
    assert r["stored"]["episodes"] >= 1 and r["stored"]["spacing_mean_s"] > 0
    for phase in ("idle", "recording"):
        assert r["control_interval_ms"][phase]["n"] > 5 and r["tick_ms"][phase]["p99"] is not None
    assert r["control_period_ms"] == 50.0 and "cpu" in json.dumps(r["machine"]).lower()
    assert "stored" in proc.stdout and "control interval ms" in proc.stdout
