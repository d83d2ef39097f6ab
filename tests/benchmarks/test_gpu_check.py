"""The GPU proof script here, against the fake GPU (its modules on PYTHONPATH for every subprocess it starts):
argument handling, every step run for real through our code, and the JSON's structure."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_python
from tests.fakes import gpu as fake_gpu

FAKE = {"PYTHONPATH": fake_gpu.subprocess_pythonpath()}
STEPS = ["export", "build_engines", "verify_trt", "drive", "latency"]


def test_gpu_check_script_runs_every_step_against_the_fake_and_writes_one_json(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run(["bash", str(ROOT / "jetson" / "gpu_check.sh"), "--sizes", "tiny", "--steps", "4",
                           "--work", str(tmp_path / "work"), "--build-timeout", "120"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **FAKE, "PYTHON": sys.executable, "OUT": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"] is True and result["gpu"] == "Fake Orin"
    assert {"python", "tensorrt", "onnxruntime", "torch", "l4t"} <= set(result["versions"])
    assert result["versions"]["tensorrt"] == "10.3.0"
    steps = result["sizes"]["tiny"]["steps"]
    assert list(steps) == STEPS and all(s["ok"] and s["seconds"] >= 0 for s in steps.values())
    assert set(steps["build_engines"]["engines"]) == {"vision", "language", "action_head"}
    assert steps["verify_trt"]["tolerance"] == {"action_max_abs": 2e-2, "feature_cosine": 0.999}
    assert 1 <= steps["drive"]["steps"] <= 4 and steps["drive"]["infer_ms_mean"] > 0
    assert set(steps["drive"]["stage_ms_mean"]) == {"preprocess", "vision", "language", "head"}
    assert steps["latency"]["end_to_end_ms"]["n"] == 4 and steps["latency"]["control_rate_hz"]["mean"] > 0


def test_gpu_check_dry_run_prints_the_install_and_run_sequence_from_the_project_files():
    """What a fresh x86-64 GPU machine runs, in order, with the packages pyproject and the Makefile name (the
    names and ranges were checked to resolve on PyPI: jetson/README.md)."""
    proc = subprocess.run(["bash", str(ROOT / "jetson" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    commands = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    makefile_torch = "torch==" + re.search(r"^TORCH_VERSION := ([0-9.]+)$", (ROOT / "Makefile").read_text(),
                                           re.M).group(1)
    expected = ["python3 -m venv .venv-gpu", "pip install --upgrade pip", f"pip install {makefile_torch} --index-url",
                "pip install -e '.[runtime,train,export,bench,jetson]'", "import tensorrt",
                "-m runtime.policy.backends.cuda_device", "gpu_check.sh --sizes tiny", "gpu_check.sh --build-timeout"]
    assert len(commands) == len(expected)
    for command, part in zip(commands, expected):
        assert part in command, (part, command)
    jetson = re.search(r'^jetson = \[(.*)\]$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert '"tensorrt-cu12>=10.3,<12; ' in jetson and f"The jetson extra is {jetson}." in proc.stdout
    assert "CUDA 12 toolkit" in proc.stdout  # what pycuda's source build needs


def test_gpu_check_without_a_gpu_says_so_in_the_json_and_fails(tmp_path):
    out = tmp_path / "none.json"
    proc = run_python("-m", "benchmarks.gpu_check", "--out", str(out), "--sizes", "tiny", timeout=120)
    if proc.returncode == 0:
        return  # a real GPU is here: the first test's job
    result = json.loads(out.read_text())
    assert result["ok"] is False and result["gpu"] is None and "CUDA" in result["error"] and result["sizes"] == {}


def test_gpu_check_arguments_are_checked():
    bad = run_python("-m", "benchmarks.gpu_check", "--out", "x.json", "--sizes", "huge", timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'huge'" in bad.stderr
    missing = run_python("-m", "benchmarks.gpu_check", timeout=60)
    assert missing.returncode == 2 and "--out" in missing.stderr


@pytest.mark.slow
def test_gpu_check_on_a_bundle_exported_elsewhere_builds_drives_and_times_it_without_torch(tiny_bundle_dir, tmp_path):
    """A Jetson's check: no export and no PyTorch comparison (skipped, said so), the rest on the fake GPU (~10 s)."""
    out = tmp_path / "jetson.json"
    proc = run_python("-m", "benchmarks.gpu_check", "--out", str(out), "--bundle", str(tiny_bundle_dir), "--steps",
                      "3", "--work", str(tmp_path / "work"), "--build-timeout", "120", env=FAKE, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    steps = result["sizes"]["tiny"]["steps"]
    assert result["ok"] is True and list(steps) == STEPS and all(s["ok"] for s in steps.values())
    assert "exported on another machine" in steps["export"]["skipped"]
    assert "no PyTorch" in steps["verify_trt"]["skipped"]
    assert steps["drive"]["steps"] >= 1 and not list(tiny_bundle_dir.glob("*.engine"))  # built into a copy
