"""Batches for fitting: episodes' samples collated into tensors.

    loader = DataLoader(EpisodeClipDataset(...), batch_size=2, collate_fn=collate_episodes)
    batch = next(iter(loader)); prompt = batch_prompt(batch)

Two ways to batch (train.fit --batching): `collate` stacks one window per
sample; `collate_episodes` flattens whole episodes into one batch of frames
(each frame through the VLM once) plus the windows that index into it, which
gives the same loss with W times less VLM work.
"""

from __future__ import annotations

import numpy as np
import torch

from train.model import PromptTensors

PROMPT_KEYS = ("input_ids", "attention_mask", "image_slot_mask", "position_ids")


def batch_prompt(batch: dict) -> PromptTensors:
    return PromptTensors(*(batch[k] for k in PROMPT_KEYS))


def collate(samples: list[dict]) -> dict:
    out = {}
    for key in samples[0]:
        if key == "instruction":
            out[key] = [s[key] for s in samples]
        else:
            out[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
    return out


def collate_episodes(samples: list[dict]) -> dict:
    """Episodes -> one flat batch of frames (prompt row per frame) and windows indexing into it."""
    out = {"instruction": [s["instruction"] for s in samples]}
    offsets = np.cumsum([0] + [len(s["pixel_values"]) for s in samples[:-1]])
    out["window_index"] = torch.from_numpy(np.concatenate([s["window_index"] + o for s, o in zip(samples, offsets)]))
    out["pixel_values"] = torch.from_numpy(np.concatenate([s["pixel_values"] for s in samples]))
    for key in ("targets", "mask"):
        out[key] = torch.from_numpy(np.concatenate([s[key] for s in samples]))
    for key in PROMPT_KEYS:
        out[key] = torch.from_numpy(np.concatenate([np.repeat(s[key][None], len(s["pixel_values"]), 0)
                                                    for s in samples]))
    return out
