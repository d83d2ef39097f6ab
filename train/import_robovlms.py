"""Import a RoboVLMs / Mobile-VLA Lightning checkpoint into our checkpoint format.

    python -m train.import_robovlms epoch=9.ckpt --out imported/ [--preset kosmos2] [--allow-missing]

The original stack's `.ckpt` holds `state_dict` keys `model.backbone.{text_model,
vision_model,image_to_text_projection}.*`, `model.act_head.*` and
`model.action_token` (REFERENCE.md section 3); LoRA runs hold peft keys under
`model.base_model.model.*` with `.base_layer.` and `lora_A/lora_B`, which are
folded in here (W + B A * alpha / r; alpha is not stored in a state dict, so
it is `--lora-alpha`, 16 in the original config). Loading uses
`torch.load(weights_only=True)`: a file that needs arbitrary unpickling is
refused. Every key is accounted for: the report lists what was mapped,
dropped on purpose (the language-model head, tied to the embeddings and
unused here) and unmatched; missing or unmatched keys fail the import unless
`--allow-missing`. (The original's script stripped every "model." substring
and loaded with strict=False, silently dropping weights; this does not.)

Head names: `act_head.rnn.*` / `act_head.lstm.*` -> our LSTM, `act_head.mlp.*`
/ `act_head.actions.mlp.*` -> our MLP. Other head layouts show up as
unmatched keys, never silently.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from train.checkpoint import save_checkpoint
from train.config import PRESETS, preset_config
from train.model import ActionHead, MobileVLA, load_tokenizer

DROPPED = (re.compile(r"^text_model\.lm_head\."),)
HEAD_RULES = [
    (re.compile(r"^act_head\.(?:rnn|lstm)\.(.*)$"), r"head.lstm.\1"),
    (re.compile(r"^act_head\.(?:actions\.)?mlp\.(.*)$"), r"head.mlp.\1"),
]


class ImportError_(ValueError):
    pass


def strip_prefixes(key: str) -> str:
    """Remove the Lightning/peft wrappers: model., base_model.model., backbone. (only as whole prefixes)."""
    for prefix in ("model.", "base_model.model.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def fold_lora(state: dict[str, torch.Tensor], alpha: float) -> tuple[dict[str, torch.Tensor], int]:
    """peft keys -> plain weights: base_layer.weight + lora_B @ lora_A * alpha / r. Returns (state, folded)."""
    out, folded = {}, 0
    for key, value in state.items():
        if ".lora_A." in key or ".lora_B." in key or ".lora_dropout." in key:
            continue
        if ".base_layer." in key:
            plain = key.replace(".base_layer.", ".")
            if key.endswith(".weight"):
                stem = key[: -len(".base_layer.weight")]
                a = next((v for k, v in state.items() if k.startswith(stem + ".lora_A.") and k.endswith("weight")), None)
                b = next((v for k, v in state.items() if k.startswith(stem + ".lora_B.") and k.endswith("weight")), None)
                if a is not None and b is not None:
                    r = a.shape[0]
                    value = value + (b.float() @ a.float()).to(value.dtype) * (alpha / r)
                    folded += 1
            out[plain] = value
        else:
            out[key] = value
    return out, folded


def map_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Original keys -> ours. Returns (mapped, dropped, unmatched)."""
    mapped, dropped, unmatched = {}, [], []
    for key, value in state.items():
        k = strip_prefixes(key)
        if k.startswith("backbone."):
            inner = k[len("backbone."):]
            if any(rule.match(inner) for rule in DROPPED):
                dropped.append(key)
                continue
            mapped["kosmos." + inner] = value
        elif k == "action_token":
            mapped["action_token"] = value.reshape(-1)
        else:
            for rule, repl in HEAD_RULES:
                if rule.match(k):
                    mapped[rule.sub(repl, k)] = value
                    break
            else:
                unmatched.append(key)
    return mapped, dropped, unmatched


def load_lightning_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError and friends
        raise ImportError_(f"{path}: cannot be loaded with weights_only=True (it needs arbitrary unpickling, "
                           f"which is refused for safety): {e}") from e
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportError_(f"{path}: no 'state_dict' of tensors found")
    return state


def import_checkpoint(path: Path, out: Path, preset: str = "kosmos2", lora_alpha: float = 16.0,
                      allow_missing: bool = False, overwrite: bool = False, **overrides) -> dict:
    state = load_lightning_state(path)
    state, folded = fold_lora(state, lora_alpha)
    mapped, dropped, unmatched = map_keys(state)
    if preset == "kosmos2":
        from train.tokenizer import KOSMOS2_HUB_ID

        overrides.setdefault("tokenizer", KOSMOS2_HUB_ID)  # the original was trained with the real tokenizer
    config = preset_config(preset, random_weights=True, **overrides)
    model = MobileVLA(config)
    ours = model.state_dict()
    identity = {f"head.{k}" for k in ActionHead.NORMALIZATION_KEYS}  # the original head had none
    missing = sorted(set(ours) - set(mapped) - identity)
    extra = sorted(set(mapped) - set(ours))
    wrong = [f"{k}: file {tuple(mapped[k].shape)} vs model {tuple(ours[k].shape)}"
             for k in sorted(set(mapped) & set(ours)) if mapped[k].shape != ours[k].shape]
    report = {"mapped": len(set(mapped) & set(ours)), "lora_folded": folded, "dropped": dropped,
              "unmatched": unmatched + extra, "missing": missing, "shape_mismatch": wrong}
    if wrong:
        raise ImportError_(f"{path}: shapes do not match the {preset} preset: {wrong[:3]} "
                           f"(pass --window/--chunk/--action-axes/--head-hidden/--head-layers as trained)")
    if (missing or unmatched or extra) and not allow_missing:
        raise ImportError_(f"{path}: {len(missing)} missing (e.g. {missing[:3]}), {len(unmatched) + len(extra)} "
                           f"unmatched (e.g. {(unmatched + extra)[:3]}); pass --allow-missing to import anyway")
    model.load_state_dict({k: v for k, v in mapped.items() if k in ours}, strict=False)
    save_checkpoint(model.eval(), out, load_tokenizer(config), kind="merged", overwrite=overwrite,
                    extra={"imported_from": str(path), "import_report": report})
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", choices=PRESETS, default="kosmos2")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--action-axes", type=int, default=2, choices=(2, 3))
    ap.add_argument("--head-hidden", type=int)
    ap.add_argument("--head-layers", type=int)
    ap.add_argument("--allow-missing", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    overrides = dict(window=args.window, chunk=args.chunk, action_axes=args.action_axes)
    if args.head_hidden:
        overrides["head_hidden"] = args.head_hidden
    if args.head_layers:
        overrides["head_layers"] = args.head_layers
    try:
        report = import_checkpoint(args.ckpt, args.out, args.preset, args.lora_alpha, args.allow_missing,
                                   args.overwrite, **overrides)
    except (ImportError_, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"imported {args.ckpt} -> {args.out}: {report['mapped']} tensors mapped, {report['lora_folded']} LoRA "
          f"pairs folded, {len(report['dropped'])} dropped on purpose, {len(report['unmatched'])} unmatched, "
          f"{len(report['missing'])} missing")
    for k in report["unmatched"][:20]:
        print(f"  unmatched: {k}")
    for k in report["missing"][:20]:
        print(f"  missing:   {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
