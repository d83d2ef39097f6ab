"""Fit Mobile-VLA with LoRA on the robot's episodes (Lightning).

    python -m train.fit --data episodes/ --preset tiny --max-epochs 20 --out runs/ --name blocks
    python -m train.fit --data episodes/ --preset kosmos2 --precision bf16-mixed --devices 4 --accumulate 4
    python -m train.fit --data episodes/ --preset tiny --out runs/ --name blocks --resume     # from last
    python -m train.merge runs/blocks/checkpoints/best --out merged/                         # then export
    python -m train.fit --data episodes/ --init imported/ --out runs/ --name migrated        # from an import

    from train.fit import FitOptions, fit
    result = fit(FitOptions(data=Path("episodes"), max_epochs=8))     # result.best, result.best_val_loss

Frozen Kosmos-2 + LoRA (text decoder and image-to-text projection by
default) + ACT + LSTM head, Huber loss on the normalised action chunk, masked
past each episode's end. Batches are whole episodes (`--batching episode`):
each frame goes through the VLM once per epoch and every window of the
episode is built from those features (W times less VLM work than one window
per sample, the same loss). The head's inputs are standardised with the
frozen model's feature statistics on the training frames; the head, the ACT
token and the LoRA weights have their own learning rates (`--lr`, 1e-3 for
the head, `--act-lr` (default: `--lr`), `--lora-lr`, 2e-5: a LoRA as fast as
the head moved the features under it and erased the instruction). Logged per step and epoch: loss, RMSE overall and
per axis, learning rate; CSV (`runs/<name>/csv/metrics.csv`) and
TensorBoard (`runs/<name>/tensorboard/`). The train/val split is by episode,
seeded, saved to `runs/<name>/split.json`. Every checkpoint kept (the 3 best
by val loss, and `last`) is a checkpoint folder (config.json,
model.safetensors with the LoRA + ACT + head weights, tokenizer.json) plus
`trainer.ckpt` with the optimizer state for `--resume` (not the frozen
Kosmos-2 weights: a fingerprint of them, train/module.py); `best` is a copy of
the best one. Multi-GPU / multi-node is Lightning's DDP (`--devices`,
`--num-nodes`). Bad episode files are skipped with a warning and listed at
the end, or stop the run with `--strict`. The accelerator it trains on is
logged at start (a warning when `auto` finds no GPU); `--accelerator gpu`
without one exits 1. The checkpoints record how the policy should be driven
(`driving`: step or continuous, discrete moves or raw actions, frame spacing;
runtime/policy/driving.py), from the data and `--drive-mode` / `--frame-spacing`.
The recipe for the real model on a 24 GB GPU: docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tokenizers import Tokenizer

from runtime.cli import exits_on, show_defaults
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.driving import MODES, Driving
from train.batches import collate, collate_episodes
from train.callbacks import FolderCheckpoint, plot_curves, set_head_standardization
from train.checkpoint import CheckpointError
from train.config import PRESETS, MobileVLAConfig, preset_config
from train.data import (
    DataOptions,
    EpisodeClipDataset,
    EpisodeDataset,
    EpisodeError,
    SplitOptions,
    find_episodes,
    load_episodes,
    read_split,
    recorded_driving,
    split_episodes,
)
from train.init import init_config, init_from_checkpoint
from train.lora import LoraSettings
from train.model import load_tokenizer
from train.module import MobileVLAModule, ResumeMismatch

log = logging.getLogger("train.fit")  # not __main__ under python -m
LORA_TARGETS = ("text", "projection", "vision")


class FitError(ValueError):
    """A run that cannot start or finish as asked; the message names the option and what to do."""


@dataclass(frozen=True)
class FitOptions:
    """One training run: every option of `python -m train.fit` (its defaults are these)."""

    data: Path  # folder of .h5 episodes
    preset: str = "tiny"  # one of train.config.PRESETS
    weights: str | None = None  # kosmos2: hub id or local folder of the pretrained weights
    random_weights: bool = False  # kosmos2 at real size without a download
    out: Path = Path("runs")  # runs/<name>/ holds the checkpoints, logs, curves
    name: str = "run"
    max_epochs: int = 20
    batch_size: int = 8  # episodes per batch (windows with batching="window")
    batching: str = "episode"  # "episode": each frame through the VLM once per epoch; "window": one per sample
    lr: float = 1e-3  # the head's learning rate (the demo's and the real-model recipe's, docs/training.md)
    act_lr: float | None = None  # the ACT token's; None = lr
    lora_lr: float | None = 2e-5  # the LoRA weights'; None = lr (a LoRA as fast as the head erased the instruction)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up of every learning rate
    window: int | None = None  # W; None = the model config's (MobileVLAConfig.window) or --init's
    chunk: int | None = None  # N; None = the model config's or --init's
    action_axes: int | None = None  # 2 or 3; None = the model config's or --init's
    init: Path | None = None  # a merged checkpoint to start from (train/init.py, docs/migrating.md)
    lora: str | None = None  # "train" or "frozen"; None = train, frozen with init
    action_range: float = MobileVLAConfig.action_range  # raw actions clamped to +-range, divided by it
    channel_order: str = DataOptions.channel_order  # of the stored images
    instruction: str | None = None  # for files without one; None = the model's default
    lora_r: int = LoraSettings.r
    lora_alpha: int = LoraSettings.alpha
    lora_dropout: float = LoraSettings.dropout
    lora_targets: tuple[str, ...] = ("text", "projection")  # of LORA_TARGETS
    color_jitter: float = DataOptions.color_jitter  # augmentation strength (0 = off)
    mirror: bool = DataOptions.mirror  # augmentation: horizontal mirror
    val_fraction: float = SplitOptions.val_fraction  # drawn by seed unless a split file is given
    split: Path | None = None  # a split file from `python -m train.data split` (instead of drawing one)
    intervention_weight: float = DataOptions.intervention_weight  # loss weight of frames a person took over
    policy_weight: float = DataOptions.policy_weight  # loss weight of the policy's own frames in recorded runs
    seed: int = SplitOptions.seed
    precision: str = "32"  # "32", "16-mixed" or "bf16-mixed"
    accumulate: int = 1  # gradient accumulation batches
    clip: float = 1.0  # gradient clipping norm (0 = off)
    early_stop: int = 0  # patience in epochs on val loss (0 = off)
    devices: str | int = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"  # "auto", "cpu", "gpu" (or "cuda"), ...: Lightning's
    strategy: str = "auto"  # e.g. "ddp"
    workers: int = 0  # DataLoader worker processes
    strict: bool = False  # stop at the first bad episode file
    resume: bool = False  # continue from runs/<name>/checkpoints/last
    progress: bool = True  # Lightning's progress bar
    drive_mode: str | None = None  # how the policy should drive (runtime.policy.driving.MODES); None = as recorded
    frame_spacing: float | None = None  # s between a window's frames; None = the recordings' (0.4 s collector moves)


@dataclass(frozen=True)
class FitResult:
    run_dir: Path  # runs/<name>
    best: Path | None  # the best checkpoint folder (runs/<name>/checkpoints/best)
    first_val_loss: float  # before training
    best_val_loss: float
    epochs: int
    accelerator: str  # what it trained on, in words
    driving: Driving  # recorded in every checkpoint
    curves: Path | None  # curves.png
    rejected: dict = field(default_factory=dict)  # {episode file: why it was skipped}
    reporting: bool = True  # False on the other processes of a multi-process run (rank 0 reports)

    def summary(self) -> dict:
        return {"first_val_loss": self.first_val_loss, "best_val_loss": self.best_val_loss,
                "best": str(self.best) if self.best else None, "epochs": self.epochs,
                "accelerator": self.accelerator, "driving": self.driving.to_dict(), "rejected": self.rejected}


def choose_accelerator(requested: str) -> tuple[str, str]:
    """(Lightning's accelerator, the device in words). `gpu`/`cuda` without a usable GPU is refused: a
    torch built for another CUDA than the driver's reports no GPU, and training would crawl on the CPU."""
    cuda = torch.cuda.is_available()
    build = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}" if torch.version.cuda else \
        f"torch {torch.__version__}, a CPU-only build"
    if requested in ("gpu", "cuda") and not cuda:
        raise FitError(f"--accelerator {requested}: no GPU usable here ({build}; torch.cuda.is_available() is "
                       f"False). Install the torch for your driver's CUDA version (README.md, 'Install for real "
                       f"work, by machine': the index for CUDA 12 or 13), or train with --accelerator cpu")
    if requested in ("gpu", "cuda") or (requested == "auto" and cuda):
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return requested, f"GPU ({names}; {build})"
    if requested == "auto" and torch.backends.mps.is_available():
        return "mps", f"the Apple GPU (MPS; {build})"
    if requested == "auto":
        return "cpu", f"the CPU: no GPU usable here ({build})"
    return requested, "the CPU" if requested == "cpu" else requested


