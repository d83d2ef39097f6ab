"""openpi-client's own WebsocketClientPolicy (the registry's 0.1.2) against our server.

openpi-client pins numpy<2 and needs dm-tree, which the project's environment
must not get: it runs in a venv of its own (tests/helpers/openpi.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.openpi import OPENPI_ACTIONS_SCRIPT, openpi_python
from tests.serve.conftest import robot_frames


def test_openpi_websocket_client_policy_gets_the_onboard_actions(engine, onboard, tmp_path):
    from serve.server import ServerConfig, ServerThread

    python = openpi_python()
    frames = robot_frames(11, 6)
    np.save(tmp_path / "frames.npy", np.stack([f[..., ::-1] for f in frames]))  # RGB, as openpi sends
    with ServerThread(engine, ServerConfig(port=0, api_key="k")) as running:
        out = subprocess.run([python, "-c", OPENPI_ACTIONS_SCRIPT, running.url, "k", str(tmp_path / "frames.npy"),
                              str(tmp_path / "actions.npy")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["numpy"].startswith("1.") and info["window"] == 8
    policy = onboard("reach the bottle on the left")
    expected = np.stack([policy.infer(f).chunk for f in frames])
    assert np.array_equal(np.load(tmp_path / "actions.npy"), expected)


def test_openpi_clients_see_our_errors_as_its_runtime_error(engine, tmp_path):
    from serve.server import ServerConfig, ServerThread

    python = openpi_python()
    script = ("import sys\nfrom openpi_client.websocket_client_policy import WebsocketClientPolicy\n"
              "p = WebsocketClientPolicy(host=sys.argv[1])\n"
              "try:\n    p.infer({'prompt': 'no image'})\nexcept RuntimeError as e:\n    print('ERR', e)\n")
    with ServerThread(engine, ServerConfig(port=0)) as running:
        out = subprocess.run([python, "-c", script, running.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "no 'image'" in out.stdout


if sys.platform != "linux":  # the venv layout (bin/python) and the wheels used here are Linux's
    pytestmark = pytest.mark.skip(reason="the openpi-client venv is set up for Linux")
