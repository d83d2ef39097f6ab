"""The install and run sequence `jetson/gpu_check.sh --dry-run` prints, executed for real in a fresh venv.

    .venv/bin/python -m pytest -q -m slow tests/jetson/test_gpu_check_install.py      # about 3 minutes

Every printed command runs as printed (the venv under a temp folder instead of ./.venv-gpu), in order:
a fresh venv, pip upgraded, torch pinned first, then the project with the runtime, train, export, bench
and jetson extras, then the run steps. Only what cannot install or run without a GPU is a stand-in:

- `tensorrt-cu12-libs` (on PyPI an sdist that downloads the real wheel from NVIDIA's own index, unreachable
  here): a wheel of the same name and version whose `tensorrt_libs` loads stand-ins of libnvinfer,
  libnvinfer_plugin and libnvonnxparser (tests/fakes/reference_signatures.py builds them). The metapackage
  `tensorrt-cu12` and the `tensorrt-cu12-bindings` wheel are the real ones from PyPI, so `import tensorrt`
  runs NVIDIA's real module.
- `pycuda` (an sdist whose build needs the CUDA toolkit): a wheel of the same name and version that fails
  to import its driver as the real one does on a machine without libcuda.

The pip command that installs the extras gets `--find-links` (the stand-ins), `--only-binary` for those two
(so PyPI's sdists are not taken) and a constraint to the versions tests/fakes/ checks the fakes against
(tensorrt-cu12 11.4.0.106, pycuda 2026.1; the dry run's ranges admit them, and a newer tensorrt-cu12 on
PyPI would need a stand-in of its own version). Then: `import tensorrt` prints the real version; the CUDA
device probe fails as it must without a GPU; the tiny GPU check, run exactly as printed, records the
versions and "no usable CUDA device" and exits 1; and run again with the fake GPU on PYTHONPATH it passes
every step (export, engine build, fp16 check, drive, latency) with only what those extras installed.
The real-size line is not run (ten minutes of export; its only difference is --build-timeout).
"""

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakes import gpu as fake_gpu
from tests.fakes.reference_packages import PYCUDA_VERSION, TENSORRT_VERSIONS
from tests.fakes.reference_signatures import stand_in_libraries

TENSORRT_VERSION = TENSORRT_VERSIONS[-1]  # the newest TensorRT the fakes are checked against
STAND_INS = ("tensorrt-cu12-libs", "pycuda")

TENSORRT_LIBS_INIT = '''"""Stand-in tensorrt_libs (tests/jetson/test_gpu_check_install.py): loads libraries that only
satisfy the real tensorrt bindings' links, as the real package loads NVIDIA's."""
import ctypes
from pathlib import Path

for _name in ("libnvinfer.so.{major}", "libnvinfer_plugin.so.{major}", "libnvonnxparser.so.{major}"):
    ctypes.CDLL(str(Path(__file__).parent / _name), mode=ctypes.RTLD_GLOBAL)
'''

PYCUDA_DRIVER = '''"""Stand-in for pycuda.driver on a machine without a GPU: the real one fails here the same way."""
raise ImportError("libcuda.so.1: cannot open shared object file: No such file or directory "
                  "(stand-in pycuda: no NVIDIA driver on this machine)")
'''


def write_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding `files`."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {**files,
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: stand-in\nRoot-Is-Purelib: false\n"
                                        b"Tag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()}"
                     f",{len(data)}\n" for path, data in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name_in_wheel, data in {**files, f"{dist}.dist-info/RECORD": record.encode()}.items():
            z.writestr(name_in_wheel, data)
    return path


def build_stand_ins(directory: Path) -> None:
    major = TENSORRT_VERSION.split(".")[0]
    libraries = directory / "libs"
    libraries.mkdir(parents=True)
    files = {f"tensorrt_libs/{Path(p).name}": Path(p).read_bytes() for p in stand_in_libraries(libraries, major)}
    files["tensorrt_libs/__init__.py"] = TENSORRT_LIBS_INIT.format(major=major).encode()
    write_wheel(directory, "tensorrt-cu12-libs", TENSORRT_VERSION, files)
    write_wheel(directory, "pycuda", PYCUDA_VERSION, {
        "pycuda/__init__.py": f'VERSION_TEXT = "{PYCUDA_VERSION}"\n'.encode(),
        "pycuda/driver.py": PYCUDA_DRIVER.encode()})


