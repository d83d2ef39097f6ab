"""The robot's episode writer: nothing under a final name until an episode ends, nothing recorded ever opened
again for writing, the collector's attributes, a choice of compression, and a full disk that ends in an error
naming the frame, not in a crash."""

import datetime as dt
import hashlib
import sys
import textwrap

import h5py
import numpy as np
import pytest

from runtime.cameras.sample_frames import sample_frames
from runtime.recording.episode_writer import (
    EpisodeWriter,
    default_compression,
    frame_compression,
    next_episode_number,
    partial_path,
    time_period,
    write_episode,
)
from tests.helpers.small_disk import run_on_small_disk, small_disk_unavailable
from train.data import DataOptions, read_episode


def test_frames_go_to_a_hidden_partial_file_until_finish(tmp_path):
    path = tmp_path / "episode_0000.h5"
    frames = sample_frames(3, seed=2, height=24, width=32)
    writer = EpisodeWriter(path, "go", attrs={"recording_mode": "step"})
    for i, frame in enumerate(frames):
        writer.append(frame, (0.5, 0.0, -0.25), captured=10.0 + i * 0.4, intervention=i == 1)
    assert not path.exists() and partial_path(path).name == ".episode_0000.h5.partial"
    with h5py.File(partial_path(path), "r") as f:  # readable while recording: flushed per frame
        assert len(f["images"]) == 3 and not f.attrs["complete"]
    writer.finish(frame_spacing_s=0.41)
    assert path.exists() and not partial_path(path).exists()
    assert not list(tmp_path.glob("*.spare"))  # the room held for a full disk is given back
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["images"][()], frames) and f.attrs["complete"]
        assert f["actions"][()].tolist() == [[0.5, 0.0, -0.25]] * 3 and f["intervention"][()].tolist() == [0, 1, 0]
        assert f["capture_time"][()].tolist() == pytest.approx([10.0, 10.4, 10.8])
        assert [e.decode() for e in f["action_event_types"][()]] == ["episode_start", "start_action", "start_action"]
        assert f.attrs["num_frames"] == 3 and f.attrs["total_duration"] == pytest.approx(0.8)
        assert f.attrs["frame_spacing_s"] == 0.41  # attributes learnt while recording, stored at the end
    with pytest.raises(FileExistsError, match="never overwritten"):
        EpisodeWriter(path)


def test_a_partial_file_is_never_opened_again_and_numbers_go_on_after_it(tmp_path):
    write_episode(tmp_path / "episode_0000.h5", sample_frames(2, height=8, width=8), np.zeros((2, 3)))
    crashed = EpisodeWriter(tmp_path / "episode_0001.h5", "go")
    crashed.append(sample_frames(1, height=8, width=8)[0], (0.1, 0, 0), 1.0)
    crashed.abandon(keep=True)  # what a crash leaves
    kept = hashlib.sha256(partial_path(tmp_path / "episode_0001.h5").read_bytes()).hexdigest()
    (tmp_path / "episode_0007.h5.dropped").write_bytes(b"")  # set aside by train.data drop
    with pytest.raises(FileExistsError, match=r"\.episode_0001\.h5\.partial"):
        EpisodeWriter(tmp_path / "episode_0001.h5")
    assert hashlib.sha256(partial_path(tmp_path / "episode_0001.h5").read_bytes()).hexdigest() == kept
    assert next_episode_number(tmp_path) == 8  # after the finished, the partial and the dropped ones
    assert next_episode_number(tmp_path / "empty") == 0


def test_the_collectors_time_period_from_the_episodes_end():
    # the collector's four bands (dawn 0-6 h, morning 6-12, evening 12-18, night 18-24), not day/night
    labels = [time_period(dt.datetime(2026, 1, 1, h)) for h in (0, 5, 6, 11, 12, 17, 18, 23)]
    assert labels == ["dawn", "dawn", "morning", "morning", "evening", "evening", "night", "night"]


def test_compressions_readable_by_h5py_and_train_data(tmp_path):
    frames = sample_frames(2, seed=1, height=36, width=64)
    for choice, expected in (("gzip", ("gzip", 4)), ("gzip:1", ("gzip", 1)), ("7", ("gzip", 7)), ("lzf", ("lzf", None)),
                             ("none", (None, None))):
        path = write_episode(tmp_path / f"{choice.replace(':', '_')}.h5", frames, np.zeros((2, 3)), compression=choice)
        with h5py.File(path, "r") as f:
            assert (f["images"].compression, f["images"].compression_opts) == expected
            assert np.array_equal(f["images"][()], frames)
        assert read_episode(path, DataOptions(image_size=32)).frames == 2
    with pytest.raises(ValueError, match="--compression 'zstd': expected one of gzip"):
        frame_compression("zstd")
    # what a 2-core robot affords (docs/recording.md's measurement): gzip for step mode, lzf at 10 Hz
    assert [default_compression(s) for s in (0.4, 0.1, 0.033)] == ["gzip", "lzf", "none"]


def test_a_full_disk_is_an_error_at_its_frame_and_the_partial_file_closes_cleanly(tmp_path):
    reason = small_disk_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    script = textwrap.dedent("""
        import sys, numpy as np
        from pathlib import Path
        from runtime.recording.episode_writer import EpisodeWriter, EpisodeWriteError
        frames = np.random.default_rng(0).integers(1, 255, (2, 240, 320, 3), dtype=np.uint8)  # 230 kB, incompressible
        writer = EpisodeWriter(Path(sys.argv[1]) / "episode_0000.h5", "go", compression="none")
        for i in range(200):
            try:
                writer.append(frames[i % 2], (0.5, 0, 0), float(i))
            except EpisodeWriteError as e:
                print("error:", e)
                break
        print("kept:", writer.abandon(keep=True))
    """)
    disk = tmp_path / "disk"
    proc = run_on_small_disk(disk, 24, [sys.executable, "-c", script, str(disk)], tmp_path / "after")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # no crash at exit (h5py could not close: 139)
    error = next(line for line in proc.stdout.splitlines() if line.startswith("error:"))
    assert "the disk is full" in error and ".episode_0000.h5.partial: frame " in error
    failed_at = int(error.split(": frame ")[1].split()[0])
    assert failed_at >= 20  # 24 MB, less the 16 MiB spare room: about 30 frames of 230 kB
    partial = tmp_path / "after" / ".episode_0000.h5.partial"
    with h5py.File(partial, "r") as f:  # closed cleanly: readable, exactly the frames before the failed one
        assert not f.attrs["complete"] and f.attrs["num_frames"] == failed_at
        assert {len(f[k]) for k in ("images", "actions", "capture_time", "intervention")} == {failed_at}
        assert all(np.count_nonzero(image) for image in f["images"][()])
    assert not list((tmp_path / "after").glob("*.spare"))
