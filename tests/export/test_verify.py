"""export.verify: the bundle against PyTorch, per graph and end to end, on ONNX Runtime and (fake) TensorRT."""

import pytest

from tests.conftest import run_python
from tests.fakes import gpu as fake_gpu


def test_verify_command_passes_and_prints_a_table(tiny_bundle_dir, tiny_checkpoint):
    proc = run_python("-m", "export.verify", str(tiny_bundle_dir), "--ckpt", str(tiny_checkpoint))
    assert proc.returncode == 0, proc.stderr
    for word in ("image_embeds", "act_feature", "head_chunk", "end_to_end", "max abs", "cosine", "PASS"):
        assert word in proc.stdout


# slow (20 s: a second model exported): after the suite, make test-slow-ci
@pytest.mark.slow
def test_verify_fails_against_another_model(tiny_bundle_dir, tmp_path, tiny_tokenizer):
    from train.checkpoint import save_checkpoint
    from train.config import preset_config
    from train.model import build_model

    other = save_checkpoint(build_model(preset_config("tiny", seed=3)), tmp_path / "other", tiny_tokenizer)
    proc = run_python("-m", "export.verify", str(tiny_bundle_dir), "--ckpt", str(other))
    assert proc.returncode == 1 and "FAIL" in proc.stdout


def test_verify_with_trt_backend_uses_fp16_tolerance(bundle_copy, monkeypatch, tiny_checkpoint):
    from export.to_trt import build_all
    from export.verify import verify_bundle
    from train.checkpoint import load_checkpoint

    fake_gpu.install(monkeypatch)
    build_all(bundle_copy)
    model, tok, _ = load_checkpoint(tiny_checkpoint)
    report = verify_bundle(bundle_copy, model, tok, backend="trt", seeds=(0,), progress=lambda s: None)
    assert report["fp16-engine"]["passed"]
    assert report["fp16-engine"]["tolerance"] == {"action_max_abs": 2e-2, "feature_cosine": 0.999}


