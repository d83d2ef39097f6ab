"""What machine a benchmark ran on: CPU, cores, GPU, library versions, Jetson power mode."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi"):
        name = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]).splitlines()
        if name:
            return name[0]
    model = Path("/proc/device-tree/model")
    if model.exists():
        return model.read_text().strip("\0\n ")
    return None


def jetson_power_mode() -> str | None:
    if not shutil.which("nvpmodel"):
        return None
    out = _run(["nvpmodel", "-q"])
    m = re.search(r"NV Power Mode:\s*(\S+)", out)
    return m.group(1) if m else out or None


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("onnxruntime", "tensorrt", "numpy", "cv2", "torch"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except ImportError:
            pass
    return out


def describe() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(), "gpu": gpu_name(),
            "power_mode": jetson_power_mode(), "versions": versions(), "hostname": platform.node()}


def short_name(info: dict) -> str:
    base = info.get("gpu") or info.get("cpu") or "machine"
    return re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:40] + f"-{info.get('cores')}c"
