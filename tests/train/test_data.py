"""The episode reader: layouts, channel order, normalisation, augmentation, bad files."""

import h5py
import numpy as np
import pytest

from runtime.cameras.sample_frames import sample_frames
from sim.episodes import write_episode
from tests.conftest import run_python
from tests.fixtures.episodes import later_collector_episode
from train.data import (
    DataOptions,
    EpisodeDataset,
    EpisodeError,
    load_episodes,
    mirror_actions,
    mirror_instruction,
    read_episode,
    split_episodes,
)


def make_episode(path, frames=10, instruction="reach the bottle on the left", rgb=False, seed=0):
    images = sample_frames(frames, seed=seed, height=60, width=80)
    if rgb:
        images = images[..., ::-1].copy()
    rng = np.random.default_rng(seed)
    actions = rng.choice([-1.15, 0.0, 1.15], size=(frames, 3)).astype(np.float32)
    return write_episode(path, images, actions, instruction=instruction)


def test_bgr_file_equals_the_same_episode_saved_as_rgb(tmp_path):
    bgr = read_episode(make_episode(tmp_path / "bgr.h5"), DataOptions(channel_order="bgr"))
    rgb = read_episode(make_episode(tmp_path / "rgb.h5", rgb=True), DataOptions(channel_order="rgb"))
    a = EpisodeDataset([bgr], DataOptions(window=4, chunk=3))[0]["pixel_values"]
    b = EpisodeDataset([rgb], DataOptions(window=4, chunk=3))[0]["pixel_values"]
    assert np.array_equal(a, b)
    # and reading BGR as if it were RGB would not (the original stack's bug)
    wrong = read_episode(tmp_path / "bgr.h5", DataOptions(channel_order="rgb"))
    assert not np.array_equal(wrong.images, bgr.images)


def test_windows_targets_and_mask(tmp_path):
    ep = read_episode(make_episode(tmp_path / "e.h5", frames=6), DataOptions(action_axes=3))
    ds = EpisodeDataset([ep], DataOptions(window=4, chunk=3, action_axes=3))
    assert len(ds) == 3  # starts 0, 1, 2
    s = ds[2]
    assert s["pixel_values"].shape == (4, 3, 224, 224) and s["targets"].shape == (4, 3, 3)
    # position 3 of the window starting at 2 is frame 5: only 1 future action left
    assert s["mask"][3].tolist() == [1, 0, 0] and s["mask"][0].tolist() == [1, 1, 1]
    assert np.allclose(s["targets"][0], ep.actions[2:5])
    assert np.abs(ep.actions).max() <= 1.0 and np.isclose(np.abs(ep.actions).max(), 1.0)


def test_short_episode_is_padded_and_masked(tmp_path):
    ep = read_episode(make_episode(tmp_path / "e.h5", frames=2), DataOptions())
    s = EpisodeDataset([ep], DataOptions(window=4, chunk=3))[0]
    assert s["mask"][2:].sum() == 0 and s["mask"][1].tolist() == [1, 0, 0]


def test_clamp_range_is_configurable(tmp_path):
    path = tmp_path / "e.h5"
    write_episode(path, sample_frames(3, height=20, width=20), np.array([[2.3, -0.5, 0]] * 3, np.float32))
    ep = read_episode(path, DataOptions(action_range=2.0))
    assert np.allclose(ep.actions[0], [1.0, -0.25])


def test_missing_instruction_uses_the_default(tmp_path):
    ep = read_episode(make_episode(tmp_path / "e.h5", instruction=None), DataOptions(default_instruction="go"))
    assert ep.instruction == "go" and not ep.had_instruction


