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

import numpy as np
import torch
import torch.nn.functional as F

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from train.config import PRESETS, MobileVLAConfig, preset_config
from train.data import DataOptions, EpisodeClipDataset, EpisodeDataset, EpisodeError, find_episodes, load_episodes, split_episodes
from train.lora import LoraSettings, apply_lora
from train.model import MobileVLA, PromptTensors, build_kosmos, load_tokenizer

AXES = ("linear_x", "linear_y", "angular_z")
PROMPT_KEYS = ("input_ids", "attention_mask", "image_slot_mask", "position_ids")


def batch_prompt(batch: dict) -> PromptTensors:
    return PromptTensors(*(batch[k] for k in PROMPT_KEYS))


class MobileVLAModule(L.LightningModule):
    def __init__(self, model_config: dict, lora: dict, lr: float = 1e-4, weight_decay: float = 0.0,
                 huber_delta: float = 1.0, warmup_steps: int = 0, act_lr: float | None = None,
                 lora_lr: float | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.config = MobileVLAConfig.from_dict(model_config)
        # SDPA attention for training: 2-3x faster than eager on CPU; the same weights export with eager.
        kosmos = build_kosmos(self.config, attn_implementation="sdpa")
        self.model = apply_lora(MobileVLA(self.config, kosmos=kosmos), LoraSettings.from_dict(lora))
        self.axes = AXES[: self.config.action_axes]

    def forward(self, batch):
        prompt = batch_prompt(batch)
        if "window_index" not in batch:
            return self.model(batch["pixel_values"], prompt)
        # Episode batches: each frame through the VLM once, then every window of it through the head.
        features = self.model.frame_features(batch["pixel_values"], prompt)  # (F, D), prompt row per frame
        return self.model.head(features[batch["window_index"]])  # (windows, W, N, A)

    def _step(self, batch, stage: str):
        pred = self(batch)
        mask = batch["mask"].unsqueeze(-1).expand_as(pred)
        denom = mask.sum().clamp(min=1)
        loss = (F.huber_loss(pred, batch["targets"], reduction="none", delta=self.hparams.huber_delta)
                * mask).sum() / denom
        sq = ((pred - batch["targets"]) ** 2) * mask
        on_step = stage == "train"
        logs = {f"{stage}/loss": loss, f"{stage}/rmse": torch.sqrt(sq.sum() / denom)}
        per_axis = mask[..., 0].sum().clamp(min=1)
        for i, name in enumerate(self.axes):
            logs[f"{stage}/rmse_{name}"] = torch.sqrt(sq[..., i].sum() / per_axis)
        self.log_dict(logs, on_step=on_step, on_epoch=True, prog_bar=(stage == "val"),
                      batch_size=pred.shape[0], sync_dist=not on_step)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        # Three groups: the head (--lr), the ACT token (--act-lr) and the LoRA weights (--lora-lr), each
        # defaulting to --lr. A slow LoRA matters on tiny: at the head's 1e-3, LoRA moved the features
        # under the head and erased the left/right instruction (first-move side 30% vs 100% frozen);
        # at 2e-5 it kept 90% (measured on train.synth episodes, 300 steps).
        act = self.model.action_token
        lora = [p for n, p in self.named_parameters() if p.requires_grad and "lora_" in n]
        taken = {id(act), *map(id, lora)}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        lr = self.hparams.lr
        groups = [{"params": rest, "name": "head"},
                  {"params": [act], "lr": lr if self.hparams.act_lr is None else self.hparams.act_lr, "name": "act"}]
        if lora:
            groups.append({"params": lora, "lr": lr if self.hparams.lora_lr is None else self.hparams.lora_lr,
                           "name": "lora"})
        opt = torch.optim.AdamW(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if not self.hparams.warmup_steps:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.hparams.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class FolderCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose every kept checkpoint is a checkpoint folder (DESIGN.md contract 2)."""

    def __init__(self, tokenizer, extra: dict, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer, self.extra = tokenizer, extra

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        from runtime.atomic import atomic_directory
        from train.checkpoint import write_checkpoint_files

        folder = Path(filepath[: -len(self.FILE_EXTENSION)])
        trainer.strategy.barrier("folder-checkpoint")
        if trainer.is_global_zero:
            with atomic_directory(folder, overwrite=True) as tmp:
                trainer.save_checkpoint(str(tmp / "trainer.ckpt"), weights_only=False)  # optimizer, loops: --resume
                module = trainer.lightning_module
                extra = dict(self.extra, epoch=trainer.current_epoch, global_step=trainer.global_step,
                             metrics={k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
                write_checkpoint_files(module.model, tmp, self.tokenizer, kind="adapter", extra=extra)
        else:
            trainer.save_checkpoint(str(folder / "trainer.ckpt"), weights_only=False)  # collective when sharded
        trainer.strategy.barrier("folder-checkpoint-done")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        folder = Path(filepath[: -len(self.FILE_EXTENSION)])
        if trainer.is_global_zero and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def collate(samples: list[dict]) -> dict:
    out = {}
    for key in samples[0]:
        if key == "instruction":
            out[key] = [s[key] for s in samples]
        else:
            out[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
    return out


def set_head_standardization(model: MobileVLA, episodes, options: DataOptions, tokenizer, config,
                             max_frames: int = 600, seed: int = 0) -> dict:
    """Per-dimension mean and 1/std of the ACT features over (a sample of) the training frames, as the
    model computes them now (before fitting), written into the head's input standardisation."""
    dataset = EpisodeClipDataset(episodes, options, tokenizer, config, augment=False)
    order = np.random.default_rng(seed).permutation(len(dataset))
    feats, count = [], 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in order:
            sample = collate_episodes([dataset[int(i)]])
            feats.append(model.frame_features(sample["pixel_values"], batch_prompt(sample)))
            count += len(feats[-1])
            if count >= max_frames:
                break
    model.train(was_training)
    f = torch.cat(feats)
    model.head.feature_mean.copy_(f.mean(0))
    model.head.feature_scale.copy_(1.0 / f.std(0).clamp(min=1e-4))
    return {"frames": int(len(f)), "mean_abs": float(f.mean(0).abs().mean()), "std": float(f.std(0).mean())}


def collate_episodes(samples: list[dict]) -> dict:
    """Episodes -> one flat batch of frames (prompt row per frame) and windows indexing into it."""
    out = {"instruction": [s["instruction"] for s in samples]}
    offsets = np.cumsum([0] + [len(s["pixel_values"]) for s in samples[:-1]])
    out["window_index"] = torch.from_numpy(np.concatenate([s["window_index"] + o for s, o in zip(samples, offsets)]))
    out["pixel_values"] = torch.from_numpy(np.concatenate([s["pixel_values"] for s in samples]))
    for key in ("targets", "mask"):
        out[key] = torch.from_numpy(np.concatenate([s[key] for s in samples]))
    for key in PROMPT_KEYS:
        out[key] = torch.from_numpy(np.concatenate([np.repeat(s[key][None], len(s["pixel_values"]), 0)
                                                    for s in samples]))
    return out


def plot_curves(csv_path: Path, out: Path) -> Path | None:
    """Training curves (loss and RMSE per epoch) as a PNG, for a person to look at."""
    try:
        import csv

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = list(csv.DictReader(open(csv_path)))
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        for key in ("train/loss_epoch", "val/loss", "train/rmse_epoch", "val/rmse"):
            if r.get(key):
                series.setdefault(key, []).append((float(r["epoch"]), float(r[key])))
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, points in series.items():
        ax = axes[0] if "loss" in key else axes[1]
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=key.replace("_epoch", ""))
    for ax, title in zip(axes, ("Huber loss", "RMSE (normalised actions)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


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
    ap.add_argument("--window", type=int, default=8)
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
    ap.add_argument("--val-fraction", type=float, default=0.2)
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*")
    L.seed_everything(args.seed, workers=True, verbose=False)
    run_dir = args.out / args.name
    if args.init:
        from tokenizers import Tokenizer

        from train.checkpoint import CheckpointError
        from train.init import init_config

        try:
            config = init_config(args.init, window=args.window, chunk=args.chunk, action_axes=args.action_axes,
                                 action_range=args.action_range, seed=args.seed, channel_order=args.channel_order)
        except (CheckpointError, ValueError) as e:
            print(f"error: --init: {e}", file=sys.stderr)
            return 1
        tokenizer = Tokenizer.from_file(str(args.init / "tokenizer.json"))
    else:
        overrides = dict(window=args.window, chunk=args.chunk or 10, action_axes=args.action_axes or 2,
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
                          color_jitter=args.color_jitter, mirror=args.mirror)
    try:
        paths = find_episodes(args.data)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    train_paths, val_paths = split_episodes(paths, args.val_fraction, args.seed)
    rejected = []
    try:
        train_eps, bad = load_episodes(train_paths, options, strict=args.strict, warn=lambda m: print(m, file=sys.stderr))
        rejected += bad
        val_eps, bad = load_episodes(val_paths, options, strict=args.strict, warn=lambda m: print(m, file=sys.stderr))
        rejected += bad
    except EpisodeError as e:
        print(f"error: {e} (--strict)", file=sys.stderr)
        return 1
    if not train_eps or not val_eps:
        print(f"error: {args.data}: need valid episodes for both train and val "
              f"(found {len(train_eps)} train, {len(val_eps)} val, {len(rejected)} rejected)", file=sys.stderr)
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)
    split = {"seed": args.seed, "val_fraction": args.val_fraction,
             "train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths],
             "rejected": {str(p): why for p, why in rejected}}
    (run_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")

    targets = {t.strip() for t in args.lora_targets.split(",") if t.strip()} | ({"vision"} if args.lora_vision else set())
    unknown = targets - {"text", "projection", "vision"}
    if unknown or not targets:
        print(f"error: --lora-targets: unknown {sorted(unknown)}; use text, projection, vision", file=sys.stderr)
        return 1
    lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, text="text" in targets,
                        projection="projection" in targets, vision="vision" in targets)
    module = MobileVLAModule(config.to_dict(), lora.to_dict(), lr=args.lr, weight_decay=args.weight_decay,
                             warmup_steps=args.warmup_steps, act_lr=args.act_lr, lora_lr=args.lora_lr)
    if args.init:
        from train.init import init_from_checkpoint

        init_from_checkpoint(module.model, args.init)
    if (args.lora or ("frozen" if args.init else "train")) == "frozen":
        for name, p in module.model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)  # LoRA B starts at zero: frozen, the adapter changes nothing
    dataset = EpisodeClipDataset if args.batching == "episode" else EpisodeDataset
    train_ds = dataset(train_eps, options, tokenizer, config, augment=True, seed=args.seed)
    val_ds = dataset(val_eps, options, tokenizer, config, augment=False)
    loader = dict(batch_size=args.batch_size, collate_fn=collate_episodes if args.batching == "episode" else collate,
                  num_workers=args.workers,
                  persistent_workers=args.workers > 0)
    train_dl = torch.utils.data.DataLoader(train_ds, shuffle=True, drop_last=False, **loader)
    val_dl = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader)

    extra = {"training": {"data": str(args.data), "run": str(run_dir), "split": "split.json",
                          "options": asdict(options)}}
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
            print(f"error: --resume: {resume} not found", file=sys.stderr)
            return 1
    if resume is None and args.init:
        print(f"ACT and head start from {args.init} (its input standardisation kept)", file=sys.stderr)
    elif resume is None:
        stats = set_head_standardization(module.model, train_eps, options, tokenizer, config, seed=args.seed)
        print(f"head input standardised from {stats['frames']} training frames "
              f"(feature offset {stats['mean_abs']:.3f}, spread {stats['std']:.3f})", file=sys.stderr)
    if resume is None:
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
