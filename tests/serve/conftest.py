"""A policy server on the tiny bundle, on a background thread, loopback only."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tiny_bundle_dir):
    from runtime.policy.bundle import load_bundle

    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="session")
def engine(tiny_bundle):
    from serve.engine import Engine, EngineConfig

    engine = Engine(tiny_bundle, EngineConfig(backend="ort-cpu", workers=2))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def server(engine):
    from serve.server import ServerConfig, ServerThread

    with ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, max_message_bytes=1 << 20)) as running:
        yield running


@pytest.fixture(scope="session")
def onboard(tiny_bundle):
    """make(instruction) -> a fresh onboard Policy on ONNX Runtime CPU (the reference the server must equal)."""
    from runtime.policy.backends.registry import make_backend
    from runtime.policy.onboard import Policy

    backend = make_backend(tiny_bundle, "ort-cpu").activate()
    yield lambda instruction=None: Policy(tiny_bundle, backend, instruction=instruction)
    backend.deactivate()


def robot_frames(seed: int, n: int, height: int = 144, width: int = 256) -> list[np.ndarray]:
    """n camera-like BGR frames of one simulated robot."""
    from runtime.cameras.sample_frames import sample_frames

    return list(sample_frames(n, seed=seed, height=height, width=width))
