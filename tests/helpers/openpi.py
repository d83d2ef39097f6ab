"""openpi-client's own WebsocketClientPolicy (the registry's 0.1.2), in a venv of its own.

    from tests.helpers.openpi import openpi_python, OPENPI_ACTIONS_SCRIPT
    python = openpi_python()        # .venv-openpi/bin/python, created the first time (~30 s, from PyPI)
    subprocess.run([python, "-c", OPENPI_ACTIONS_SCRIPT, url, key, "frames.npy", "actions.npy"])

openpi-client pins numpy<2 and needs dm-tree, which the project's environment
must not get: it runs in `.venv-openpi/` at the repository root, reused after
the first run (`make openpi-venv` creates it ahead).
"""

from __future__ import annotations

import subprocess
import venv

from tests.helpers.processes import ROOT

OPENPI_CLIENT = "openpi-client==0.1.2"
# 0.1.2 imports typing_extensions (websocket_client_policy.py) without declaring it: installed beside it
EXTRA = "typing-extensions>=4"
VENV = ROOT / ".venv-openpi"

# argv: url, api key ("" for none), frames.npy (RGB), actions.npy to write; prints the metadata's facts as JSON
OPENPI_ACTIONS_SCRIPT = """
import json, sys
import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy

url, key, frames_path, out_path = sys.argv[1:5]
policy = WebsocketClientPolicy(host=url, api_key=key or None)
frames = np.load(frames_path)
actions = [policy.infer({"image": f, "prompt": "reach the bottle on the left"})["actions"] for f in frames]
np.save(out_path, np.stack(actions))
meta = policy.get_server_metadata()
print(json.dumps({"window": meta["window"], "model": meta["model_sha256"], "modes": meta["modes"],
                  "numpy": np.__version__}))
"""


def openpi_python() -> str:
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if not marker.exists() or marker.read_text() != f"{OPENPI_CLIENT} {EXTRA}":
        venv.create(VENV, with_pip=True, clear=True)
        out = subprocess.run([str(python), "-m", "pip", "install", "-q", OPENPI_CLIENT, EXTRA], capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, f"pip install {OPENPI_CLIENT} into {VENV} failed:\n{out.stderr[-2000:]}"
        marker.write_text(f"{OPENPI_CLIENT} {EXTRA}")
    return str(python)
