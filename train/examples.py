"""Example inputs for a preset: the one source of inputs for tests, export and benchmarks.

    from train.examples import example_inputs
    ex = example_inputs(cfg, tokenizer)          # frames, pixel_values, prompt
    chunk = model(ex.pixel_values, ex.prompt)    # (1, W, N, A)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from runtime.cameras.sample_frames import sample_frames
from runtime.policy.preprocess import preprocess_with
from runtime.policy.prompt import Prompt
from train.config import MobileVLAConfig
from train.model import PromptTensors, make_prompt


@dataclass(frozen=True)
class ExampleInputs:
    frames: np.ndarray  # (W, H, W_px, 3) uint8 camera frames in the config's channel order
    pixel_values: torch.Tensor  # (1, W, 3, S, S) float32, through runtime.policy.preprocess
    prompt_arrays: Prompt  # the padded prompt as numpy (what the runtime feeds)
    prompt: PromptTensors  # the same as tensors
    instruction: str


def example_inputs(config: MobileVLAConfig, tokenizer, seed: int = 0, frame_height: int = 240,
                   frame_width: int = 320, instruction: str | None = None, frames: np.ndarray | None = None,
                   ) -> ExampleInputs:
    """W camera-like frames from `seed` (or the given frames), preprocessed, and the padded prompt."""
    if frames is None:
        frames = sample_frames(config.window, seed=seed, height=frame_height, width=frame_width)
        if config.preprocess_config().channel_order == "rgb":
            frames = frames[..., ::-1].copy()
    pre = config.preprocess_config()
    pixels = torch.from_numpy(np.stack([preprocess_with(pre, f) for f in frames]))[None]
    instruction = config.default_instruction if instruction is None else instruction
    prompt = make_prompt(config, tokenizer, instruction)
    return ExampleInputs(frames, pixels, prompt, PromptTensors.from_prompt(prompt), instruction)