def build_config(options: FitOptions) -> tuple[MobileVLAConfig, Tokenizer]:
    if options.init:
        try:
            config = init_config(options.init, window=options.window, chunk=options.chunk,
                                 action_axes=options.action_axes, action_range=options.action_range,
                                 seed=options.seed, channel_order=options.channel_order)
        except (CheckpointError, ValueError) as e:
            raise FitError(f"--init: {e}") from e
        tokenizer = Tokenizer.from_file(str(options.init / "tokenizer.json"))
    else:
        given = {k: getattr(options, k) for k in ("window", "chunk", "action_axes") if getattr(options, k)}
        config = preset_config(options.preset, random_weights=options.random_weights, weights=options.weights,
                               action_range=options.action_range, seed=options.seed,
                               preprocess=dict(preset_config("tiny").preprocess,
                                               channel_order=options.channel_order), **given)
        tokenizer = load_tokenizer(config)
    if options.instruction:
        config = replace(config, default_instruction=options.instruction)
    return config, tokenizer


def lora_settings(options: FitOptions) -> LoraSettings:
    targets = set(options.lora_targets)
    unknown = targets - set(LORA_TARGETS)
    if unknown or not targets:
        raise FitError(f"--lora-targets: unknown {sorted(unknown)}; use {', '.join(LORA_TARGETS)}")
    return LoraSettings(r=options.lora_r, alpha=options.lora_alpha, dropout=options.lora_dropout,
                        text="text" in targets, projection="projection" in targets, vision="vision" in targets)


