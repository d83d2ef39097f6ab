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
    assert all(e["tensorrt_version"] == "10.3.0" and e["gpu"] == "Orin (fake)" for e in engines.values())
    # each engine's precision is its build input's: the head is built from its fp32 graph
    assert {g: (e["precision"], e["file"]) for g, e in engines.items()} == {
        "vision": ("fp16", "vision.fp16.engine"), "language": ("fp16", "language.fp16.engine"),
        "action_head": ("fp32", "action_head.fp32.engine")}
    load_bundle(bundle_copy)  # sha256 of the engines recorded and valid


def test_to_trt_without_tensorrt_says_where_it_comes_from(tiny_bundle_dir):
    proc = run_python("-m", "export.to_trt", str(tiny_bundle_dir))
    assert proc.returncode == 1 and "JetPack" in proc.stderr


# ------------------------------------------------------------------ trtexec script


def test_a_timing_cache_from_another_gpu_is_discarded_with_a_warning_not_fatal(bundle_copy, monkeypatch, caplog):
    """A desktop build's timing cache copied to the robot with the bundle: TensorRT refuses it with
    ignore_mismatch=False; the build goes on with a fresh cache and saves this GPU's."""
    from export.to_trt import build_all

    fake_gpu.install(monkeypatch, version="10.3.0", gpu="Orin (fake)")
    (bundle_copy / "timing.cache").write_bytes(b"fake-timing-cache NVIDIA GeForce RTX 4090 11.4.0.106")
    with caplog.at_level("WARNING", logger="export.to_trt"):
        manifest = build_all(bundle_copy, workspace_gb=1)
    assert len(manifest["engines"]) == 3
    assert "timing cache" in caplog.text and "discarded" in caplog.text
    assert (bundle_copy / "timing.cache").read_bytes() == b"fake-timing-cache Orin (fake) 10.3.0"
    caplog.clear()
    with caplog.at_level("WARNING", logger="export.to_trt"):
        build_all(bundle_copy, workspace_gb=1)  # its own cache now: taken without a word
    assert "timing cache" not in caplog.text


def test_a_bundle_without_the_fp16_input_builds_fp32_engines_named_and_recorded_so(bundle_copy, monkeypatch, caplog):
    import json

    from export.to_trt import build_all

    m = json.loads((bundle_copy / "bundle.json").read_text())
    del m["engine_build"]  # as exported with --no-engine-input
    (bundle_copy / "bundle.json").write_text(json.dumps(m))
    fake_gpu.install(monkeypatch, version="10.3.0")
    with caplog.at_level("WARNING", logger="export.to_trt"):
        manifest = build_all(bundle_copy, workspace_gb=1)
    assert "no fp16 engine-build inputs" in caplog.text and "fp32 engines" in caplog.text
    assert [os.path.basename(b["onnx"]) for b in fake_gpu.MACHINE.builds] == ["vision.onnx", "language.onnx",
                                                                              "action_head.onnx"]
    assert [(e["file"], e["precision"]) for e in manifest["engines"]] == [
        ("vision.fp32.engine", "fp32"), ("language.fp32.engine", "fp32"), ("action_head.fp32.engine", "fp32")]
    assert not list(bundle_copy.glob("*.fp16.engine"))


def test_the_builder_pool_follows_one_rule_per_board(tmp_path):
    from runtime.policy.engines import WORKSPACE_RULES, swap_warning, workspace_rule

    gib = 1 << 30
    # MemTotal as the boards report it (the GPU's carve-out and the kernel's reserve come off the nominal size)
    assert workspace_rule(int(7.4 * gib))[:2] == (1024, 8)  # Orin Nano / NX 8 GB
    assert workspace_rule(int(15.3 * gib))[:2] == (2048, 0)  # Orin NX 16 GB
    assert workspace_rule(int(30.0 * gib))[:2] == (4096, 0) == workspace_rule(int(61 * gib))[:2]  # AGX 32 / 64 GB
    assert len(WORKSPACE_RULES) == 3
    assert "8 GB swap file" in swap_warning(int(7.4 * gib), 2 * gib)
    assert swap_warning(int(7.4 * gib), 8 * gib) is None and swap_warning(int(15.3 * gib), 0) is None
