"""The three exported graphs as torch modules around a (merged) MobileVLA.

    VisionGraph(model)(pixel_values)                               -> image_embeds (1, Q, D)
    LanguageGraph(model)(input_ids, attention_mask, image_embeds)  -> act_feature (1, D)
    ActionHeadGraph(model)(act_features (1, L, D))                 -> action_chunk (1, N, A)

The language graph derives what the runtime should not have to: the image-slot
mask is fixed by the layout (positions 2 .. 2+Q-1) and the position ids come
from the attention mask, exactly as `runtime.prompt.build_prompt` computes
them. The learned ACT embedding is a weight of the graph. The head takes a
dynamic L from 1 to W (the ring fills up over the first W frames) and returns
the chunk for the newest position only.
"""

from __future__ import annotations

import torch
from torch import nn

from runtime.prompt import PADDING_IDX


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        slots = ((positions >= 2) & (positions < 2 + self.latent_query_num)).to(torch.int64).expand_as(input_ids)
        mask = attention_mask.to(torch.int64)
        position_ids = torch.cumsum(mask, dim=1) * mask + PADDING_IDX
        return self.model.act_features_from_embeds(image_embeds, input_ids, mask, slots, position_ids)


class ActionHeadGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, act_features: torch.Tensor) -> torch.Tensor:
        return self.model.predict_chunk(act_features)
