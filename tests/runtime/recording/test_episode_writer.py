"""The robot's episode writer: nothing under a final name until an episode ends, and a control loop that never
waits on the disk."""

import time

import h5py
import numpy as np
import pytest

from runtime.cameras.sample_frames import sample_frames
from runtime.recording.episode_writer import BackgroundWriter, EpisodeWriter, partial_path


def test_frames_go_to_a_hidden_partial_file_until_finish(tmp_path):
    path = tmp_path / "episode_0000.h5"
    frames = sample_frames(3, seed=2, height=24, width=32)
    writer = EpisodeWriter(path, "go", attrs={"recording_mode": "step"})
    for i, frame in enumerate(frames):
        writer.append(frame, (0.5, 0.0, -0.25), captured=10.0 + i * 0.4, intervention=i == 1)
    assert not path.exists() and partial_path(path).name == ".episode_0000.h5.partial"
    with h5py.File(partial_path(path), "r") as f:  # readable while recording: flushed per frame
        assert len(f["images"]) == 3 and not f.attrs["complete"]
    writer.finish()
    assert path.exists() and not partial_path(path).exists()
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["images"][()], frames) and f.attrs["complete"]
        assert f["actions"][()].tolist() == [[0.5, 0.0, -0.25]] * 3 and f["intervention"][()].tolist() == [0, 1, 0]
        assert f["capture_time"][()].tolist() == pytest.approx([10.0, 10.4, 10.8])
        assert [e.decode() for e in f["action_event_types"][()]] == ["episode_start", "start_action", "start_action"]
        assert f.attrs["num_frames"] == 3 and f.attrs["total_duration"] == pytest.approx(0.8)
    with pytest.raises(FileExistsError, match="never overwritten"):
        EpisodeWriter(path)


def test_full_size_frames_are_written_behind_the_control_loop(tmp_path):
    frames = sample_frames(6, seed=3, height=720, width=1280)  # 2.8 MB each; gzip takes ~100+ ms per frame
    writer = BackgroundWriter(EpisodeWriter(tmp_path / "e.h5", "go"))
    waits = []
    for i, frame in enumerate(frames):
        t = time.perf_counter()
        writer.append(frame, (0.1 * i, 0.0, 0.0), captured=float(i))
        waits.append(time.perf_counter() - t)
    assert max(waits) < 0.05, waits  # handed over, not compressed, in the loop's time
    path = writer.finish()
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["images"][()], frames)
        assert f["actions"][:, 0].tolist() == pytest.approx([0.1 * i for i in range(6)])
