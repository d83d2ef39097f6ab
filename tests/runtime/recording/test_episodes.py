"""runtime.recording.episodes reads both collectors' layouts and hands out camera-order (BGR) frames."""

import numpy as np
import pytest

from runtime.recording.episodes import EpisodeFileError, read_episode_arrays
from sim.episodes import write_episode
from tests.fixtures.episodes import later_collector_episode


def test_later_collector_frames_come_back_in_the_cameras_order(tmp_path):
    path, bgr, actions = later_collector_episode(tmp_path / "later.h5")
    images, got_actions, instruction = read_episode_arrays(path)
    assert np.array_equal(images, bgr) and images.flags.c_contiguous
    assert np.allclose(got_actions, actions) and instruction is None
    collector = write_episode(tmp_path / "c.h5", bgr, actions.astype(np.float32))
    assert np.array_equal(read_episode_arrays(collector)[0], images)


def test_an_unknown_layout_is_refused(tmp_path):
    path, _, _ = later_collector_episode(tmp_path / "x.h5", attrs=False)
    with pytest.raises(EpisodeFileError, match=r"x\.h5: .*scenario, pattern, distance"):
        read_episode_arrays(path)
