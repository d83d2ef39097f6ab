import numpy as np
import pytest

from runtime.policy.prompt import PADDING_IDX, PromptTooLongError, build_prompt, position_ids_from_mask, prompt_length


def test_layout_order_and_masks(tiny_tokenizer):
    p = build_prompt(tiny_tokenizer, "go to the bottle on the left", latent_query_num=64, max_text_tokens=40)
    ids = p.input_ids[0]
    assert p.length == prompt_length(64, 40)
    assert ids[0] == tiny_tokenizer.token_to_id("<s>")
    assert ids[1] == tiny_tokenizer.token_to_id("<image>")
    assert ids[66] == tiny_tokenizer.token_to_id("</image>")
    assert p.image_slot_mask[0, 2:66].all() and p.image_slot_mask.sum() == 64
    assert ids[67] == tiny_tokenizer.token_to_id("<grounding>")
    # pads are masked and sit between the text and ACT; ACT is last and attended
    n_real_text = p.text_tokens
    pads = slice(67 + n_real_text, p.length - 1)
    assert (ids[pads] == PADDING_IDX).all() and (p.attention_mask[0, pads] == 0).all()
    assert p.attention_mask[0, -1] == 1
    for a in (p.input_ids, p.attention_mask, p.image_slot_mask, p.position_ids):
        assert a.dtype == np.int64 and a.shape == (1, p.length)


def test_position_ids_skip_pads():
    mask = np.array([[1, 1, 1, 0, 0, 1]])
    assert position_ids_from_mask(mask).tolist() == [[2, 3, 4, 1, 1, 5]]


def test_padding_never_moves_real_positions(tiny_tokenizer):
    short = build_prompt(tiny_tokenizer, "stop", latent_query_num=8)
    padded = build_prompt(tiny_tokenizer, "stop", latent_query_num=8, max_text_tokens=30)
    real = padded.attention_mask[0].astype(bool)
    assert padded.position_ids[0, real].tolist() == short.position_ids[0].tolist()
    assert padded.input_ids[0, real].tolist() == short.input_ids[0].tolist()


def test_instruction_too_long_is_refused_clearly(tiny_tokenizer):
    with pytest.raises(PromptTooLongError, match=r"takes \d+ tokens .* at most 10 text tokens"):
        build_prompt(tiny_tokenizer, "go left " * 20, latent_query_num=4, max_text_tokens=10)


def test_tokenizer_without_kosmos_specials_is_refused():
    from tokenizers import Tokenizer, models

    plain = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "a": 1}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="not a Kosmos-2 tokenizer"):
        build_prompt(plain, "a")


# -- robovlms-fallback: the original stack's feature path (issue 13) -------------------------------------

def _fallback(tok, instruction, q=16, max_text_tokens=40):
    return build_prompt(tok, instruction, latent_query_num=q, max_text_tokens=max_text_tokens,
                        layout="robovlms-fallback")


def test_fallback_layout_short_instruction(tiny_tokenizer):
    tok = tiny_tokenizer
    p = _fallback(tok, "go left")
    text = tok.encode("<grounding>An image of a robot go left", add_special_tokens=False).ids
    n = len(text) + 2
    assert n < 16 and p.text_tokens == n and p.length == prompt_length(16, 40, "robovlms-fallback") == 41
    ids = p.input_ids[0].tolist()
    assert ids[:n] == [tok.token_to_id("<s>"), *text, tok.token_to_id("</s>")]
    assert ids[n:16] == [0] * (16 - n)  # the original right-padded with id 0 to Q
    assert p.attention_mask[0].tolist() == [1] * n + [0] * (40 - n) + [1]
    assert p.image_slot_mask[0].tolist() == [1] * 16 + [0] * 25  # latents over positions 0..Q-1
    # sequential positions from padding_idx + 1; ACT where the original had it: right after the Q positions
    assert p.position_ids[0, :-1].tolist() == list(range(2, 42))
    assert p.position_ids[0, -1] == 16 + 2


def test_fallback_layout_long_instruction_keeps_text_beyond_q(tiny_tokenizer):
    p = _fallback(tiny_tokenizer, "navigate around the obstacles and reach the front of the bottle on the left")
    n = p.text_tokens
    assert n > 16
    assert p.attention_mask[0].tolist() == [1] * n + [0] * (40 - n) + [1]
    assert p.position_ids[0, -1] == n + 2  # ACT right after the whole text, however far it padded
    unpadded = build_prompt(tiny_tokenizer, "navigate around the obstacles and reach the front of the bottle on "
                            "the left", latent_query_num=16, layout="robovlms-fallback")
    assert unpadded.length == n + 1 and unpadded.position_ids[0].tolist() == list(range(2, n + 3))


def test_fallback_layout_refuses_what_does_not_fit(tiny_tokenizer):
    with pytest.raises(PromptTooLongError, match="at most 20 text tokens"):
        _fallback(tiny_tokenizer, "go left " * 20, max_text_tokens=20)
    with pytest.raises(ValueError, match="at least Q=16"):
        _fallback(tiny_tokenizer, "go", max_text_tokens=10)
    with pytest.raises(ValueError, match="prompt layout must be one of"):
        build_prompt(tiny_tokenizer, "go", layout="robovlms")


def test_layout_names_in_bundles():
    from runtime.policy.prompt import manifest_layout

    assert manifest_layout({"layout": "robovlms-fallback"}) == "robovlms-fallback"
    # bundles exported before layouts had names described the one layout there was
    assert manifest_layout({"layout": "<s> <image> [Q image slots] </image> text <pad>... ACT(last)"}) == "mobile-vla"
    with pytest.raises(ValueError, match="prompt.layout is 'other'"):
        manifest_layout({"layout": "other"})
