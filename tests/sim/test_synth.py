"""Synthetic demonstrations from the simulator's expert, in exactly the collector's layout."""

import h5py
import numpy as np

from sim.task import MOVE, instruction_for
from tests.conftest import run_python
from train.data import DataOptions, EpisodeClipDataset, EpisodeDataset, load_episodes, read_episode


def test_synth_episodes_are_collector_files_that_validate(tmp_path):
    out = tmp_path / "episodes"
    proc = run_python("-m", "sim.synth", "--episodes", "4", "--out", str(out), "--width", "128", "--height", "72")
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.h5"))
    assert len(files) == 4
    check = run_python("-m", "train.data", str(out))
    assert check.returncode == 0, check.stderr
    assert "4 valid, 0 rejected" in check.stdout
    sides = set()
    for path in files:
        with h5py.File(path, "r") as f:
            assert f["images"].dtype == np.uint8 and f["images"].shape[1:] == (72, 128, 3)
            assert f["images"].compression == "gzip" and f["actions"].dtype == np.float32
            actions = f["actions"][()]
            events = [e.decode() if isinstance(e, bytes) else e for e in f["action_event_types"][()]]
            instruction = f["language_instruction"][0].decode()
            assert f["language_instruction"].dtype == np.dtype("S256")
            assert {"episode_name", "total_duration", "num_frames", "action_chunk_size", "obstacle_layout_type",
                    "time_period", "collection_datetime", "collection_hour", "collection_minute"} <= set(f.attrs)
            assert f.attrs["num_frames"] == len(actions)
        side = instruction.rsplit(" ", 1)[-1]
        sides.add(side)
        assert instruction == instruction_for(side)
        assert events[0] == "episode_start" and len(events) == len(actions)
        assert np.all(np.isclose(actions[..., None], [-MOVE, 0.0, MOVE]).any(-1))  # discrete moves
        assert not actions[:, 2].any()
        assert not actions[-2:].any() and actions[:-3, :2].any(axis=1).all()  # moves, then the stop frames
        # the first lateral move goes to the named side
        first_y = actions[actions[:, 1] != 0][0, 1]
        assert np.sign(first_y) == (1 if side == "left" else -1)
    assert sides == {"left", "right"}


def test_synth_episodes_load_like_recordings_in_both_batchings(tmp_path):
    from sim.synth import write_sim_episodes

    paths = write_sim_episodes(tmp_path, 2, seed=3, width=96, height=54)
    options = DataOptions(window=4, chunk=3)
    episodes, rejected = load_episodes(paths, options)
    assert not rejected and episodes[0].instruction.startswith("Navigate around obstacles")
    windows = EpisodeDataset(episodes, options)
    clips = EpisodeClipDataset(episodes, options)
    assert len(clips) == 2
    clip = clips[0]
    n = episodes[0].frames
    assert clip["pixel_values"].shape == (n, 3, 224, 224)
    assert clip["window_index"].shape == (n - 4 + 1, 4)
    # the clip's windows are exactly the window dataset's samples
    for k in range(len(clip["window_index"])):
        sample = windows[k]
        np.testing.assert_array_equal(clip["pixel_values"][clip["window_index"][k]], sample["pixel_values"])
        np.testing.assert_array_equal(clip["targets"][k], sample["targets"])
        np.testing.assert_array_equal(clip["mask"][k], sample["mask"])
    assert read_episode(paths[1], options).frames >= 8
