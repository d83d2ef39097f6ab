"""Fit Mobile-VLA with LoRA on the robot's episodes (Lightning).

    python -m train.fit --data episodes/ --preset tiny --max-epochs 20 --out runs/ --name blocks
    python -m train.fit --data episodes/ --preset kosmos2 --precision bf16-mixed --devices 4 --accumulate 4
    python -m train.fit --data episodes/ --preset tiny --out runs/ --name blocks --resume     # from last
    python -m train.merge runs/blocks/checkpoints/best --out merged/                         # then export
    python -m train.fit --data episodes/ --init imported/ --out runs/ --name migrated        # from an import

Frozen Kosmos-2 + LoRA (text decoder and image-to-text projection by
default) + ACT + LSTM head, Huber loss on the normalised action chunk, masked
past each episode's end. Batches are whole episodes (`--batching episode`):
each frame goes through the VLM once per epoch and every window of the
episode is built from those features (W times less VLM work than one window
per sample, the same loss). The head's inputs are standardised with the
frozen model's feature statistics on the training frames; the head, the ACT
token and the LoRA weights have their own learning rates (`--lr`,
`--act-lr`, `--lora-lr`). Logged per step and epoch: loss, RMSE overall and
per axis, learning rate; CSV (`runs/<name>/csv/metrics.csv`) and
TensorBoard (`runs/<name>/tensorboard/`). The train/val split is by episode,
seeded, saved to `runs/<name>/split.json`. Every checkpoint kept (the 3 best
by val loss, and `last`) is a checkpoint folder (config.json,
model.safetensors with the LoRA + ACT + head weights, tokenizer.json) plus
`trainer.ckpt` with the optimizer state for `--resume`; `best` is a copy of
the best one. Multi-GPU / multi-node is Lightning's DDP (`--devices`,
`--num-nodes`). Bad episode files are skipped with a warning and listed at
the end, or stop the run with `--strict`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tokenizers import Tokenizer

from runtime.cli import CommandError, exits_on
from train.batches import collate, collate_episodes
from train.callbacks import FolderCheckpoint, plot_curves, set_head_standardization
from train.checkpoint import CheckpointError
from train.config import PRESETS, preset_config
from train.data import (
    DataOptions,
    EpisodeClipDataset,
    EpisodeDataset,
    EpisodeError,
    SplitOptions,
    driving_from_episodes,
    find_episodes,
    load_episodes,
    read_split,
    split_episodes,
)
from train.init import init_config, init_from_checkpoint
from train.lora import LoraSettings
from train.model import load_tokenizer
from train.module import MobileVLAModule


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder of .h5 episodes")
    ap.add_argument("--preset", choices=PRESETS, default="tiny")
    ap.add_argument("--weights", help="kosmos2: hub id or local folder of the pretrained weights")
    ap.add_argument("--random-weights", action="store_true", help="kosmos2 at real size without a download")
    ap.add_argument("--out", type=Path, default=Path("runs"))
    ap.add_argument("--name", default="run")
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8, help="episodes per batch (windows with --batching window)")
    ap.add_argument("--batching", choices=("episode", "window"), default="episode",
                    help="episode: each frame through the VLM once per epoch and all its windows from that "
                         "(W times less VLM work, same loss); window: one window per sample")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--act-lr", type=float, help="learning rate of the ACT token (default: --lr)")
    ap.add_argument("--lora-lr", type=float, help="learning rate of the LoRA weights (default: --lr)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--window", type=int, help="default 8 (with --init: the checkpoint's)")
    ap.add_argument("--chunk", type=int, help="default 10 (with --init: the checkpoint's)")
    ap.add_argument("--action-axes", type=int, choices=(2, 3), help="default 2 (with --init: the checkpoint's)")
    ap.add_argument("--init", type=Path, help="start from a merged checkpoint (e.g. one train.import_robovlms wrote): "
                                              "its Kosmos-2 as the frozen base, its ACT and head as the start, "
                                              "our prompt layout (train/init.py, docs/migrating.md)")
    ap.add_argument("--lora", choices=("train", "frozen"),
                    help="train the LoRA weights (default) or keep them at zero (the default with --init)")
    ap.add_argument("--action-range", type=float, default=1.15)
    ap.add_argument("--channel-order", choices=("bgr", "rgb"), default="bgr", help="of the stored images")
    ap.add_argument("--instruction", help="instruction for files without one (default: the model's default)")
    ap.add_argument("--lora-r", type=int, default=32)
    ap.add_argument("--lora-alpha", type=int, default=16)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--lora-targets", default="text,projection",
                    help="comma-separated: text (decoder), projection (image-to-text), vision (tower)")
    ap.add_argument("--lora-vision", action="store_true", help="shorthand: add vision to --lora-targets")
    ap.add_argument("--color-jitter", type=float, default=0.0, help="augmentation strength (0 = off)")
    ap.add_argument("--mirror", action="store_true", help="augmentation: horizontal mirror")
    ap.add_argument("--val-fraction", type=float, default=SplitOptions.val_fraction)
    ap.add_argument("--split", type=Path, help="a split file from `python -m train.data split` (instead of "
                                               "--val-fraction/--seed drawing one)")
    ap.add_argument("--intervention-weight", type=float, default=DataOptions.intervention_weight,
                    help="loss weight of frames a person took over (runtime.drive --teleop --record; docs/recording.md)")
    ap.add_argument("--policy-weight", type=float, default=DataOptions.policy_weight,
                    help="loss weight of the policy's own frames in recorded runs (0: train on corrections only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("32", "16-mixed", "bf16-mixed"), default="32")
    ap.add_argument("--accumulate", type=int, default=1, help="gradient accumulation batches")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient clipping norm (0 = off)")
    ap.add_argument("--early-stop", type=int, default=0, help="patience in epochs on val loss (0 = off)")
    ap.add_argument("--devices", default="auto")
    ap.add_argument("--num-nodes", type=int, default=1)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--strategy", default="auto", help="e.g. ddp (Lightning's; gloo on CPU, nccl on GPU)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--strict", action="store_true", help="stop at the first bad episode file")
    ap.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoints/last")
    ap.add_argument("--no-progress", action="store_true")
    return ap


@exits_on(FileNotFoundError)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*")
    L.seed_everything(args.seed, workers=True, verbose=False)
    run_dir = args.out / args.name
    if args.init:
        try:
            config = init_config(args.init, window=args.window, chunk=args.chunk, action_axes=args.action_axes,
                                 action_range=args.action_range, seed=args.seed, channel_order=args.channel_order)
        except (CheckpointError, ValueError) as e:
            raise CommandError(f"--init: {e}") from e
        tokenizer = Tokenizer.from_file(str(args.init / "tokenizer.json"))
    else:
        overrides = dict(window=args.window or 8, chunk=args.chunk or 10, action_axes=args.action_axes or 2,
                         action_range=args.action_range, seed=args.seed,
                         preprocess=dict(preset_config("tiny").preprocess, channel_order=args.channel_order))
        config = preset_config(args.preset, random_weights=args.random_weights, weights=args.weights, **overrides)
        tokenizer = load_tokenizer(config)
    if args.instruction:
        config = replace(config, default_instruction=args.instruction)
    options = DataOptions(window=config.window, chunk=config.chunk, action_axes=config.action_axes,
                          action_range=config.action_range, channel_order=args.channel_order,
                          model_channel_order=config.preprocess_config().model_channel_order,
                          image_size=config.image_size, default_instruction=config.default_instruction,
                          color_jitter=args.color_jitter, mirror=args.mirror,
                          intervention_weight=args.intervention_weight, policy_weight=args.policy_weight)
    paths = find_episodes(args.data)
    if args.split:
        train_paths, val_paths = read_split(args.split, args.data)
    else:
        train_paths, val_paths = split_episodes(paths, args.val_fraction, args.seed)
    rejected = []
    try:
        train_eps, bad = load_episodes(train_paths, options, strict=args.strict, warn=lambda m: print(m, file=sys.stderr))
        rejected += bad
        val_eps, bad = load_episodes(val_paths, options, strict=args.strict, warn=lambda m: print(m, file=sys.stderr))
        rejected += bad
    except EpisodeError as e:
        raise CommandError(f"{e} (--strict)") from e
    if not train_eps or not val_eps:
        raise CommandError(f"{args.data}: need valid episodes for both train and val "
                           f"(found {len(train_eps)} train, {len(val_eps)} val, {len(rejected)} rejected)")
    run_dir.mkdir(parents=True, exist_ok=True)
    split = {"seed": args.seed, "val_fraction": args.val_fraction,
             "train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths],
             "rejected": {str(p): why for p, why in rejected}}
    (run_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")

    targets = {t.strip() for t in args.lora_targets.split(",") if t.strip()} | ({"vision"} if args.lora_vision else set())
    unknown = targets - {"text", "projection", "vision"}
    if unknown or not targets:
        raise CommandError(f"--lora-targets: unknown {sorted(unknown)}; use text, projection, vision")
    lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, text="text" in targets,
                        projection="projection" in targets, vision="vision" in targets)
    module = MobileVLAModule(config.to_dict(), lora.to_dict(), lr=args.lr, weight_decay=args.weight_decay,
                             warmup_steps=args.warmup_steps, act_lr=args.act_lr, lora_lr=args.lora_lr)
    if args.init:
        init_from_checkpoint(module.model, args.init)
    if (args.lora or ("frozen" if args.init else "train")) == "frozen":
        module.model.freeze_vlm()  # LoRA too: its B starts at zero, so frozen the adapter changes nothing
    dataset = EpisodeClipDataset if args.batching == "episode" else EpisodeDataset
    train_ds = dataset(train_eps, options, tokenizer, config, augment=True, seed=args.seed)
    val_ds = dataset(val_eps, options, tokenizer, config, augment=False)
    loader = dict(batch_size=args.batch_size, collate_fn=collate_episodes if args.batching == "episode" else collate,
                  num_workers=args.workers,
                  persistent_workers=args.workers > 0)
    train_dl = torch.utils.data.DataLoader(train_ds, shuffle=True, drop_last=False, **loader)
    val_dl = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader)

    extra = {"training": {"data": str(args.data), "run": str(run_dir), "split": "split.json",
                          "options": asdict(options)},
             "driving": driving_from_episodes(train_eps + val_eps)}  # the frame spacing the window was learnt at
    ckpt = FolderCheckpoint(tokenizer, extra, dirpath=run_dir / "checkpoints", monitor="val/loss", mode="min",
                            save_top_k=3, save_last=True, auto_insert_metric_name=False,
                            filename="epoch{epoch:03d}-val_loss{val/loss:.4f}")
    callbacks = [ckpt, LearningRateMonitor(logging_interval="step")]
    if args.early_stop:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=args.early_stop))
    loggers = [CSVLogger(run_dir, name="csv", version=""), TensorBoardLogger(run_dir, name="tensorboard", version="")]
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    trainer = L.Trainer(max_epochs=args.max_epochs, precision=args.precision, accumulate_grad_batches=args.accumulate,
                        gradient_clip_val=args.clip or None, devices=devices, num_nodes=args.num_nodes,
                        accelerator=args.accelerator, strategy=args.strategy, callbacks=callbacks, logger=loggers,
                        enable_progress_bar=not args.no_progress, log_every_n_steps=1,
                        enable_model_summary=False, deterministic=False, num_sanity_val_steps=0,
                        default_root_dir=run_dir)
    resume = None
    if args.resume:
        resume = run_dir / "checkpoints" / "last" / "trainer.ckpt"
        if not resume.is_file():
            raise CommandError(f"--resume: {resume} not found")
    if resume is None:
        if args.init:
            print(f"ACT and head start from {args.init} (its input standardisation kept)", file=sys.stderr)
        else:
            stats = set_head_standardization(module.model, train_eps, options, tokenizer, config, seed=args.seed)
            print(f"head input standardised from {stats['frames']} training frames "
                  f"(feature offset {stats['mean_abs']:.3f}, spread {stats['std']:.3f})", file=sys.stderr)
        trainer.validate(module, val_dl, verbose=False)  # the epoch-0 reference for "val loss before training"
    first_val = float(trainer.callback_metrics.get("val/loss", float("nan")))
    # Resuming loads plain tensors and dicts only (weights_only=True): nothing in a run folder is unpickled.
    trainer.fit(module, train_dl, val_dl, ckpt_path=str(resume) if resume else None,
                weights_only=True if resume else None)
    if trainer.is_global_zero:
        best = Path(ckpt.best_model_path[: -len(ckpt.FILE_EXTENSION)]) if ckpt.best_model_path else None
        if best and best.is_dir():
            target = run_dir / "checkpoints" / "best"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(best, target, ignore=shutil.ignore_patterns("trainer.ckpt"))
        curves = plot_curves(run_dir / "csv" / "metrics.csv", run_dir / "curves.png")
        summary = {"first_val_loss": first_val, "best_val_loss": float(ckpt.best_model_score or float("nan")),
                   "best": str(run_dir / "checkpoints" / "best"), "epochs": trainer.current_epoch,
                   "rejected": split["rejected"]}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nval loss {first_val:.4f} before training -> best {summary['best_val_loss']:.4f}")
        print(f"best checkpoint: {summary['best']}  (merge: python -m train.merge {summary['best']} --out DIR)")
        if curves:
            print(f"training curves: {curves}")
        if rejected:
            print(f"{len(rejected)} episode file(s) skipped:")
            for path, why in rejected:
                print(f"  {path}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
