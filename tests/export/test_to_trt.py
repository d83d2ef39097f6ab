"""export.to_trt: the Python engine builder against a fake TensorRT as strict as the real one."""

import os

from runtime.policy.bundle import load_bundle
from tests.conftest import run_python, snapshot
from tests.fakes import gpu as fake_gpu


def test_python_build_failing_after_a_good_build_keeps_bundle_and_old_engines(bundle_copy, monkeypatch, capsys):
    from export.to_trt import build_all, main

    fake_gpu.install(monkeypatch, version="10.3.0")
    build_all(bundle_copy)
    before = snapshot(bundle_copy)
    assert len(before[1]) == 3 and before[2] == []
    fake_gpu.FakeTensorRT.__version__ = "10.3.1"  # a JetPack update: the rebuild would record a new version
    fake_gpu.fail("build_serialized_network", after=1)  # vision builds, language runs out of memory
    assert main([str(bundle_copy)]) == 1
    err = capsys.readouterr().err
    assert "language.fp16.onnx: TensorRT engine build failed" in err and "bundle.json unchanged" in err
    assert snapshot(bundle_copy) == before
    assert {e["tensorrt_version"] for e in load_bundle(bundle_copy).manifest["engines"]} == {"10.3.0"}


def test_python_builder_builds_strongly_typed_with_workspace_profile_and_records_engines(bundle_copy, monkeypatch):
    from export.to_trt import build_all

    fake_gpu.install(monkeypatch, version="10.3.0", gpu="Orin (fake)")
    builds = fake_gpu.MACHINE.builds
    manifest = build_all(bundle_copy, workspace_gb=2)
    assert [b["strongly_typed"] for b in builds] == [True, True, True]
    # the parser reads the fp16-weights ONNX export wrote for it (half the host memory), the head in fp32
    assert [os.path.basename(b["onnx"]) for b in builds] == ["vision.fp16.onnx", "language.fp16.onnx",
                                                                 "action_head.onnx"]
    assert all(b["workspace"] == 2 * 1024**3 for b in builds)
    w = manifest["policy"]["window"]
    d = manifest["model"]["hidden_size"]
    assert builds[0]["profiles"] == [] and builds[1]["profiles"] == []
    assert builds[2]["profiles"] == [{"act_features": [[1, 1, d], [1, w, d], [1, w, d]]}]
    assert (bundle_copy / "timing.cache").is_file()
    engines = {e["graph"]: e for e in manifest["engines"]}
    assert set(engines) == {"vision", "language", "action_head"}
    assert all(e["tensorrt_version"] == "10.3.0" and e["gpu"] == "Orin (fake)" and e["precision"] == "fp16"
               for e in engines.values())
    load_bundle(bundle_copy)  # sha256 of the engines recorded and valid


def test_to_trt_without_tensorrt_says_where_it_comes_from(tiny_bundle_dir):
    proc = run_python("-m", "export.to_trt", str(tiny_bundle_dir))
    assert proc.returncode == 1 and "JetPack" in proc.stderr


# ------------------------------------------------------------------ trtexec script
