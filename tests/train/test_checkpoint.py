"""Checkpoint folders: bit-identical round trips, adapters, and clear errors."""

import json
import shutil

import pytest
import torch

from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.examples import example_inputs


def _outputs(model, cfg, tok):
    ex = example_inputs(cfg, tok, seed=7)
    with torch.no_grad():
        return model(ex.pixel_values, ex.prompt)


def test_merged_round_trip_is_bit_identical(tiny_checkpoint, tiny_model, tiny_config, tiny_tokenizer):
    loaded, tok, meta = load_checkpoint(tiny_checkpoint)
    assert meta["kind"] == "merged"
    assert tok.get_vocab() == tiny_tokenizer.get_vocab()
    assert torch.equal(_outputs(loaded, tiny_config, tiny_tokenizer), _outputs(tiny_model, tiny_config, tiny_tokenizer))


def test_adapter_checkpoint_holds_only_lora_act_head_and_round_trips(tmp_path, tiny_config, tiny_tokenizer):
    from safetensors import safe_open

    from train.lora import LoraSettings, apply_lora
    from train.model import build_model

    model = apply_lora(build_model(tiny_config), LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # LoRA B starts at zero; make the adapter matter
    model.eval()
    out = save_checkpoint(model, tmp_path / "adapter", tiny_tokenizer, kind="adapter")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k or k == "action_token" or k.startswith("head.") for k in keys)
    assert any("text_model" in k for k in keys) and any("image_to_text_projection" in k for k in keys)
    assert not any("vision_model" in k for k in keys)  # vision tower not adapted by default
    loaded, _, meta = load_checkpoint(out)
    assert meta["kind"] == "adapter" and meta["lora"]["r"] == 4
    expected = _outputs(model, tiny_config, tiny_tokenizer)
    assert torch.equal(_outputs(loaded, tiny_config, tiny_tokenizer), expected)
    merged, _, _ = load_checkpoint(out, merge=True)
    assert (_outputs(merged, tiny_config, tiny_tokenizer) - expected).abs().max() < 1e-5


def test_adapter_on_a_different_base_is_refused(tmp_path, tiny_config, tiny_tokenizer):
    from train.lora import LoraSettings, apply_lora
    from train.model import build_model

    model = apply_lora(build_model(tiny_config), LoraSettings(r=2))
    out = save_checkpoint(model, tmp_path / "adapter", tiny_tokenizer, kind="adapter")
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["seed"] = 99  # now the base would be built from another seed
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different base model"):
        load_checkpoint(out)


def test_corrupted_safetensors_is_named(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is unreadable"):
        load_checkpoint(bad)


def test_missing_config_is_named(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_checkpoint(bad)


def test_unknown_preset_is_named(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["model"]["preset"] = "gigantic"
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"config\.json: unknown preset 'gigantic'"):
        load_checkpoint(bad)


def test_foreign_json_and_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text('{"architectures": ["Kosmos2Model"]}')
    with pytest.raises(CheckpointError, match="'format' is None, expected 'mobile-vla-checkpoint'"):
        load_checkpoint(tmp_path / "x")


def test_weights_of_another_shape_are_named(tmp_path, tiny_tokenizer):
    from train.config import preset_config
    from train.model import build_model

    out = save_checkpoint(build_model(preset_config("tiny", chunk=3)), tmp_path / "c3", tiny_tokenizer)
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["chunk"] = 10
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"head\.mlp\.4\.(weight|bias) has shape .* the model expects"):
        load_checkpoint(out)


def test_failed_save_leaves_nothing(tmp_path, tiny_model):
    class ExplodingTokenizer:
        def save(self, path):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tiny_model, tmp_path / "ckpt", ExplodingTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_when_asked(tmp_path, tiny_model, tiny_tokenizer):
    out = save_checkpoint(tiny_model, tmp_path / "ckpt", tiny_tokenizer)
    with pytest.raises(FileExistsError, match="already exists"):
        save_checkpoint(tiny_model, out, tiny_tokenizer)
    save_checkpoint(tiny_model, out, tiny_tokenizer, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_lora_targets_are_configurable(tiny_config):
    from train.lora import LoraSettings, apply_lora
    from train.model import build_model

    def adapted(settings):
        model = apply_lora(build_model(tiny_config), settings)
        return {root for root in ("text_model", "image_to_text_projection", "vision_model")
                if any(root in n and "lora_A" in n for n, _ in model.named_parameters())}

    assert adapted(LoraSettings()) == {"text_model", "image_to_text_projection"}
    assert adapted(LoraSettings(vision=True)) == {"text_model", "image_to_text_projection", "vision_model"}
    assert adapted(LoraSettings(text=False, projection=True)) == {"image_to_text_projection"}
    model = apply_lora(build_model(tiny_config), LoraSettings(r=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n == "action_token" or n.startswith("head.") for n in trainable)
