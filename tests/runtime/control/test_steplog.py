"""--log never overwrites: systemd restarts a failed drive with the same path two seconds later."""

import os

from runtime.control.steplog import StepLog, read_log
from tests.helpers.processes import run_drive


def test_a_second_run_with_the_same_log_path_keeps_the_first(tmp_path):
    path = tmp_path / "logs" / "drive.jsonl"
    with StepLog(path) as log:
        log.write({"type": "zero", "reason": "exception: CUDA error", "t": 1.0})
    os.utime(path, (1_700_000_000, 1_700_000_000))
    with StepLog(path) as log:
        log.write({"type": "step", "step": 0})
    assert log.previous == tmp_path / "logs" / "drive.jsonl.20231114T221320Z"
    assert read_log(log.previous) == [{"type": "zero", "reason": "exception: CUDA error", "t": 1.0}]
    assert read_log(path) == [{"type": "step", "step": 0}]
    # a third run in the same second as the second one's last write: a distinct name, nothing replaced
    os.utime(path, (1_700_000_000, 1_700_000_000))
    with StepLog(path) as log:
        pass
    assert log.previous.name == "drive.jsonl.20231114T221320Z-2"
    assert len(list(path.parent.iterdir())) == 3


def test_drive_log_flag_keeps_the_previous_file(tiny_bundle_dir, episode_file, tmp_path):
    log = tmp_path / "drive.jsonl"
    log.write_text('{"type": "zero", "reason": "the failed run", "t": 0}\n')
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--dry-run", "--camera", str(episode_file), "--max-steps", "2",
                     "--quiet", "--log", str(log))
    assert proc.returncode == 0, proc.stderr
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("drive.jsonl.")]
    assert len(kept) == 1 and "the failed run" in kept[0].read_text()
    assert "step" in [r["type"] for r in read_log(log)]
