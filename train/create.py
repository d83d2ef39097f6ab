"""Create a Mobile-VLA model from a preset: parameter counts, and a checkpoint folder to export or fine-tune.

    python -m train.create --preset tiny                       # parameter counts
    python -m train.create --preset tiny --save ckpt/tiny      # and a checkpoint folder
    python -m train.create --preset kosmos2 --random-weights   # real size, no download
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from runtime.logs import add_log_level_argument, setup_logging
from train.checkpoint import save_checkpoint
from train.config import PRESETS, MobileVLAConfig, preset_config
from train.model import build_model, load_tokenizer


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESETS, default="tiny")
    ap.add_argument("--random-weights", action="store_true", help="kosmos2 at real size without downloading weights")
    ap.add_argument("--weights", help="hub id or local folder of Kosmos-2 weights (kosmos2 preset)")
    ap.add_argument("--seed", type=int, default=MobileVLAConfig.seed)
    ap.add_argument("--window", type=int, default=MobileVLAConfig.window)
    ap.add_argument("--chunk", type=int, default=MobileVLAConfig.chunk)
    ap.add_argument("--action-axes", type=int, choices=(2, 3), default=MobileVLAConfig.action_axes)
    ap.add_argument("--save", type=Path, help="write a merged checkpoint folder here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --save folder")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)

    cfg = preset_config(args.preset, random_weights=args.random_weights, weights=args.weights, seed=args.seed,
                        window=args.window, chunk=args.chunk, action_axes=args.action_axes)
    model = build_model(cfg)
    total, trainable = model.parameter_counts()
    kosmos_total = sum(p.numel() for p in model.kosmos.parameters())
    print(f"preset        {cfg.preset}")
    print(f"parameters    {total:,} total, {trainable:,} trainable ({100 * trainable / total:.2f}%)")
    print(f"  kosmos-2    {kosmos_total:,} (frozen)")
    print(f"  ACT token   {model.action_token.numel():,}")
    print(f"  action head {sum(p.numel() for p in model.head.parameters()):,}")
    print(f"window W={cfg.window}  chunk N={cfg.chunk}  axes={','.join(cfg.axis_names)}")
    if args.save:
        save_checkpoint(model, args.save, load_tokenizer(cfg), overwrite=args.overwrite)
        logging.getLogger("train.create").info("saved checkpoint to %s", args.save)


if __name__ == "__main__":
    main()
