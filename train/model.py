"""Mobile-VLA: frozen Kosmos-2 + a learned action token (ACT) + an LSTM action head.

    from train.model import build_model
    model = build_model(preset_config("tiny"))      # parameter counts and checkpoints: python -m train.create

Per frame, the decoder reads `<s><image>[Q image embeddings]</image> text
pads ACT` and its last hidden state (at ACT) is the frame's action feature
(D = 2048 for the real model). The head is an LSTM over the window of W
features followed by an MLP with a tanh output to a chunk of N actions of A
axes at every window position: (B, W, N, A) in [-1, 1].

The LSTM is causal, so the head's output at window position t depends only
on features 0..t. That is what lets the robot compute one feature per frame,
keep the last W in a ring and run only the head over the ring
(`frame_features` + `head`) while training runs the whole window at once
(`forward`); a test proves both give the same chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from runtime.policy.prompt import Prompt, build_prompt
from train.config import MobileVLAConfig
from train.tokenizer import build_tiny_tokenizer, load_hub_tokenizer


@dataclass(frozen=True)
class PromptTensors:
    """`runtime.policy.prompt.Prompt` as int64 tensors of shape (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    image_slot_mask: torch.Tensor
    position_ids: torch.Tensor

    @classmethod
    def from_prompt(cls, prompt: Prompt) -> PromptTensors:
        return cls(*(torch.from_numpy(np.ascontiguousarray(a)) for a in (
            prompt.input_ids, prompt.attention_mask, prompt.image_slot_mask, prompt.position_ids)))

    def expand(self, batch: int) -> PromptTensors:
        """Repeat a batch-1 prompt `batch` times (no copy)."""
        return PromptTensors(*(t.expand(batch, -1) for t in self.tensors()))

    def repeat_interleave(self, times: int) -> PromptTensors:
        """(B, T) -> (B * times, T): one row per frame of a window."""
        return PromptTensors(*(t.repeat_interleave(times, dim=0) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.image_slot_mask, self.position_ids)

    def to(self, device) -> PromptTensors:
        return PromptTensors(*(t.to(device) for t in self.tensors()))


class ActionHead(nn.Module):
    """Standardise the ACT features, LSTM over the window, then an MLP with tanh to N x A actions per position.

    `feature_mean`/`feature_scale` (buffers, identity by default) are set by `train.fit` from the frozen
    model's features on the training frames before fitting: raw ACT features sit on a large common
    offset, and a head reading a small direction in them (the tiny preset's left/right instruction)
    stayed on a plateau for ~600 steps that standardised inputs left in ~150 (measured).
    The original Mobile-VLA head had no such step; imported checkpoints keep the identity."""

    NORMALIZATION_KEYS = ("feature_mean", "feature_scale")

    def __init__(self, in_dim: int, hidden: int, layers: int, chunk: int, axes: int, mlp_widths: tuple[int, ...]):
        super().__init__()
        self.chunk, self.axes = chunk, axes
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_scale", torch.ones(in_dim))
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True)
        # Linear, ReLU, ..., Linear, Tanh: linears at even indices (mlp.0, mlp.2, ...), as the original head.
        widths = [hidden, *mlp_widths, chunk * axes]  # config.head_mlp_widths: ours (H, H) or the original's
        layers_ = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers_ += [nn.Linear(a, b), nn.Tanh() if i == len(widths) - 2 else nn.ReLU()]
        self.mlp = nn.Sequential(*layers_)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, N, A)."""
        hidden, _ = self.lstm((features - self.feature_mean) * self.feature_scale)
        b, length, _ = hidden.shape
        return self.mlp(hidden).view(b, length, self.chunk, self.axes)


def is_checkpoint_folder(path) -> bool:
    """A folder in our checkpoint layout (train.checkpoint), as opposed to a transformers folder or hub id."""
    folder = Path(str(path))
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        return False
    try:
        return json.loads((folder / "config.json").read_text()).get("format") == "mobile-vla-checkpoint"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _kosmos_from_checkpoint(folder: Path, attn_implementation: str):
    """The Kosmos-2 weights (`kosmos.*`) of a merged checkpoint folder: `--base` for the importer, and the
    base of adapters re-fitted from an imported checkpoint (`train.fit --init`)."""
    meta = json.loads((folder / "config.json").read_text())
    if meta.get("kind") != "merged":
        raise ValueError(f"{folder}: a base must be a merged checkpoint (kind 'merged'), this is {meta.get('kind')!r}; "
                         f"merge it first (python -m train.merge {folder} --out DIR)")
    base_cfg = MobileVLAConfig.from_dict(meta["model"], source=str(folder / "config.json"))

    model = build_kosmos(replace(base_cfg, weights=None), attn_implementation)
    state = {k[len("kosmos."):]: v for k, v in load_file(str(folder / "model.safetensors")).items()
             if k.startswith("kosmos.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder / 'model.safetensors'}: Kosmos-2 weights incomplete: {len(missing)} missing "
                         f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    return model


def load_kosmos(weights: str, attn_implementation: str = "eager"):
    """A pretrained Kosmos-2 from one of our merged checkpoint folders, a transformers folder or a hub id."""
    if is_checkpoint_folder(weights):
        return _kosmos_from_checkpoint(Path(weights), attn_implementation)
    from transformers import Kosmos2Model  # noqa: PLC0415  transformers: ~2 s; a Kosmos-2 backbone only

    return Kosmos2Model.from_pretrained(weights, attn_implementation=attn_implementation)


def build_kosmos(config: MobileVLAConfig, attn_implementation: str = "eager"):
    """The Kosmos-2 backbone: pretrained from `config.weights` (hub id, transformers folder, or one of our
    merged checkpoint folders), or random from `config.seed`."""
    from transformers import Kosmos2Config, Kosmos2Model  # noqa: PLC0415  transformers: ~2 s; a Kosmos-2 backbone only

    if config.weights:
        model = load_kosmos(config.weights, attn_implementation)
        got = model.config.text_config.embed_dim
        if got != config.hidden_size:
            raise ValueError(f"{config.weights}: text width {got}, config expects {config.hidden_size}")
        return model
    kcfg = Kosmos2Config(**config.kosmos)
    kcfg._attn_implementation = attn_implementation
    kcfg.text_config._attn_implementation = attn_implementation
    kcfg.vision_config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return Kosmos2Model(kcfg)


class MobileVLA(nn.Module):
    def __init__(self, config: MobileVLAConfig, kosmos=None):
        super().__init__()
        self.config = config.validate()
        self.kosmos = kosmos if kosmos is not None else build_kosmos(config)
        d = config.hidden_size
        gen = torch.Generator().manual_seed(config.seed + 1)
        self.action_token = nn.Parameter(torch.randn(d, generator=gen) * 0.02)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 2)
            self.head = ActionHead(d, config.head_hidden, config.head_layers, config.chunk, config.action_axes,
                                   config.head_mlp_widths)
        self.lora_settings = None  # train.lora.LoraSettings while LoRA layers are attached
        self.freeze_vlm()

    # -- setup -------------------------------------------------------------
    def freeze_vlm(self) -> None:
        """Kosmos-2 stays frozen; ACT and the head learn (LoRA adds its own trainable weights)."""
        for p in self.kosmos.parameters():
            p.requires_grad_(False)
        self.action_token.requires_grad_(True)
        for p in self.head.parameters():
            p.requires_grad_(True)

    def freeze_vlm_except_lora(self) -> None:
        self.freeze_vlm()
        for name, p in self.kosmos.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)

    def parameter_counts(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total, trainable

    # -- the three stages the export splits into ----------------------------
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(F, 3, S, S) -> (F, Q, D): vision tower, post-layernorm, L2 norm, projection."""
        vision = self.kosmos.vision_model(pixel_values=pixels, return_dict=True)
        feats = self.kosmos.vision_model.model.post_layernorm(vision.last_hidden_state)
        feats = F.normalize(feats, dim=-1)
        embeds, _ = self.kosmos.image_to_text_projection(feats)
        return embeds

    def act_features_from_embeds(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_slot_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Image embeddings (F, Q, D) + prompt (F, T) -> ACT feature (F, D)."""
        text = self.kosmos.text_model.model
        tokens = text.embed_tokens(input_ids)
        d = tokens.shape[-1]
        slots = image_slot_mask.bool()
        # k-th image slot takes the k-th image embedding; gather + where exports as plain ONNX ops.
        slot_index = (torch.cumsum(image_slot_mask, dim=1) - 1).clamp(min=0)
        gathered = torch.gather(image_embeds, 1, slot_index.unsqueeze(-1).expand(-1, -1, d))
        embeds = torch.where(slots.unsqueeze(-1), gathered.to(tokens.dtype), tokens)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        is_act = (positions == input_ids.shape[1] - 1).view(1, -1, 1)
        embeds = torch.where(is_act, self.action_token.to(tokens.dtype), embeds)
        # As in HF Kosmos-2, image embeddings (and ACT) are written before the sqrt(D) scaling.
        out = text(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids.contiguous(),
                   return_dict=True)
        return out.last_hidden_state[:, -1]

    def frame_features(self, pixels: torch.Tensor, prompt: PromptTensors) -> torch.Tensor:
        """One feature per frame: (B, 3, S, S) + prompt (1 or B rows) -> (B, D)."""
        if prompt.input_ids.shape[0] == 1 and pixels.shape[0] > 1:
            prompt = prompt.expand(pixels.shape[0])
        return self.act_features_from_embeds(self.encode_images(pixels), *prompt.tensors())

    def predict_chunk(self, features: torch.Tensor) -> torch.Tensor:
        """The runtime's head call: features (B, L, D), L <= W -> chunk (B, N, A) for the newest frame."""
        return self.head(features)[:, -1]

    # -- training ----------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, prompt: PromptTensors) -> torch.Tensor:
        """(B, W, 3, S, S) + prompt (1 or B rows) -> normalised actions (B, W, N, A)."""
        b, w = pixel_values.shape[:2]
        if prompt.input_ids.shape[0] == 1:
            prompt = prompt.expand(b)
        frames = pixel_values.reshape(b * w, *pixel_values.shape[2:])
        feats = self.act_features_from_embeds(self.encode_images(frames), *prompt.repeat_interleave(w).tensors())
        return self.head(feats.view(b, w, -1))


def load_tokenizer(config: MobileVLAConfig):
    return build_tiny_tokenizer() if config.tokenizer == "local" else load_hub_tokenizer(config.tokenizer)


def make_prompt(config: MobileVLAConfig, tokenizer, instruction: str | None = None, padded: bool = True) -> Prompt:
    """The model's prompt for an instruction (default: the config's), through the one layout."""
    return build_prompt(
        tokenizer,
        config.default_instruction if instruction is None else instruction,
        latent_query_num=config.latent_query_num,
        max_text_tokens=config.max_text_tokens if padded else None,
        template=config.prompt_template,
        layout=config.prompt_layout,
    )


def build_model(config: MobileVLAConfig) -> MobileVLA:
    return MobileVLA(config).eval()
