"""Shared fixtures: the tiny preset, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def run_python(*args, cwd=ROOT, timeout=300, env=None):
    """Run `python ARGS` as a user would; returns CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env)
