"""The one prompt layout, shared by training, export and the robot.

    from runtime.prompt import build_prompt
    prompt = build_prompt(tokenizer, "go to the bottle", latent_query_num=64, max_text_tokens=48)
    prompt.input_ids, prompt.attention_mask, prompt.image_slot_mask, prompt.position_ids

Layout (DESIGN.md, "Prompt layout, one function"):

    <s> <image> [Q image slots] </image> text ... <pad> ... <pad> ACT

ACT is always the last position, so the decoder's last hidden state is the
frame's action feature whatever the instruction's length. Pads sit between
the text and ACT with attention mask 0; position ids are derived from the
mask (pads get the padding index, real tokens count up from it), so padding
never moves a real token's position and a padded prompt gives the same ACT
feature as an unpadded one. The original stack padded training and serving
prompts differently and shifted ACT (REFERENCE.md section 3).

numpy only: `runtime/` must not import torch. Training wraps the arrays in
tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TEMPLATE = "<grounding>An image of a robot {instruction}"
DEFAULT_INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the left"
PADDING_IDX = 1  # Kosmos-2's pad id and the sinusoidal table's padding_idx
FIRST_IMAGE_SLOT_ID = 4  # the HF Kosmos-2 processor fills image slots with ids 4, 5, ... (replaced by embeddings)


class PromptTooLongError(ValueError):
    """The instruction does not fit the prompt length fixed at export."""


@dataclass(frozen=True)
class Prompt:
    """One prompt, batch 1, all arrays int64 of shape (1, T)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    image_slot_mask: np.ndarray
    position_ids: np.ndarray
    text_tokens: int  # tokens the templated instruction took (before padding)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of the tokens the layout needs; a tokenizer without them is refused."""
    ids = {}
    for name, token in (("bos", "<s>"), ("pad", "<pad>"), ("eos", "</s>"), ("boi", "<image>"), ("eoi", "</image>")):
        tid = tokenizer.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer has no {token!r} token: it is not a Kosmos-2 tokenizer")
        ids[name] = int(tid)
    if ids["pad"] != PADDING_IDX:
        raise ValueError(f"tokenizer's <pad> id is {ids['pad']}, Kosmos-2 expects {PADDING_IDX}")
    return ids


def position_ids_from_mask(attention_mask: np.ndarray, padding_idx: int = PADDING_IDX) -> np.ndarray:
    """Real tokens get padding_idx+1, +2, ...; pads get padding_idx (a zero embedding)."""
    mask = attention_mask.astype(np.int64)
    return np.cumsum(mask, axis=1) * mask + padding_idx


def text_ids(tokenizer, instruction: str, template: str = DEFAULT_TEMPLATE) -> list[int]:
    return list(tokenizer.encode(template.format(instruction=instruction), add_special_tokens=False).ids)


def prompt_length(latent_query_num: int, max_text_tokens: int) -> int:
    """Total positions: <s> <image> slots </image> text+pads ACT."""
    return 3 + latent_query_num + max_text_tokens + 1


def build_prompt(
    tokenizer,
    instruction: str,
    latent_query_num: int = 64,
    max_text_tokens: int | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> Prompt:
    """Lay out one prompt. `max_text_tokens=None` means no padding (exact length)."""
    sp = special_ids(tokenizer)
    text = text_ids(tokenizer, instruction, template)
    if max_text_tokens is not None and len(text) > max_text_tokens:
        raise PromptTooLongError(
            f"instruction {instruction!r} takes {len(text)} tokens with the template, "
            f"but this model's prompt holds at most {max_text_tokens} text tokens; "
            f"shorten the instruction or export with a larger --max-text-tokens"
        )
    pads = 0 if max_text_tokens is None else max_text_tokens - len(text)
    slots = [FIRST_IMAGE_SLOT_ID + i for i in range(latent_query_num)]
    ids = [sp["bos"], sp["boi"], *slots, sp["eoi"], *text, *([sp["pad"]] * pads), sp["eos"]]
    # ACT sits on the final position; its id is a placeholder (</s>) replaced by the learned embedding.
    mask = [1] * (3 + latent_query_num + len(text)) + [0] * pads + [1]
    slot_mask = [0, 0] + [1] * latent_query_num + [0] * (1 + len(text) + pads + 1)
    input_ids = np.asarray([ids], dtype=np.int64)
    attention_mask = np.asarray([mask], dtype=np.int64)
    return Prompt(
        input_ids=input_ids,
        attention_mask=attention_mask,
        image_slot_mask=np.asarray([slot_mask], dtype=np.int64),
        position_ids=position_ids_from_mask(attention_mask),
        text_tokens=len(text),
    )
