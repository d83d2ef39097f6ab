"""The language graph derives each layout's slot mask and position ids as runtime.policy.prompt lays them out."""

from dataclasses import replace

import pytest
import torch

from export.graphs import LanguageGraph
from train.model import MobileVLA, PromptTensors, make_prompt


@pytest.mark.parametrize("layout", ["mobile-vla", "robovlms-fallback"])
@pytest.mark.parametrize("instruction", ["go left", "navigate around the obstacles and reach the front of the "
                                         "bottle on the left then stop"])
def test_graph_and_prompt_agree_and_padding_changes_nothing(tiny_config, tiny_tokenizer, layout, instruction):
    cfg = replace(tiny_config, prompt_layout=layout, max_text_tokens=48)
    model = MobileVLA(cfg).eval()
    torch.manual_seed(0)
    embeds = torch.randn(1, cfg.latent_query_num, cfg.hidden_size)
    padded = PromptTensors.from_prompt(make_prompt(cfg, tiny_tokenizer, instruction))
    exact = PromptTensors.from_prompt(make_prompt(cfg, tiny_tokenizer, instruction, padded=False))
    assert padded.input_ids.shape[1] > exact.input_ids.shape[1]
    with torch.no_grad():
        from_prompt = model.act_features_from_embeds(embeds, *padded.tensors())
        unpadded = model.act_features_from_embeds(embeds, *exact.tensors())
        from_graph = LanguageGraph(model)(padded.input_ids, padded.attention_mask, embeds)
    assert (from_graph - from_prompt).abs().max() < 1e-6
    assert (unpadded - from_prompt).abs().max() < 1e-5