def printed_sequence() -> list[str]:
    proc = subprocess.run(["bash", str(ROOT / "jetson" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip() and not line.startswith("#")]


SECONDS: dict[str, float] = {}  # each command's wall time (shown with pytest -rP)


def run(command: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)
    SECONDS[command[:70]] = round(time.perf_counter() - start, 1)
    print(f"{SECONDS[command[:70]]:6.1f} s  {command[:110]}")
    return proc


@pytest.fixture
def work(tmp_path):
    """A temp folder removed at the end (the venv is about 2 GB: pytest would keep the last three)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_the_printed_install_sequence_installs_in_order_and_its_non_gpu_steps_run(work):
    tmp_path = work
    stand_ins = tmp_path / "stand-ins"
    build_stand_ins(stand_ins)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"tensorrt-cu12=={TENSORRT_VERSION}\npycuda=={PYCUDA_VERSION}\n")
    venv = tmp_path / "venv-gpu"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    commands = [c.replace(".venv-gpu", str(venv)) for c in printed_sequence()]
    install, (probe_trt, probe_gpu, tiny, realsize) = commands[:4], commands[4:]
    assert "gpu_check.sh --build-timeout" in realsize  # the real size: not run here (see the docstring)

    # the install, in the printed order: venv, pip, torch pinned, then the extras (jetson's last in the line)
    # torch pinned, from PyTorch's index for the driver's CUDA major (unreachable here: pip takes the same release
    # from the registry or the machine's wheel cache instead, which is what this test can install)
    order = (r"-m venv ", r"pip install --upgrade pip$", r"pip install torch==[0-9.]+ --index-url \S+/cu1\d\d$",
             r"pip install -e '\.\[.*jetson\]'$")
    assert [re.search(p, c) is not None for p, c in zip(order, install)] == [True] * 4, install
    outputs = []
    for i, command in enumerate(install):
        if "pip install -e" in command:  # the extras' command learns where the stand-ins are
            command += (f" --find-links {shlex.quote(str(stand_ins))} --only-binary {','.join(STAND_INS)}"
                        f" -c {shlex.quote(str(constraints))}")
        proc = run(command, env, timeout=900)
        assert proc.returncode == 0, f"step {i + 1} failed: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    # the extras kept the torch the step before installed (an unpinned torch would pull a multi-GB CUDA build)
    installed_by_extras = re.findall(r"^Successfully installed (.*)$", outputs[3], re.M)
    assert installed_by_extras and not re.search(r"(^| )torch-", installed_by_extras[0]), installed_by_extras
    assert f"tensorrt-cu12-{TENSORRT_VERSION}" in installed_by_extras[0] and f"pycuda-{PYCUDA_VERSION}" in \
        installed_by_extras[0]
    python = venv / "bin" / "python"
    listed = json.loads(subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True,
                                       text=True, check=True).stdout)
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in listed}
    torch_pin = re.search(r"torch==([0-9.]+)", install[2]).group(1)
    assert installed["torch"].split("+")[0] == torch_pin  # the extras did not move the pinned torch
    assert installed["tensorrt-cu12"] == installed["tensorrt-cu12-bindings"] == TENSORRT_VERSION
    assert installed["pycuda"] == PYCUDA_VERSION
    for needed in ("onnx", "onnxruntime", "transformers", "lightning", "mobile-vla-edge"):
        assert needed in installed or any(k.startswith(needed) for k in installed), (needed, sorted(installed))

    # `import tensorrt`: NVIDIA's real module (the metapackage's shim, the bindings), on the stand-in libraries
    proc = run(probe_trt, env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"tensorrt {TENSORRT_VERSION}", proc.stdout + proc.stderr

    # the CUDA device probe: without a GPU it must fail, saying why and what to do
    proc = run(probe_gpu, env, timeout=120)
    assert proc.returncode == 1 and "pycuda.driver does not import" in proc.stderr and "Fix:" in proc.stderr, \
        proc.stdout + proc.stderr

    # the tiny check exactly as printed: no GPU here, so one JSON that says so, with the versions, and exit 1
    out = tmp_path / "no-gpu.json"
    proc = run(tiny, {**env, "OUT": str(out)}, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"] is False and result["gpu"] is None and "CUDA" in result["error"]
    assert result["versions"]["tensorrt"] == TENSORRT_VERSION and result["versions"]["torch"].startswith(torch_pin)
    assert result["versions"]["pycuda"] == "2026.1"

    # the same line on the fake GPU: every step, export first, runs with what the printed install installed
    out = tmp_path / "fake-gpu.json"
    fast = tiny.replace("--steps 20", "--steps 4") + f" --work {shlex.quote(str(tmp_path / 'work'))}"
    proc = run(fast, {**env, "OUT": str(out), "PYTHONPATH": fake_gpu.subprocess_pythonpath()}, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    steps = result["sizes"]["tiny"]["steps"]
    assert result["ok"] is True and list(steps) == ["export", "build_engines", "verify_trt", "drive", "latency"]
    assert steps["export"]["bundle_bytes"] > 0 and steps["drive"]["steps"] >= 1
    assert result["versions"]["torch"].startswith(torch_pin)
