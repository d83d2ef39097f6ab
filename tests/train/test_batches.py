"""Episode batches and window batches give the same loss; the head's inputs are standardised before fitting."""

import torch

from train.batches import collate, collate_episodes
from train.callbacks import set_head_standardization
from train.config import preset_config
from train.data import DataOptions, EpisodeClipDataset, EpisodeDataset, find_episodes, load_episodes
from train.lora import LoraSettings
from train.model import PromptTensors, load_tokenizer, make_prompt
from train.module import MobileVLAModule


def test_episode_batches_give_the_window_batches_loss_and_the_head_is_standardised(episodes):
    cfg = preset_config("tiny", window=4, chunk=4)
    tok = load_tokenizer(cfg)
    options = DataOptions(window=4, chunk=4)
    eps, _ = load_episodes(find_episodes(episodes)[:3], options)
    module = MobileVLAModule(cfg.to_dict(), LoraSettings(dropout=0.0).to_dict(), lr=1e-3, lora_lr=2e-5)
    stats = set_head_standardization(module.model, eps, options, tok, cfg)
    assert stats["frames"] == 24 and module.model.head.feature_mean.abs().sum() > 0
    module.eval()
    prompt = PromptTensors.from_prompt(make_prompt(cfg, tok, eps[0].instruction))
    with torch.no_grad():
        feats = module.model.frame_features(
            torch.from_numpy(EpisodeClipDataset(eps, options, tok, cfg)[0]["pixel_values"]), prompt)
        standardised = (feats - module.model.head.feature_mean) * module.model.head.feature_scale
    assert abs(float(standardised.mean())) < 0.5 and 0.5 < float(standardised.std()) < 2.0
    clips = collate_episodes([EpisodeClipDataset(eps, options, tok, cfg)[i] for i in range(3)])
    windows = EpisodeDataset(eps, options, tok, cfg)
    flat = collate([windows[i] for i in range(len(windows))])
    with torch.no_grad():
        by_episode, by_window = module(clips), module(flat)
    assert by_episode.shape == by_window.shape == (15, 4, 4, 2)
    torch.testing.assert_close(by_episode, by_window, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clips["targets"], flat["targets"])
    groups = {g["name"]: g["lr"] for g in module.configure_optimizers().param_groups}
    assert groups == {"head": 1e-3, "act": 1e-3, "lora": 2e-5}
