"""`python -m train.fit --init imported/`: from an imported checkpoint onto our layout (issue 13)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_python
from tests.fixtures.robovlms import LightningLike, OriginalPolicy, configs, lightning_checkpoint
from train.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from train.import_robovlms import import_checkpoint

    folder = tmp_path_factory.mktemp("init")
    torch.save(lightning_checkpoint(LightningLike(OriginalPolicy(seed=8)), {"configs": configs(window=4)}),
               folder / "epoch=9.ckpt")
    import_checkpoint(folder / "epoch=9.ckpt", folder / "imported")
    return folder / "imported"


def test_init_config_takes_the_head_and_base_and_switches_to_our_layout(imported):
    from train.init import init_config, init_from_checkpoint
    from train.model import MobileVLA

    src, _, _ = load_checkpoint(imported)
    assert src.config.prompt_layout == "robovlms-fallback"
    cfg = init_config(imported, window=4, seed=1)
    assert cfg.prompt_layout == "mobile-vla" and cfg.preprocess["model_channel_order"] == "rgb"
    assert cfg.weights == str(imported) and cfg.head_mlp == (1024, 512, 256) and cfg.chunk == 10
    model = MobileVLA(cfg)  # the base is the imported backbone ...
    for k, v in src.kosmos.state_dict().items():
        assert torch.equal(model.kosmos.state_dict()[k], v), k
    init_from_checkpoint(model, imported)  # ... and ACT and the head start from the imported ones
    for k, v in src.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[k], v), k
    assert torch.equal(model.action_token, src.action_token)
    with pytest.raises(CheckpointError, match="chunk = 10, --chunk asks for 4"):
        init_config(imported, chunk=4)


def test_refit_from_an_import_lowers_val_loss_and_exports_with_our_layout(imported, tmp_path):
    from export.to_onnx import ExportOptions, export_bundle

    episodes = tmp_path / "episodes"
    proc = run_python("-m", "sim.synth", "--task", "blocks", "--episodes", "10", "--frames", "8",
                      "--out", str(episodes))
    assert proc.returncode == 0, proc.stderr
    proc = run_python("-m", "train.fit", "--init", str(imported), "--data", str(episodes),
                      "--out", str(tmp_path / "runs"), "--name", "migrated", "--window", "4", "--max-epochs", "4",
                      "--lr", "1e-3", "--batch-size", "2", "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ACT and head start from {imported}" in proc.stderr
    summary = json.loads((tmp_path / "runs" / "migrated" / "summary.json").read_text())
    assert summary["best_val_loss"] < summary["first_val_loss"], summary
    best = tmp_path / "runs" / "migrated" / "checkpoints" / "best"
    meta = json.loads((best / "config.json").read_text())
    assert meta["kind"] == "adapter" and meta["model"]["prompt_layout"] == "mobile-vla"
    assert meta["model"]["weights"] == str(imported)
    model, tokenizer, meta = load_checkpoint(best, merge=True)  # the base fingerprint matched the import
    # LoRA was not asked for: it stayed at zero, so the backbone is still the imported one
    src, _, _ = load_checkpoint(imported)
    q = "text_model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.kosmos.state_dict()[q], src.kosmos.state_dict()[q])
    bundle = export_bundle(model, tokenizer, tmp_path / "bundle", ExportOptions(origin=str(best), verify_seeds=(0,)),
                           ckpt_meta=meta)
    m = json.loads((bundle / "bundle.json").read_text())
    assert m["prompt"]["layout"] == "mobile-vla" and m["preprocess"]["model_channel_order"] == "rgb"
    assert m["variants"]["fp32"]["parity"]["passed"]
