"""The Mobile-VLA model: prompt padding, frame-by-frame vs windowed, freezing, presets."""

import pytest
import torch

from tests.conftest import run_python
from train.examples import example_inputs
from train.model import PromptTensors, make_prompt


def test_padded_prompt_gives_the_unpadded_act_feature(tiny_model, tiny_config, tiny_tokenizer):
    ex = example_inputs(tiny_config, tiny_tokenizer)
    unpadded = PromptTensors.from_prompt(make_prompt(tiny_config, tiny_tokenizer, padded=False))
    assert unpadded.input_ids.shape[1] < ex.prompt.input_ids.shape[1]
    with torch.no_grad():
        padded_feat = tiny_model.frame_features(ex.pixel_values[0], ex.prompt)
        unpadded_feat = tiny_model.frame_features(ex.pixel_values[0], unpadded)
    assert (padded_feat - unpadded_feat).abs().max().item() < 1e-5


def test_act_feature_depends_on_the_instruction(tiny_model, tiny_config, tiny_tokenizer):
    """The original stack lost the instruction's words; ours must reach the feature."""
    ex = example_inputs(tiny_config, tiny_tokenizer)
    left = example_inputs(tiny_config, tiny_tokenizer, instruction="reach the bottle on the left")
    right = example_inputs(tiny_config, tiny_tokenizer, instruction="reach the bottle on the right")
    with torch.no_grad():
        a = tiny_model.frame_features(ex.pixel_values[0, :1], left.prompt)
        b = tiny_model.frame_features(ex.pixel_values[0, :1], right.prompt)
    assert (a - b).abs().max().item() > 1e-4


def test_frame_by_frame_ring_equals_windowed_forward(tiny_model, tiny_config, tiny_tokenizer):
    ex = example_inputs(tiny_config, tiny_tokenizer, seed=5)
    with torch.no_grad():
        windowed = tiny_model(ex.pixel_values, ex.prompt)[0]  # (W, N, A)
        feats = torch.stack([tiny_model.frame_features(ex.pixel_values[:, t], ex.prompt)[0]
                             for t in range(tiny_config.window)])
        ring = torch.stack([tiny_model.predict_chunk(feats[None, : t + 1])[0] for t in range(tiny_config.window)])
    assert windowed.shape == (tiny_config.window, tiny_config.chunk, tiny_config.action_axes)
    assert (windowed - ring).abs().max().item() < 1e-5
    assert windowed.abs().max() <= 1.0  # tanh output


def test_batched_forward_matches_single(tiny_model, tiny_config, tiny_tokenizer):
    a = example_inputs(tiny_config, tiny_tokenizer, seed=1)
    b = example_inputs(tiny_config, tiny_tokenizer, seed=2)
    with torch.no_grad():
        both = tiny_model(torch.cat([a.pixel_values, b.pixel_values]), a.prompt)
        only_b = tiny_model(b.pixel_values, b.prompt)
    assert (both[1] - only_b[0]).abs().max().item() < 1e-5


def test_only_act_and_head_require_grad(tiny_model):
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert "action_token" in trainable
    assert all(n == "action_token" or n.startswith("head.") for n in trainable)
    assert not any(p.requires_grad for p in tiny_model.kosmos.parameters())
    total, n_train = tiny_model.parameter_counts()
    assert 100_000 < total < 1_000_000  # "a few hundred thousand parameters"
    assert n_train == sum(p.numel() for p in tiny_model.head.parameters()) + tiny_model.action_token.numel()


@pytest.mark.parametrize("axes", [2, 3])
def test_configurable_window_chunk_axes(axes, tiny_tokenizer):
    from train.config import preset_config
    from train.model import build_model

    cfg = preset_config("tiny", window=3, chunk=4, action_axes=axes, head_hidden=16, head_layers=1)
    model = build_model(cfg)
    ex = example_inputs(cfg, tiny_tokenizer)
    with torch.no_grad():
        assert model(ex.pixel_values, ex.prompt).shape == (1, 3, 4, axes)


def test_same_seed_same_model_other_seed_other_model(tiny_model):
    from train.config import preset_config
    from train.model import build_model

    again = build_model(preset_config("tiny"))
    other = build_model(preset_config("tiny", seed=1))
    sd, sd_again, sd_other = tiny_model.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(sd[k], sd_again[k]) for k in sd)
    assert not torch.equal(sd["head.mlp.0.weight"], sd_other["head.mlp.0.weight"])


def test_unknown_preset_and_bad_axes_are_refused():
    from train.config import preset_config

    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_config("huge")
    with pytest.raises(ValueError, match="action_axes must be 2 or 3"):
        preset_config("tiny", action_axes=4)


def test_cli_prints_parameter_counts_and_saves(tmp_path):
    out = tmp_path / "ckpt"
    proc = run_python("-m", "train.create", "--preset", "tiny", "--save", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "total" in proc.stdout and "trainable" in proc.stdout
    total = int(proc.stdout.split("parameters")[1].split("total")[0].replace(",", ""))
    assert 100_000 < total < 1_000_000
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    again = run_python("-m", "train.create", "--preset", "tiny", "--save", str(out))
    assert again.returncode != 0 and "already exists" in again.stderr


@pytest.mark.slow
def test_kosmos2_random_weights_has_the_real_size():
    proc = run_python("-m", "train.create", "--preset", "kosmos2", "--random-weights", timeout=900)
    assert proc.returncode == 0, proc.stderr
    total = int(proc.stdout.split("kosmos-2")[1].split("(")[0].replace(",", ""))
    assert 1.6e9 < total < 1.7e9