def test_mirror_negates_linear_y_and_swaps_left_right(tmp_path):
    assert np.allclose(mirror_actions(np.array([[1.0, 0.5, -0.2]])), [[1.0, -0.5, 0.2]])
    assert mirror_instruction("go Left then right, not bright") == "go Right then left, not bright"
    ep = read_episode(make_episode(tmp_path / "e.h5"), DataOptions())
    ds = EpisodeDataset([ep], DataOptions(window=4, chunk=3, mirror=True), augment=True, seed=1)
    plain = EpisodeDataset([ep], DataOptions(window=4, chunk=3))[0]
    seen = set()
    for _ in range(20):
        s = ds[0]
        if s["instruction"].endswith("right"):
            seen.add("mirrored")
            assert np.allclose(s["targets"][..., 1], -plain["targets"][..., 1])
            assert np.allclose(s["targets"][..., 0], plain["targets"][..., 0])
            assert np.allclose(s["pixel_values"], plain["pixel_values"][..., ::-1])
        else:
            seen.add("plain")
    assert seen == {"mirrored", "plain"}


def test_color_jitter_changes_pixels_not_targets(tmp_path):
    ep = read_episode(make_episode(tmp_path / "e.h5"), DataOptions())
    a = EpisodeDataset([ep], DataOptions(window=4, chunk=3))[0]
    b = EpisodeDataset([ep], DataOptions(window=4, chunk=3, color_jitter=0.4), augment=True, seed=3)[0]
    assert not np.allclose(a["pixel_values"], b["pixel_values"]) and np.array_equal(a["targets"], b["targets"])


def _bad(tmp_path, name, mutate):
    path = make_episode(tmp_path / f"{name}.h5")
    with h5py.File(path, "r+") as f:
        mutate(f)
    return path


