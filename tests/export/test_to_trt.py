"""Engine builds fail loudly and leave the bundle as it was: the Python builder and the trtexec script."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from runtime.bundle import load_bundle
from tests.conftest import ROOT
from tests.fakes import gpu as fake_gpu

SCRIPT = ROOT / "jetson" / "build_engines.sh"


def snapshot(bundle):
    """bundle.json bytes and the sha256 of every engine file, plus any leftover temporary file."""
    engines = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(bundle.glob("*.engine"))}
    leftovers = sorted(p.name for p in bundle.iterdir() if p.name.startswith(".") and p.name != ".verified.json")
    return (bundle / "bundle.json").read_bytes(), engines, leftovers


@pytest.fixture
def bundle_copy(tiny_bundle_dir, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, dst)
    return dst


def test_python_build_failing_after_a_good_build_keeps_bundle_and_old_engines(bundle_copy, monkeypatch, capsys):
    from export.to_trt import build_all, main

    fake_gpu.install(monkeypatch, version="10.3.0")
    build_all(bundle_copy, log=lambda s: None)
    before = snapshot(bundle_copy)
    assert len(before[1]) == 3 and before[2] == []
    fake_gpu.FakeTensorRT.__version__ = "10.3.1"  # a JetPack update: the rebuild would record a new version
    fake_gpu.fail("build_serialized_network", after=1)  # vision builds, language runs out of memory
    assert main([str(bundle_copy)]) == 1
    err = capsys.readouterr().err
    assert "language.fp16.onnx: TensorRT engine build failed" in err and "bundle.json unchanged" in err
    assert snapshot(bundle_copy) == before
    assert {e["tensorrt_version"] for e in load_bundle(bundle_copy).manifest["engines"]} == {"10.3.0"}


def stand_in_trtexec(tmp_path, fail_on=None):
    """A trtexec on PATH that writes its --saveEngine file; with fail_on, that graph writes junk and exits 1."""
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"""#!/usr/bin/env bash
for a in "$@"; do case $a in --saveEngine=*) out=${{a#--saveEngine=}};; --onnx=*) onnx=${{a#--onnx=}};; esac; done
if [[ -n "{fail_on or ''}" && $onnx == *{fail_on or 'never'}* ]]; then
  echo "half an engine" > "$out"
  echo "[E] Error[2]: [virtualMemoryBuffer.cpp::resizePhysical] out of memory" >&2
  exit 1
fi
echo "engine built from $onnx" > "$out"
echo "[I] GPU Compute Time: min = 1.0 ms, mean = 1.2 ms"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def run_script(bundle, trtexec, version):
    env = {**os.environ, "PATH": f"{trtexec.parent}{os.pathsep}{os.environ['PATH']}", "TRT_VERSION": version,
           "GPU_NAME": "Orin", "PYTHON": sys.executable}
    env.pop("TRTEXEC", None)
    return subprocess.run(["bash", str(SCRIPT), str(bundle)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_build_engines_script_with_trtexec_failing_after_a_good_build_changes_nothing(bundle_copy, tmp_path):
    good = run_script(bundle_copy, stand_in_trtexec(tmp_path), "10.3.0")
    assert good.returncode == 0, good.stdout + good.stderr
    before = snapshot(bundle_copy)
    assert len(before[1]) == 3
    bad = run_script(bundle_copy, stand_in_trtexec(tmp_path, fail_on="language"), "10.3.1")
    assert bad.returncode != 0
    assert "trtexec failed for language (exit 1)" in bad.stderr and "unchanged" in bad.stderr
    assert snapshot(bundle_copy) == before  # bundle.json, the old engines, and no temporary file left
    m = json.loads((bundle_copy / "bundle.json").read_text())
    assert {e["tensorrt_version"] for e in m["engines"]} == {"10.3.0"}
    load_bundle(bundle_copy, verify="full")


def test_build_engines_script_records_under_the_cuda_device_name(bundle_copy, tmp_path):
    """Without GPU_NAME the script asks runtime.backends.cuda_device (here: the fake, via PYTHONPATH)."""
    env = {**os.environ, "PATH": f"{stand_in_trtexec(tmp_path).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "PYTHONPATH": f"{ROOT / 'tests' / 'fakes' / 'gpu_modules'}{os.pathsep}{ROOT}"}
    for var in ("TRTEXEC", "GPU_NAME", "TRT_VERSION"):
        env.pop(var, None)
    proc = subprocess.run(["bash", str(SCRIPT), str(bundle_copy)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    engines = load_bundle(bundle_copy).manifest["engines"]
    assert {(e["gpu"], e["tensorrt_version"]) for e in engines} == {(fake_gpu.FakeTensorRT.gpu, "10.3.0")}
