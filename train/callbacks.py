"""What a fit does around the optimisation: checkpoint folders, the head's input standardisation, curves.

    FolderCheckpoint(tokenizer, extra, dirpath=run_dir / "checkpoints", monitor="val/loss", save_top_k=3)
    set_head_standardization(model, train_episodes, options, tokenizer, config)   # before the first step
    plot_curves(run_dir / "csv" / "metrics.csv", run_dir / "curves.png")        # after the last

Every checkpoint Lightning keeps becomes a checkpoint folder (docs/model.md,
"The checkpoint folder": config.json, model.safetensors with the LoRA + ACT + head
weights, tokenizer.json) plus `trainer.ckpt` for `--resume`, written under a
temporary name and renamed.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from plotting import pyplot
from runtime.atomic import atomic_directory
from train.batches import batch_prompt, collate_episodes
from train.checkpoint import write_checkpoint_files
from train.data import DataOptions, EpisodeClipDataset
from train.model import MobileVLA


class FolderCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose every kept checkpoint is a checkpoint folder (docs/model.md, "The checkpoint folder")."""

    def __init__(self, tokenizer, extra: dict, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer, self.extra = tokenizer, extra

    def _save_checkpoint(self, trainer, filepath: str) -> None:
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


def plot_curves(csv_path: Path, out: Path) -> Path | None:
    """Training curves (loss and RMSE per epoch) as a PNG, for a person to look at."""
    plt = pyplot()
    if plt is None:
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