BAD_CASES = {
    "missing_key": (lambda f: f.__delitem__("actions"), r"missing key\(s\) actions"),
    "wrong_dtype": (lambda f: (f.__delitem__("images"),
                               f.create_dataset("images", data=np.zeros((10, 4, 4, 3), np.float32))),
                    "'images' must be uint8, found float32"),
    "wrong_shape": (lambda f: (f.__delitem__("actions"),
                               f.create_dataset("actions", data=np.zeros((10, 2), np.float32))),
                    r"'actions' must have shape \(T, 3\), found \(10, 2\)"),
    "nan_actions": (lambda f: f["actions"].__setitem__((3, 1), np.nan), "NaN/inf .*frame 3, axis linear_y"),
    "zero_length": (lambda f: (f.__delitem__("images"),
                               f.create_dataset("images", data=np.zeros((0, 4, 4, 3), np.uint8))),
                    "zero-length episode"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_each_bad_file_gives_its_error(tmp_path, case):
    mutate, message = BAD_CASES[case]
    path = _bad(tmp_path, case, mutate)
    with pytest.raises(EpisodeError, match=message) as err:
        read_episode(path)
    assert str(path) in str(err.value)


def test_truncated_and_non_hdf5_files(tmp_path):
    good = make_episode(tmp_path / "good.h5")
    data = good.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(EpisodeError, match=r"trunc\.h5: (unreadable|not an HDF5)"):
        read_episode(tmp_path / "trunc.h5")
    with pytest.raises(EpisodeError, match=r"text\.h5: not an HDF5 file"):
        read_episode(tmp_path / "text.h5")


def test_default_skips_and_lists_strict_stops(tmp_path):
    make_episode(tmp_path / "a.h5")
    _bad(tmp_path, "b", BAD_CASES["nan_actions"][0])
    (tmp_path / "c.h5").write_text("junk")
    paths = sorted(tmp_path.glob("*.h5"))
    warnings = []
    episodes, rejected = load_episodes(paths, DataOptions(), warn=warnings.append)
    assert len(episodes) == 1 and [p.name for p, _ in rejected] == ["b.h5", "c.h5"] and len(warnings) == 2
    with pytest.raises(EpisodeError, match="b.h5"):
        load_episodes(paths, DataOptions(), strict=True)
    proc = run_python("-m", "train.data", str(tmp_path))
    assert proc.returncode == 0
    assert "1 valid, 2 rejected" in proc.stdout and "c.h5: not an HDF5 file" in proc.stdout
    assert "linear_x" in proc.stdout and "angular_z" in proc.stdout
    assert run_python("-m", "train.data", str(tmp_path), "--strict").returncode == 1


def test_split_is_by_episode_seeded_and_disjoint(tmp_path):
    paths = [tmp_path / f"e{i}.h5" for i in range(10)]
    train, val = split_episodes(paths, 0.2, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and len(train) == 8
    assert split_episodes(paths, 0.2, seed=3) == (train, val)
    assert split_episodes(paths, 0.2, seed=4) != (train, val)


# -- the author's later collector layout (issue 13) ------------------------------------------------------

def test_later_collector_layout_reads_with_its_channel_order(tmp_path):
    path, bgr, actions = later_collector_episode(tmp_path / "later.h5")
    assert h5py.File(path)["actions"].dtype == np.float64
    same = write_episode(tmp_path / "collector.h5", bgr, actions.astype(np.float32))
    options = DataOptions(window=4, chunk=3, action_axes=3)  # channel_order "bgr": the collector's default
    later, collector = read_episode(path, options), read_episode(same, options)
    assert later.attrs["layout"] == "later-collector" and collector.attrs["layout"] == "collector"
    assert later.attrs["scenario"] == "1box_vert_left" and later.attrs["distance"] == "medium"
    assert np.array_equal(later.images, collector.images)  # RGB recognised from the layout, not from the flag
    assert np.allclose(later.actions, collector.actions) and later.actions.dtype == np.float32
    assert np.allclose(later.raw_actions[-5:], 0) and np.abs(later.raw_actions[:, 2]).max() == np.float32(0.2)
    a = EpisodeDataset([later], options)[1]["pixel_values"]
    b = EpisodeDataset([collector], options)[1]["pixel_values"]
    assert np.array_equal(a, b)


def test_later_collector_files_that_differ_are_refused_naming_what(tmp_path):
    path, _, _ = later_collector_episode(tmp_path / "no-attrs.h5", attrs=False)
    with pytest.raises(EpisodeError, match=r"no-attrs\.h5: .*observations/images.*scenario, pattern, distance"):
        read_episode(path)
    path, _, _ = later_collector_episode(tmp_path / "both.h5", also_images=True)
    with pytest.raises(EpisodeError, match=r"both\.h5: has both 'images' .* and 'observations/images'"):
        read_episode(path)
    with h5py.File(tmp_path / "neither.h5", "w") as f:
        f.create_dataset("actions", data=np.zeros((3, 3)))
    with pytest.raises(EpisodeError, match=r"no 'images' \(collector\) or 'observations/images'"):
        read_episode(tmp_path / "neither.h5")


# -- recordings as data: intervention weights, summary, split, merge, drop, relabel ------------------------
def recorded_episode(path, frames=6, intervention=None, policy_driven=False, spacing=0.4, instruction="go"):
    from runtime.recording.episode_writer import EpisodeWriter

    images = sample_frames(frames, seed=1, height=20, width=24)
    with EpisodeWriter(path, instruction, attrs={"recording_mode": "step", "frame_spacing_s": spacing,
                                                 "policy_driven": policy_driven}) as w:
        for i in range(frames):
            w.append(images[i], (0.5, 0.0, 0.0), captured=i * spacing,
                     intervention=bool(intervention[i]) if intervention is not None else False)
        return w.finish()


def test_intervention_frames_weigh_in_the_loss_mask_and_policy_frames_can_be_left_out(tmp_path):
    flags = [0, 0, 1, 1, 0, 0]
    path = recorded_episode(tmp_path / "run.h5", intervention=flags, policy_driven=True)
    options = DataOptions(window=2, chunk=3, intervention_weight=4.0, policy_weight=0.0)
    ep = read_episode(path, options)
    assert ep.intervention.tolist() == [bool(f) for f in flags] and ep.weights.tolist() == [0, 0, 4, 4, 0, 0]
    mask = EpisodeDataset([ep], options)[1]["mask"]  # window at frame 1: chunks 1..3 and 2..4
    assert mask.tolist() == [[0, 4, 4], [4, 4, 0]]
    # a plain demonstration (not a policy run) keeps weight 1 for every frame; defaults change nothing
    demo = read_episode(recorded_episode(tmp_path / "demo.h5"), options)
    assert demo.weights is None
    assert read_episode(path, DataOptions()).weights is None


def test_summary_counts_modes_and_the_intervention_share(tmp_path):
    recorded_episode(tmp_path / "episode_0000.h5", intervention=[0, 1, 1, 0, 0, 0], policy_driven=True)
    recorded_episode(tmp_path / "episode_0001.h5")
    proc = run_python("-m", "train.data", "summary", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "2 step (one frame per 0.4 s)" in proc.stdout
    assert "intervention 2 of 12 frames (16.7%) taken over by a person, in 1 policy run(s)" in proc.stdout


def test_frame_spacing_for_the_checkpoint_and_mixed_spacings_refused(tmp_path):
    from train.data import driving_from_episodes

    a = read_episode(recorded_episode(tmp_path / "a.h5", spacing=0.1), DataOptions())
    collector = read_episode(make_episode(tmp_path / "c.h5"), DataOptions())
    assert driving_from_episodes([a]) == {"mode": "step", "frame_spacing_s": 0.1, "source": "recordings"}
    assert driving_from_episodes([collector])["frame_spacing_s"] == 0.4  # the collector: one frame per 0.4 s move
    with pytest.raises(EpisodeError, match="different frame spacings"):
        driving_from_episodes([a, collector])


def test_merge_drop_and_relabel_keep_frames_and_never_overwrite(tmp_path):
    for folder in ("mon", "tue", "all"):
        (tmp_path / folder).mkdir()
    for folder in ("mon", "tue"):
        for i in range(2):
            make_episode(tmp_path / folder / f"episode_{i:04d}.h5", frames=4, seed=i)
    make_episode(tmp_path / "all" / "episode_0000.h5", frames=4, seed=9)  # already there: numbering goes on
    proc = run_python("-m", "train.data", "merge", str(tmp_path / "mon"), str(tmp_path / "tue"), "--out",
                      str(tmp_path / "all"))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == [f"episode_{i:04d}.h5" for i in range(5)]
    with h5py.File(tmp_path / "tue" / "episode_0001.h5") as f, h5py.File(tmp_path / "all" / "episode_0004.h5") as g:
        assert np.array_equal(f["images"][()], g["images"][()])
    before = read_episode(tmp_path / "all" / "episode_0002.h5", DataOptions())
    proc = run_python("-m", "train.data", "relabel", str(tmp_path / "all"), "2", "episode_0003",
                      "--instruction", "reach the bottle on the right")
    assert proc.returncode == 0, proc.stderr
    after = read_episode(tmp_path / "all" / "episode_0002.h5", DataOptions())
    assert after.instruction == "reach the bottle on the right" and np.array_equal(after.images, before.images)
    assert np.array_equal(after.raw_actions, before.raw_actions)
    assert read_episode(tmp_path / "all" / "episode_0001.h5", DataOptions()).instruction != after.instruction
    proc = run_python("-m", "train.data", "drop", str(tmp_path / "all"), "1", "episode_0004.h5")
    assert proc.returncode == 0, proc.stderr
    from train.data import find_episodes

    assert [p.name for p in find_episodes(tmp_path / "all")] == ["episode_0000.h5", "episode_0002.h5",
                                                                 "episode_0003.h5"]
    assert (tmp_path / "all" / "episode_0001.h5.dropped").exists()
    missing = run_python("-m", "train.data", "drop", str(tmp_path / "all"), "7")
    assert missing.returncode == 1 and "no episode '7'" in missing.stderr
    assert not [p for p in (tmp_path / "all").iterdir() if p.name.startswith(".")]  # no temporary left
