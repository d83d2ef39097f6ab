"""The writer behind the control loop: handing a frame over never waits, a frame the writer cannot take is dropped
and counted (never lost without a count), and an episode is finished behind the loop."""

import time

import h5py
import numpy as np
import pytest

from runtime.cameras.sample_frames import sample_frames
from runtime.recording.background_writer import BackgroundWriter
from runtime.recording.episode_writer import EpisodeWriter


def test_a_full_queue_drops_and_counts_frames_and_never_blocks_the_loop(tmp_path):
    frames = sample_frames(2, seed=3, height=720, width=1280)  # gzip level 9: far slower than the frames come
    writer = BackgroundWriter(EpisodeWriter(tmp_path / "episode_0000.h5", "go", compression="gzip:9"), depth=2)
    waits, accepted = [], []
    for i in range(10):
        t = time.perf_counter()
        accepted.append(writer.append(frames[i % 2], (0.1 * i, 0.0, 0.0), captured=0.1 * i))
        waits.append(time.perf_counter() - t)
    assert max(waits) < 0.02, waits  # handed over or refused at once, never compressed in the loop's time
    assert writer.dropped == accepted.count(False) >= 5 and writer.frames == accepted.count(True)
    mean, spread = writer.spacing()  # of the accepted frames: the gaps the drops left show
    path = writer.finish_later(duration_s=1.0).result(timeout=30)
    with h5py.File(path, "r") as f:
        kept = [i for i, ok in enumerate(accepted) if ok]
        assert f["capture_time"][()].tolist() == [0.1 * i for i in kept]  # every accepted frame, nothing else
        assert f.attrs["dropped_frames"] == writer.dropped and f.attrs["complete"]
        assert np.array_equal(f["images"][0], frames[0])
    assert mean == pytest.approx(np.diff([0.1 * i for i in kept]).mean())
    assert spread == pytest.approx(np.diff([0.1 * i for i in kept]).std())
