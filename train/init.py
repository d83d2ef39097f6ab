"""Start a fit from a merged checkpoint (e.g. an imported one) instead of a preset.

    python -m train.fit --init imported/ --data episodes/ --max-epochs 20 --out runs/ --name migrated
    python -m train.fit --init imported/ --data episodes/ --lora train ...   # LoRA re-fitted too

    from train.init import init_config, init_from_checkpoint
    config = init_config(Path("imported"), window=8, channel_order="bgr")
    init_from_checkpoint(model, Path("imported"))       # ACT + head weights into a MobileVLA

The checkpoint's Kosmos-2 becomes the run's frozen base (`config.weights` = the
folder, which `train.model.build_kosmos` loads; adapters saved by the run point
at it and carry its fingerprint). ACT and the head start from the checkpoint's
weights; the head's sizes (H, L, MLP widths, N, A) are the checkpoint's. The
prompt layout and the model's channel order become ours ("mobile-vla", true
RGB): a checkpoint imported from the original stack is moved onto our layout by
re-fitting ACT and the head (and the LoRA weights when `--lora train`) on the
user's episodes (docs/migrating.md).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open

from train.checkpoint import CheckpointError, read_checkpoint_config
from train.config import MobileVLAConfig

INIT_KEYS = ("action_token", "head.")  # what --init carries over besides the frozen base


def init_config(path: Path, **overrides) -> MobileVLAConfig:
    """The run's config: the checkpoint's model (sizes, head), its Kosmos-2 as the base, our layout."""
    path = Path(path)
    meta = read_checkpoint_config(path)
    if meta["kind"] != "merged":
        raise CheckpointError(f"{path}: --init needs a merged checkpoint (kind 'merged'), this is {meta['kind']!r}; "
                              f"merge it first: python -m train.merge {path} --out DIR")
    cfg = MobileVLAConfig.from_dict(meta["model"], source=str(path / "config.json"))
    ours = MobileVLAConfig(preset=cfg.preset, kosmos=cfg.kosmos, tokenizer=cfg.tokenizer)  # field defaults = ours
    for name in ("chunk", "action_axes"):
        if overrides.get(name) not in (None, getattr(cfg, name)):
            flag = "--" + name.replace("_", "-")
            raise CheckpointError(f"{path}: its head predicts {name} = {getattr(cfg, name)}, {flag} "
                                  f"asks for {overrides[name]}; leave it out to re-fit the imported head")
        overrides.pop(name, None)
    channel_order = overrides.pop("channel_order", None) or cfg.preprocess["channel_order"]
    overrides = {k: v for k, v in overrides.items() if v is not None}  # not given: the checkpoint's (e.g. its W)
    return replace(cfg, weights=str(path), prompt_layout=ours.prompt_layout, max_text_tokens=ours.max_text_tokens,
                   preprocess=dict(cfg.preprocess, channel_order=channel_order,
                                   model_channel_order=ours.preprocess["model_channel_order"]),
                   **overrides).validate()


def init_from_checkpoint(model, path: Path) -> list[str]:
    """Copy ACT and the head (with its input standardisation) from a checkpoint folder into `model`."""
    file = Path(path) / "model.safetensors"
    with safe_open(str(file), framework="pt") as f:  # ACT and the head only, not the 6.6 GB of Kosmos-2 again
        state = {k: f.get_tensor(k) for k in f.keys() if k.startswith(INIT_KEYS)}
    ours = {k: v for k, v in model.state_dict().items() if k.startswith(INIT_KEYS)}
    missing, extra = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items()
             if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        raise CheckpointError(f"{file}: ACT/head do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}, "
                              f"shapes {wrong[:3]}")
    with torch.no_grad():
        model.action_token.copy_(state["action_token"])
        model.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
    return sorted(state)