def fit(options: FitOptions) -> FitResult:
    """Train as `options` say; the checkpoints, logs and curves go under options.out / options.name."""
    if options.drive_mode is not None and options.drive_mode not in MODES:
        raise FitError(f"--drive-mode: expected one of {', '.join(MODES)}, found {options.drive_mode!r}")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*")
    accelerator, device = choose_accelerator(options.accelerator)
    if not log.isEnabledFor(logging.DEBUG):  # Lightning's banners ("GPU available: ...") repeat the line below
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    (log.warning if accelerator == "cpu" and options.accelerator == "auto" else log.info)("training on %s", device)
    L.seed_everything(options.seed, workers=True, verbose=False)
    run_dir = options.out / options.name
    config, tokenizer = build_config(options)
    data = DataOptions.for_model(config, channel_order=options.channel_order, color_jitter=options.color_jitter,
                                 mirror=options.mirror, intervention_weight=options.intervention_weight,
                                 policy_weight=options.policy_weight)
    if options.split:
        train_paths, val_paths = read_split(options.split, options.data)
    else:
        train_paths, val_paths = split_episodes(find_episodes(options.data), options.val_fraction, options.seed)
    try:
        train_eps, bad_train = load_episodes(train_paths, data, strict=options.strict, warn=log.warning)
        val_eps, bad_val = load_episodes(val_paths, data, strict=options.strict, warn=log.warning)
    except EpisodeError as e:
        raise FitError(f"{e} (--strict)") from e
    rejected = bad_train + bad_val
    if not train_eps or not val_eps:
        raise FitError(f"{options.data}: need valid episodes for both train and val "
                       f"(found {len(train_eps)} train, {len(val_eps)} val, {len(rejected)} rejected)")
    try:
        driving = recorded_driving(train_eps, val_eps, data, options.drive_mode, options.frame_spacing)
    except EpisodeError as e:
        raise FitError(str(e)) from e
    log.info("driving record: %s", driving.source)
    real = [e for e in train_eps if not simulated(e)]
    if options.preset == "tiny" and real:
        log.warning("training the tiny preset (a random Kosmos-2 of ~0.25 M parameters, for tests and the simulator) "
                    "on %d episodes recorded by a real camera: it cannot learn a real scene; --preset kosmos2 trains "
                    "the real model (docs/training.md)", len(real))
    run_dir.mkdir(parents=True, exist_ok=True)
    split = {"seed": options.seed, "val_fraction": options.val_fraction,
             "train": [str(p) for p in train_paths], "val": [str(p) for p in val_paths],
             "rejected": {str(p): why for p, why in rejected}}
    (run_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")

    module = MobileVLAModule(config.to_dict(), lora_settings(options).to_dict(), lr=options.lr,
                             weight_decay=options.weight_decay, warmup_steps=options.warmup_steps,
                             act_lr=options.act_lr, lora_lr=options.lora_lr)
    if options.init:
        init_from_checkpoint(module.model, options.init)
    if (options.lora or ("frozen" if options.init else "train")) == "frozen":
        module.model.freeze_vlm()  # LoRA too: its B starts at zero, so frozen the adapter changes nothing
    dataset = EpisodeClipDataset if options.batching == "episode" else EpisodeDataset
    train_ds = dataset(train_eps, data, tokenizer, config, augment=True, seed=options.seed)
    val_ds = dataset(val_eps, data, tokenizer, config, augment=False)
    loader = dict(batch_size=options.batch_size, num_workers=options.workers,
                  collate_fn=collate_episodes if options.batching == "episode" else collate,
                  persistent_workers=options.workers > 0)
    train_dl = torch.utils.data.DataLoader(train_ds, shuffle=True, drop_last=False, **loader)
    val_dl = torch.utils.data.DataLoader(val_ds, shuffle=False, **loader)

    extra = {"training": {"data": str(options.data), "run": str(run_dir), "split": "split.json",
                          "options": asdict(data)},
             "driving": driving.to_dict()}
    ckpt = FolderCheckpoint(tokenizer, extra, dirpath=run_dir / "checkpoints", monitor="val/loss", mode="min",
                            save_top_k=3, save_last=True, auto_insert_metric_name=False,
                            filename="epoch{epoch:03d}-val_loss{val/loss:.4f}")
    callbacks = [ckpt, LearningRateMonitor(logging_interval="step")]
    if options.early_stop:
        callbacks.append(EarlyStopping(monitor="val/loss", mode="min", patience=options.early_stop))
    loggers = [CSVLogger(run_dir, name="csv", version=""), TensorBoardLogger(run_dir, name="tensorboard", version="")]
    devices = int(options.devices) if str(options.devices).isdigit() else options.devices
    trainer = L.Trainer(max_epochs=options.max_epochs, precision=options.precision,
                        accumulate_grad_batches=options.accumulate, gradient_clip_val=options.clip or None,
                        devices=devices, num_nodes=options.num_nodes, accelerator=accelerator,
                        strategy=options.strategy, callbacks=callbacks, logger=loggers,
                        enable_progress_bar=options.progress, log_every_n_steps=1,
                        enable_model_summary=False, deterministic=False, num_sanity_val_steps=0,
                        default_root_dir=run_dir)
    resume = None
    if options.resume:
        resume = run_dir / "checkpoints" / "last" / "trainer.ckpt"
        if not resume.is_file():
            raise FitError(f"--resume: {resume} not found")
    if resume is None:
        if options.init:
            log.info("ACT and head start from %s (its input standardisation kept)", options.init)
        else:
            stats = set_head_standardization(module.model, train_eps, data, tokenizer, config, seed=options.seed)
            log.info("head input standardised from %d training frames (feature offset %.3f, spread %.3f)",
                     stats["frames"], stats["mean_abs"], stats["std"])
        trainer.validate(module, val_dl, verbose=False)  # the epoch-0 reference for "val loss before training"
    first_val = float(trainer.callback_metrics.get("val/loss", float("nan")))
    # Resuming loads plain tensors and dicts only (weights_only=True): nothing in a run folder is unpickled.
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(resume) if resume else None,
                    weights_only=True if resume else None)
    except ResumeMismatch as e:
        raise FitError(f"{resume}: {e}") from e
    backend = getattr(trainer.strategy, "process_group_backend", None)  # DDP's, set up by now: gloo on CPU
    log.info("trained with %s over %d process(es)%s", type(trainer.strategy).__name__, trainer.world_size,
             f", process group {backend}" if backend else "")
    best, curves = None, None
    if trainer.is_global_zero:
        kept = Path(ckpt.best_model_path[: -len(ckpt.FILE_EXTENSION)]) if ckpt.best_model_path else None
        if kept and kept.is_dir():
            best = run_dir / "checkpoints" / "best"
            shutil.rmtree(best, ignore_errors=True)
            shutil.copytree(kept, best, ignore=shutil.ignore_patterns("trainer.ckpt"))
        curves = plot_curves(run_dir / "csv" / "metrics.csv", run_dir / "curves.png")
    result = FitResult(run_dir=run_dir, best=best, first_val_loss=first_val,
                       best_val_loss=float(ckpt.best_model_score or float("nan")), epochs=trainer.current_epoch,
                       accelerator=device, driving=driving, curves=curves, rejected=split["rejected"],
                       reporting=trainer.is_global_zero)
    if trainer.is_global_zero:
        (run_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


def simulated(episode) -> bool:
    """An episode the simulator made: sim.synth's rooms and colour blocks, or sim.record's camera."""
    attrs = episode.attrs
    return (str(attrs.get("obstacle_layout_type", "")).startswith(("sim", "blocks"))
            or str(attrs.get("camera", "")) == "sim")


def build_parser() -> argparse.ArgumentParser:
    d = FitOptions
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder of .h5 episodes")
    ap.add_argument("--preset", choices=PRESETS, default=d.preset,
                    help="tiny: a random Kosmos-2 of ~0.25 M parameters for tests and the simulator (it cannot "
                         "learn a real camera's scenes; warned when given real recordings); kosmos2: the real "
                         "model (docs/training.md)")
    ap.add_argument("--weights", help="kosmos2: hub id or local folder of the pretrained weights")
    ap.add_argument("--random-weights", action="store_true", help="kosmos2 at real size without a download")
    ap.add_argument("--out", type=Path, default=d.out)
    ap.add_argument("--name", default=d.name)
    ap.add_argument("--max-epochs", type=int, default=d.max_epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size,
                    help="episodes per batch (windows with --batching window)")
    ap.add_argument("--batching", choices=("episode", "window"), default=d.batching,
                    help="episode: each frame through the VLM once per epoch and all its windows from that "
                         "(W times less VLM work, same loss); window: one window per sample")
    ap.add_argument("--lr", type=float, default=d.lr, help=f"the head's learning rate (default {d.lr:g})")
    ap.add_argument("--act-lr", type=float, help="learning rate of the ACT token (default: --lr)")
    ap.add_argument("--lora-lr", type=float, default=d.lora_lr,
                    help=f"learning rate of the LoRA weights (default {d.lora_lr:g})")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    ap.add_argument("--window", type=int, help=f"default {MobileVLAConfig.window} (with --init: the checkpoint's)")
    ap.add_argument("--chunk", type=int, help=f"default {MobileVLAConfig.chunk} (with --init: the checkpoint's)")
    ap.add_argument("--action-axes", type=int, choices=(2, 3),
                    help=f"default {MobileVLAConfig.action_axes} (with --init: the checkpoint's)")
    ap.add_argument("--init", type=Path, help="start from a merged checkpoint (e.g. one train.import_robovlms wrote): "
                                              "its Kosmos-2 as the frozen base, its ACT and head as the start, "
                                              "our prompt layout (train/init.py, docs/migrating.md)")
    ap.add_argument("--lora", choices=("train", "frozen"),
                    help="train the LoRA weights (default) or keep them at zero (the default with --init)")
    ap.add_argument("--action-range", type=float, default=d.action_range)
    ap.add_argument("--channel-order", choices=("bgr", "rgb"), default=d.channel_order, help="of the stored images")
    ap.add_argument("--instruction", help="instruction for files without one (default: the model's default)")
    ap.add_argument("--lora-r", type=int, default=d.lora_r)
    ap.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    ap.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    ap.add_argument("--lora-targets", default=",".join(d.lora_targets),
                    help="comma-separated: text (decoder), projection (image-to-text), vision (tower)")
    ap.add_argument("--lora-vision", action="store_true", help="shorthand: add vision to --lora-targets")
    ap.add_argument("--color-jitter", type=float, default=d.color_jitter, help="augmentation strength (0 = off)")
    ap.add_argument("--mirror", action="store_true", help="augmentation: horizontal mirror")
    ap.add_argument("--val-fraction", type=float, default=d.val_fraction)
    ap.add_argument("--split", type=Path, help="a split file from `python -m train.data split` (instead of "
                                               "--val-fraction/--seed drawing one)")
    ap.add_argument("--intervention-weight", type=float, default=d.intervention_weight,
                    help="loss weight of frames a person took over (runtime.drive --teleop --record; "
                         "docs/recording.md)")
    ap.add_argument("--policy-weight", type=float, default=d.policy_weight,
                    help="loss weight of the policy's own frames in recorded runs (0: train on corrections only)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--precision", choices=("32", "16-mixed", "bf16-mixed"), default=d.precision)
    ap.add_argument("--accumulate", type=int, default=d.accumulate, help="gradient accumulation batches")
    ap.add_argument("--clip", type=float, default=d.clip, help="gradient clipping norm (0 = off)")
    ap.add_argument("--early-stop", type=int, default=d.early_stop, help="patience in epochs on val loss (0 = off)")
    ap.add_argument("--devices", default=d.devices)
    ap.add_argument("--num-nodes", type=int, default=d.num_nodes)
    ap.add_argument("--accelerator", default=d.accelerator,
                    help="auto (a GPU when torch can use one, else the CPU, with a warning), cpu, gpu; "
                         "gpu without one exits 1")
    ap.add_argument("--strategy", default=d.strategy, help="e.g. ddp (Lightning's; gloo on CPU, nccl on GPU)")
    ap.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    ap.add_argument("--strict", action="store_true", help="stop at the first bad episode file")
    ap.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoints/last")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--drive-mode", choices=MODES,
                    help="how the policy should drive, recorded for the drive: step (one frame per move, then a "
                         "stop: the collector's) or continuous (default: as the recordings say)")
    ap.add_argument("--frame-spacing", type=float,
                    help="seconds between the recordings' frames (default: as the recordings say; the "
                         "collector's: 0.4 s moves)")
    add_log_level_argument(ap)
    return show_defaults(ap)


