"""Fold an adapter checkpoint's LoRA weights into the base: a self-contained merged checkpoint.

    python -m train.merge runs/blocks/checkpoints/best --out merged/
    python -m train.merge ADAPTER --out merged/ --overwrite

Uses peft's merge_and_unload, then checks that the merged model gives the
adapter model's outputs (max abs diff < 1e-5 on the preset's example inputs)
before writing; the folder is written atomically and an existing one is
refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.examples import example_inputs
from train.lora import has_lora, merge_lora

MERGE_TOLERANCE = 1e-5


def merge_checkpoint(src: Path, out: Path, overwrite: bool = False) -> float:
    """-> max abs difference between the adapter's and the merged model's outputs."""
    model, tokenizer, meta = load_checkpoint(src)
    if not has_lora(model):
        raise CheckpointError(f"{src}: already a merged checkpoint (kind {meta['kind']!r}); nothing to merge")
    ex = example_inputs(model.config, tokenizer)
    with torch.no_grad():
        before = model(ex.pixel_values, ex.prompt)
    merged = merge_lora(copy.deepcopy(model)).eval()
    with torch.no_grad():
        diff = (merged(ex.pixel_values, ex.prompt) - before).abs().max().item()
    if diff >= MERGE_TOLERANCE:
        raise RuntimeError(f"{src}: merged outputs differ from the adapter's by {diff:.2e} (>= {MERGE_TOLERANCE})")
    extra = {k: v for k, v in meta.items() if k in ("training", "driving")}
    extra["merged_from"] = str(src)
    save_checkpoint(merged, out, tokenizer, kind="merged", overwrite=overwrite, extra=extra)
    return diff


@exits_on(CheckpointError, FileExistsError, RuntimeError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path, help="adapter checkpoint folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    diff = merge_checkpoint(args.ckpt, args.out, args.overwrite)
    print(f"merged {args.ckpt} -> {args.out} (outputs match the adapter to {diff:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
