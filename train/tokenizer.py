"""Tokenizers: the real Kosmos-2 one from the hub, or a small local one for `tiny`.

    python -m train.tokenizer --out tokenizer.json     # writes the local tokenizer

The local tokenizer is a word-level `tokenizers.Tokenizer` built from a fixed
vocabulary in this file, so it needs no network, no training and gives the
same ids on every machine. It knows the Kosmos-2 special tokens with
Kosmos-2's ids for the first four (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3),
plus `<image>`, `</image>`, `<grounding>`, `<phrase>`, `</phrase>`,
`<object>`, `</object>`, `</delimiter_of_multi_objects/>` and the 1024
`<patch_index_NNNN>` location tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from runtime.logs import add_log_level_argument, setup_logging

KOSMOS2_HUB_ID = "microsoft/kosmos-2-patch14-224"
HEAD_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
KOSMOS2_SPECIALS = [
    "<image>",
    "</image>",
    "<grounding>",
    "<phrase>",
    "</phrase>",
    "<object>",
    "</object>",
    "</delimiter_of_multi_objects/>",
] + [f"<patch_index_{i:04d}>" for i in range(1024)]

# Words of robot instructions and everyday scene descriptions; anything else maps to <unk>.
_WORDS = """
a an the of to in on at by for from with and or but not no is are be this that it its
image robot go move drive turn stop reach navigate around avoid obstacle obstacles pass
front back behind left right forward backward ahead straight side sides center middle
beverage bottle can cup box boxes chair table wall walls door floor room corridor path goal
red green blue yellow orange white black gray brown color coloured colored
slowly quickly carefully near far close closer toward towards into onto past between
first then until after before next one two three four five six seven eight nine ten
meter meters cm step steps degrees rotate spin face facing find search look see
pick place put push pull open close take bring follow line edge corner
small large big little tall short
""".split()
_PUNCT = list(".,;:!?'\"()-/")


def tiny_vocab() -> dict[str, int]:
    words = list(dict.fromkeys(_WORDS))  # stable order, no duplicates
    tokens = HEAD_SPECIALS + words + _PUNCT + KOSMOS2_SPECIALS
    return {tok: i for i, tok in enumerate(tokens)}


def build_tiny_tokenizer() -> Tokenizer:
    """A deterministic word-level tokenizer with the Kosmos-2 special tokens."""
    tok = Tokenizer(models.WordLevel(vocab=tiny_vocab(), unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    # Special tokens are matched before normalisation/pre-tokenisation, so "<grounding>An" splits right.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[.,;:!?'\"()\-/]"), behavior="isolated")]
    )
    tok.add_special_tokens(HEAD_SPECIALS + KOSMOS2_SPECIALS)
    return tok


def load_hub_tokenizer(name_or_path: str = KOSMOS2_HUB_ID) -> Tokenizer:
    """The real Kosmos-2 tokenizer (downloads on first use unless a local folder is given)."""
    from transformers import AutoTokenizer  # noqa: PLC0415  transformers: ~2 s; the hub tokenizer only

    hf = AutoTokenizer.from_pretrained(name_or_path)
    backend = getattr(hf, "backend_tokenizer", None) or getattr(hf, "_tokenizer", None)
    if backend is None:
        raise RuntimeError(f"{name_or_path}: the tokenizer has no fast (tokenizers) backend to save as tokenizer.json")
    return backend


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("tokenizer.json"))
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    tok = build_tiny_tokenizer()
    tok.save(str(args.out))
    print(f"wrote {args.out} ({tok.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