def options_from_args(args: argparse.Namespace) -> FitOptions:
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    if args.lora_vision and "vision" not in targets:
        targets += ("vision",)
    return FitOptions(
        data=args.data, preset=args.preset, weights=args.weights, random_weights=args.random_weights, out=args.out,
        name=args.name, max_epochs=args.max_epochs, batch_size=args.batch_size, batching=args.batching, lr=args.lr,
        act_lr=args.act_lr, lora_lr=args.lora_lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        window=args.window, chunk=args.chunk, action_axes=args.action_axes, init=args.init, lora=args.lora,
        action_range=args.action_range, channel_order=args.channel_order, instruction=args.instruction,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, lora_targets=targets,
        color_jitter=args.color_jitter, mirror=args.mirror, val_fraction=args.val_fraction, split=args.split,
        intervention_weight=args.intervention_weight, policy_weight=args.policy_weight, seed=args.seed,
        precision=args.precision, accumulate=args.accumulate, clip=args.clip, early_stop=args.early_stop,
        devices=args.devices, num_nodes=args.num_nodes, accelerator=args.accelerator, strategy=args.strategy,
        workers=args.workers, strict=args.strict, resume=args.resume, progress=not args.no_progress,
        drive_mode=args.drive_mode, frame_spacing=args.frame_spacing)


@exits_on(FileNotFoundError, FitError)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    result = fit(options_from_args(args))
    if not result.reporting:
        return 0
    log.info("val loss %.4f before training -> best %.4f", result.first_val_loss, result.best_val_loss)
    if result.best:
        log.info("best checkpoint: %s  (merge: python -m train.merge %s --out DIR)", result.best, result.best)
    if result.curves:
        log.info("training curves: %s", result.curves)
    if result.rejected:
        log.warning("%d episode file(s) skipped:\n%s", len(result.rejected),
                    "\n".join(f"  {path}: {why}" for path, why in result.rejected.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
