"""The three exported graphs as torch modules around a (merged) MobileVLA.

    VisionGraph(model)(pixel_values)                               -> image_embeds (1, Q, D)
    LanguageGraph(model)(input_ids, attention_mask, image_embeds)  -> act_feature (1, D)
    ActionHeadGraph(model)(act_features (1, L, D))                 -> action_chunk (1, N, A)

The language graph derives what the runtime should not have to: the image-slot
mask is fixed by the layout (positions 2 .. 2+Q-1) and the position ids come
from the attention mask, exactly as `runtime.policy.prompt.build_prompt` computes
them. The prompt layout is baked in at export from the model's config: an
imported checkpoint's "robovlms-fallback" graph takes the same three inputs
and writes the image latents over positions 0 .. Q-1 with sequential position
ids (ACT right after the original sequence), so the runtime and the TensorRT
build see the same graph signature for both layouts. The learned ACT embedding is a weight of the graph.
The head takes a
dynamic L from 1 to W (the ring fills up over the first W frames) and returns
the chunk for the newest position only.
"""

from __future__ import annotations

import torch
from torch import nn

from runtime.policy.prompt import PADDING_IDX, check_layout


class VisionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixel_values)


class LanguageGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.latent_query_num = model.config.latent_query_num
        self.layout = check_layout(model.config.prompt_layout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                image_embeds: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        mask = attention_mask.to(torch.int64)
        if self.layout == "robovlms-fallback":
            slots = (positions < self.latent_query_num).to(torch.int64).expand_as(input_ids)
            # runtime.policy.prompt.fallback_position_ids: sequential, ACT right after max(len(text), Q) tokens.
            body = torch.maximum(mask[:, :-1].sum(dim=1, keepdim=True),
                                 torch.full_like(mask[:, :1], self.latent_query_num))
            is_act = positions == input_ids.shape[1] - 1
            position_ids = torch.where(is_act, body, positions.expand_as(mask)) + PADDING_IDX + 1
        else:
            slots = ((positions >= 2) & (positions < 2 + self.latent_query_num)).to(torch.int64).expand_as(input_ids)
            position_ids = torch.cumsum(mask, dim=1) * mask + PADDING_IDX
        return self.model.act_features_from_embeds(image_embeds, input_ids, mask, slots, position_ids)


class ActionHeadGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, act_features: torch.Tensor) -> torch.Tensor:
        return self.model.predict_chunk(act_features)
