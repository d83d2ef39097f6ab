"""Episodes for the training tests: the coloured-blocks task, written by the synthetic collector once."""

import pytest

from tests.conftest import run_python


@pytest.fixture(scope="session")
def episodes(tmp_path_factory):
    """20 episodes of 8 frames: a block whose colour says which way to go (sim.synth --task blocks)."""
    out = tmp_path_factory.mktemp("episodes")
    proc = run_python("-m", "sim.synth", "--task", "blocks", "--episodes", "20", "--frames", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out
