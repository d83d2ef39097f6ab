"""The one prompt layout, shared by training, export and the robot.

    from runtime.policy.prompt import build_prompt
    prompt = build_prompt(tokenizer, "go to the bottle", latent_query_num=64, max_text_tokens=48)
    prompt.input_ids, prompt.attention_mask, prompt.image_slot_mask, prompt.position_ids

Layout (docs/model.md, "The prompt"):

    "mobile-vla" (ours, the default for everything trained here):
    <s> <image> [Q image slots] </image> text ... <pad> ... <pad> ACT

ACT is always the last position, so the decoder's last hidden state is the
frame's action feature whatever the instruction's length. Pads sit between
the text and ACT with attention mask 0; position ids are derived from the
mask (pads get the padding index, real tokens count up from it), so padding
never moves a real token's position and a padded prompt gives the same ACT
feature as an unpadded one. The original stack padded training and serving
prompts differently and shifted ACT (docs/original-stack.md).

    "robovlms-fallback" (what checkpoints of the original stack were trained on):
    [Q image latents written over <s> text </s> (right-padded to Q)] text beyond Q ... <pad> ... ACT

The original's fallback path tokenized `<s> text </s>`, right-padded it to Q,
wrote the Q image latents over positions 0..Q-1, masked the padding (0) and
attended ACT (1), with sequential position ids. So ACT sees the first
len(text) image latents and any text tokens beyond Q. Here the prompt is
further padded (mask 0) to a fixed length so the exported graph has one
shape; ACT keeps the position id it had in the original (max(len(text), Q)
after the first position), so the extra padding changes nothing. An imported
checkpoint drives with this layout, exactly as it was trained.

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
LAYOUTS = ("mobile-vla", "robovlms-fallback")
INSTRUCTION_TOKENS = 32  # room the default prompt length leaves for an instruction
ORIGINAL_PAD_ID = 0  # the original stack right-padded with id 0 (under the image latents, never seen)


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


def default_max_text_tokens(tokenizer, template: str, layout: str = "mobile-vla", latent_query_num: int = 64) -> int:
    """The template's own tokens plus a 32-token instruction (robovlms-fallback: with <s> and </s>, at least Q)."""
    if layout == "robovlms-fallback":
        return max(latent_query_num, len(text_ids(tokenizer, "", template)) + 2 + INSTRUCTION_TOKENS)
    return len(text_ids(tokenizer, "", template)) + INSTRUCTION_TOKENS


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"prompt layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def manifest_layout(prompt_section: dict) -> str:
    """The layout a bundle's `prompt` section names. Bundles written before layouts had names recorded a
    description of the one layout there was ("<s> <image> ..."): that is "mobile-vla"."""
    value = prompt_section.get("layout", "mobile-vla")
    if value in LAYOUTS:
        return value
    if str(value).startswith("<s> <image>"):
        return "mobile-vla"
    raise ValueError(f"bundle.json: prompt.layout is {value!r}; this runtime knows {', '.join(LAYOUTS)} "
                     f"(upgrade the runtime or re-export the bundle)")


def prompt_length(latent_query_num: int, max_text_tokens: int, layout: str = "mobile-vla") -> int:
    """Total positions. mobile-vla: <s> <image> slots </image> text+pads ACT. robovlms-fallback:
    `max_text_tokens` positions (text with <s> and </s>, at least Q, the first Q under the image latents) + ACT."""
    if check_layout(layout) == "robovlms-fallback":
        return max_text_tokens + 1
    return 3 + latent_query_num + max_text_tokens + 1


def fallback_position_ids(attention_mask: np.ndarray, latent_query_num: int,
                          padding_idx: int = PADDING_IDX) -> np.ndarray:
    """robovlms-fallback: sequential positions from padding_idx+1 (transformers derives them from
    inputs_embeds, not the mask), and ACT at the position right after the original sequence of
    max(len(text), Q) tokens, wherever the fixed-length padding put it."""
    mask = attention_mask.astype(np.int64)
    t = mask.shape[1]
    body = np.maximum(mask[:, :-1].sum(axis=1, keepdims=True), latent_query_num)
    positions = np.broadcast_to(np.arange(t, dtype=np.int64), mask.shape).copy()
    positions[:, -1:] = body
    return positions + padding_idx + 1


def build_prompt(
    tokenizer,
    instruction: str,
    latent_query_num: int = 64,
    max_text_tokens: int | None = None,
    template: str = DEFAULT_TEMPLATE,
    layout: str = "mobile-vla",
) -> Prompt:
    """Lay out one prompt. `max_text_tokens=None` means no padding (exact length)."""
    sp = special_ids(tokenizer)
    if check_layout(layout) == "robovlms-fallback":
        return _build_fallback_prompt(sp, text_ids(tokenizer, instruction, template), instruction,
                                      latent_query_num, max_text_tokens)
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


def _build_fallback_prompt(sp: dict, text: list[int], instruction: str, q: int, max_text_tokens: int | None) -> Prompt:
    text = [sp["bos"], *text, sp["eos"]]
    body = max(len(text), q)  # the original's sequence: right-padded to Q when shorter
    if max_text_tokens is not None and max_text_tokens < q:
        raise ValueError(f"robovlms-fallback prompts hold at least Q={q} positions before ACT, got max_text_tokens="
                         f"{max_text_tokens}")
    if max_text_tokens is not None and body > max_text_tokens:
        raise PromptTooLongError(
            f"instruction {instruction!r} takes {len(text)} tokens with the template, <s> and </s>, "
            f"but this model's prompt holds at most {max_text_tokens} text tokens; "
            f"shorten the instruction or export with a larger --max-text-tokens")
    total = body if max_text_tokens is None else max_text_tokens
    ids = text + [ORIGINAL_PAD_ID] * (body - len(text)) + [sp["pad"]] * (total - body) + [sp["eos"]]
    mask = [1] * len(text) + [0] * (total - len(text)) + [1]
    slot_mask = [1] * q + [0] * (total + 1 - q)
    attention_mask = np.asarray([mask], dtype=np.int64)
    return Prompt(
        input_ids=np.asarray([ids], dtype=np.int64),
        attention_mask=attention_mask,
        image_slot_mask=np.asarray([slot_mask], dtype=np.int64),
        position_ids=fallback_position_ids(attention_mask, q),
        text_tokens=len(text),
    )
