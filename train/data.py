"""The robot's HDF5 episodes as training windows, and a validator for a folder of them.

    python -m train.data episodes/                       # validate every file, print a summary table
    python -m train.data episodes/ --channel-order rgb --action-axes 3
    python -m train.data summary rec/                    # the same, plus modes, frame spacing, intervention share
    python -m train.data split rec/ --out split.json --val-fraction 0.2 --seed 0   # train.fit --split split.json
    python -m train.data merge rec-monday/ rec-tuesday/ --out all/                 # copied, renumbered
    python -m train.data drop rec/ 3 episode_0007        # set aside as NAME.dropped (rename back to undo)
    python -m train.data relabel rec/ 4 5 --instruction "reach the bottle on the right"
    python -m train.data recover rec/ .episode_0007.h5.partial     # keep a crashed episode's frames (checked)
    python -m train.data view rec/episode_0003.h5 [--save out.rrd] [--mp4 out.mp4]   # Rerun (docs/recording.md)
    python -m train.data export-lerobot rec/ --out lerobot-rec/ --repo-id me/room1    # a LeRobot dataset (v3.0)
    python -m train.data import-lerobot lekiwi-data/ --out episodes/ --camera front   # and back

    from train.data import EpisodeDataset, load_episodes
    episodes, rejected = load_episodes(paths, DataOptions(window=8, chunk=10))
    sample = EpisodeDataset(episodes, options)[0]    # pixel_values (W,3,S,S), targets (W,N,A), mask (W,N), prompt

The author's later collector layout (`observations/images` in RGB, float64
actions, attributes scenario/pattern/distance) is read too; its channel order
comes from the layout (runtime.recording.episodes.episode_layout).

Layout (docs/episode-format.md; runtime.recording.episode_writer writes it on the robot and for synthetic data):
`images` uint8 (T, H, W, 3) in the collector's channel order (BGR by
default), `actions` float (T, 3), `action_event_types` strings,
`language_instruction` optional (1,) bytes. A sample is a window of W frames
starting at t; position i's target is the chunk actions[t+i : t+i+N], masked
past the episode's end (a short episode's window is padded with its last frame
and masked too). Actions are clamped to +-action_range and divided by it
(default 1.15 -> [-1, 1]); the range is saved in the checkpoint so the
runtime can undo it. Images go through `runtime.policy.preprocess`, the robot's own
preprocessing; they are resized once at load and kept as uint8.

Recordings of take-overs (`runtime.drive --teleop --record`) carry an
`intervention` tag per frame: `intervention_weight` and `policy_weight`
(train.fit --intervention-weight / --policy-weight) weigh those actions in
the loss (through the mask), 0 leaving a kind out.

A recorder file whose `complete` attribute is False (an episode stopped
before its end, its partial file renamed by hand) is refused unless
`allow_incomplete` (`--allow-incomplete`); `recover` checks such a file and
keeps it under the next free name. Frame spacings agree within
`runtime.policy.driving.SPACING_TOLERANCE` (10 %): training refuses files
that differ by more and names them; `merge` says which files differ and by
how much.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from runtime.atomic import atomic_write_text
from runtime.cli import CommandError, exits_on
from runtime.logs import add_log_level_argument
from runtime.policy.driving import SPACING_TOLERANCE, Driving, same_spacing
from runtime.policy.preprocess import PreprocessConfig, normalize_rgb, resize_rgb
from runtime.recording.episode_writer import DROPPED_SUFFIX, EPISODE_NAME, next_episode_number, partial_path
from runtime.recording.episodes import LATER_COLLECTOR, EpisodeFileError, episode_layout
from runtime.recording.rerun_log import RerunUnavailable
from train.config import MobileVLAConfig
from train.data_view import ViewSpec, view
from train.lerobot_export import VCODECS, ExportSpec, export_lerobot
from train.lerobot_import import ImportSpec, import_lerobot
from train.lerobot_layout import BASE_KEYS, LeRobotFormatError

AXES = ("linear_x", "linear_y", "angular_z")


class EpisodeError(ValueError):
    """One bad episode file: the message names the file and the problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True)
class DataOptions:
    # The model's fields default to the model config's (train.config.MobileVLAConfig, where they are written once).
    window: int = MobileVLAConfig.window  # W frames per sample
    chunk: int = MobileVLAConfig.chunk  # N future actions per window position
    action_axes: int = MobileVLAConfig.action_axes  # 2: (linear_x, linear_y); 3 adds angular_z
    action_range: float = MobileVLAConfig.action_range  # clamp to +-range, divide by range -> [-1, 1]
    channel_order: str = PreprocessConfig.channel_order  # of the stored images (the collector wrote OpenCV BGR)
    # what the model expects (runtime.policy.preprocess; "bgr" for imported checkpoints)
    model_channel_order: str = PreprocessConfig.model_channel_order
    image_size: int = 224
    default_instruction: str = MobileVLAConfig.default_instruction  # for files without language_instruction
    color_jitter: float = 0.0  # max relative brightness/contrast/saturation change; 0 = off
    mirror: bool = False  # random horizontal mirror: negates linear_y, angular_z; swaps left/right
    intervention_weight: float = 1.0  # loss weight of actions a person took over with (`intervention` = 1)
    policy_weight: float = 1.0  # loss weight of the policy's own actions in runs recorded by runtime.drive --record;
    #                             0 trains on the corrections only (HG-DAgger); demonstrations always weigh 1
    allow_incomplete: bool = False  # read recorder files whose `complete` is False (stopped before their end)

    @classmethod
    def for_model(cls, config: MobileVLAConfig, **data) -> DataOptions:
        """The options a model config implies (W, N, axes, range, image size, channel order, instruction),
        plus the data-only ones in `data` (channel_order of the files, color_jitter, mirror)."""
        return cls(window=config.window, chunk=config.chunk, action_axes=config.action_axes,
                   action_range=config.action_range, image_size=config.image_size,
                   model_channel_order=config.preprocess_config().model_channel_order,
                   default_instruction=config.default_instruction, **data)


def recorded_driving(train: list, val: list, options: DataOptions, mode: str | None = None,
                     frame_spacing_s: float | None = None) -> Driving:
    """How a policy trained on these episodes should be driven (runtime.policy.driving): discrete when every
    recorded action of the trained axes is a demonstrated move (-range, 0 or +range), as key presses are;
    mode and frame spacing as the recordings say (driving_from_episodes: the recorder's attributes, else the
    collector's one frame per 0.4 s move), unless `mode` / `frame_spacing_s` are given."""
    episodes = list(train) + list(val)
    recorded = driving_from_episodes(episodes)
    raw = np.concatenate([e.raw_actions[:, : options.action_axes] for e in episodes]) if episodes else np.zeros((0, 2))
    r = options.action_range
    on_moves = np.isclose(np.abs(raw), r, atol=1e-3) | np.isclose(raw, 0.0, atol=1e-3)
    discrete = bool(len(raw)) and bool(on_moves.all())
    mode = mode or recorded["mode"]
    spacing = frame_spacing_s if frame_spacing_s is not None else float(recorded["frame_spacing_s"])
    moves = (f"all {raw.size} recorded action values are moves (-{r:g}, 0, +{r:g})" if discrete else
             f"{int((~on_moves).sum())} of {raw.size} recorded action values are not moves (-{r:g}, 0, +{r:g})")
    spacing_from = "as given" if frame_spacing_s is not None else "as recorded"
    source = (f"train.fit on {len(episodes)} episodes: {'discrete' if discrete else 'raw actions'} "
              f"({moves}); mode {mode}, frames {spacing:g} s apart ({spacing_from})")
    return Driving(mode=mode, discrete=discrete, frame_spacing_s=spacing, source=source)


@dataclass
class Episode:
    path: Path
    images: np.ndarray  # (T, S, S, 3) uint8 in the model's channel order (RGB unless an imported model), resized once
    actions: np.ndarray  # (T, A) float32 in [-1, 1]
    raw_actions: np.ndarray  # (T, 3) as stored
    instruction: str
    had_instruction: bool
    attrs: dict = field(default_factory=dict)
    weights: np.ndarray | None = None  # (T,) loss weight of each frame's action (intervention weighting); None = 1
    intervention: np.ndarray | None = None  # (T,) bool: a person's command replaced the policy's (extra dataset)

    @property
    def frames(self) -> int:
        return len(self.images)


def read_intervention(f, path: Path, frames: int) -> np.ndarray | None:
    """The recorder's `intervention` dataset (T,) as bool, or None for files without it."""
    if "intervention" not in f:
        return None
    flags = f["intervention"][()]
    if flags.shape != (frames,):
        raise EpisodeError(path, f"'intervention' must have shape ({frames},), found {flags.shape}")
    return flags.astype(bool)


def frame_weights(intervention: np.ndarray | None, attrs: dict, options: DataOptions) -> np.ndarray | None:
    """Loss weight per frame: a person's take-over `intervention_weight`, the policy's own frames of a recorded
    run (`policy_driven` attribute) `policy_weight`, demonstrations 1. None when every weight is 1."""
    if intervention is None:
        return None
    base = options.policy_weight if attrs.get("policy_driven") else 1.0
    weights = np.where(intervention, options.intervention_weight, base).astype(np.float32)
    return None if np.all(weights == 1.0) else weights


def read_episode(path: Path, options: DataOptions = DataOptions()) -> Episode:
    """Read and validate one file; raise EpisodeError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(path, "file not found")
    try:
        if not h5py.is_hdf5(path):
            raise EpisodeError(path, "not an HDF5 file")
        with h5py.File(path, "r") as f:
            try:
                layout = episode_layout(f, path)
            except EpisodeFileError as e:
                raise EpisodeError(path, str(e).split(": ", 1)[-1]) from None
            required = [layout.images_key, "actions"] + (["action_event_types"] if layout.needs_event_types else [])
            missing = [k for k in required if k not in f]
            if missing:
                raise EpisodeError(path, f"missing key(s) {', '.join(missing)} (has: {', '.join(sorted(f.keys()))})")
            images_ds, actions_ds = f[layout.images_key], f["actions"]
            if images_ds.dtype != np.uint8:
                raise EpisodeError(path, f"'{layout.images_key}' must be uint8, found {images_ds.dtype}")
            if images_ds.ndim != 4 or images_ds.shape[-1] != 3:
                raise EpisodeError(path, f"'{layout.images_key}' must have shape (T, H, W, 3), found {images_ds.shape}")
            if not np.issubdtype(actions_ds.dtype, np.floating):
                raise EpisodeError(path, f"'actions' must be float32, found {actions_ds.dtype}")
            if actions_ds.ndim != 2 or actions_ds.shape[1] != 3:
                raise EpisodeError(path, f"'actions' must have shape (T, 3), found {actions_ds.shape}")
            t = images_ds.shape[0]
            if t == 0:
                raise EpisodeError(path, "zero-length episode (no frames)")
            if actions_ds.shape[0] != t:
                raise EpisodeError(path, f"'images' has {t} frames but 'actions' has {actions_ds.shape[0]} rows")
            raw = actions_ds[()].astype(np.float32)
            if not np.isfinite(raw).all():
                bad = np.argwhere(~np.isfinite(raw))[0]
                raise EpisodeError(path, f"'actions' has NaN/inf (first at frame {bad[0]}, axis {AXES[bad[1]]})")
            if "action_event_types" in f and f["action_event_types"].shape[0] != t:
                raise EpisodeError(path, f"'action_event_types' has {f['action_event_types'].shape[0]} entries "
                                         f"for {t} frames")
            instruction, had = options.default_instruction, False
            if "language_instruction" in f:
                value = f["language_instruction"][()]
                value = value[0] if getattr(value, "shape", ()) else value
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                instruction = text.strip("\0 ")
                had = bool(instruction)
                instruction = instruction or options.default_instruction
            if "complete" in f.attrs and not bool(f.attrs["complete"]) and not options.allow_incomplete:
                raise EpisodeError(path, "recorded but never finished (attribute complete=False: the recording "
                                         "stopped before the episode's end); check it and keep it with `python -m "
                                         "train.data recover`, or read it anyway with --allow-incomplete")
            intervention = read_intervention(f, path, t)
            images = images_ds[()]
            attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.attrs.items()}  # arrays too
            attrs["layout"] = layout.name
    except EpisodeError:
        raise
    except (OSError, KeyError, ValueError) as e:  # truncated files surface here
        raise EpisodeError(path, f"unreadable (truncated or corrupt HDF5): {e}") from e
    # The later collector's layout says its frames are RGB; the collector's are in options.channel_order.
    stored_order = layout.channel_order if layout is LATER_COLLECTOR else options.channel_order
    resized = np.stack([resize_rgb(im, stored_order, options.image_size, options.model_channel_order)
                        for im in images])
    clamped = np.clip(raw[:, : options.action_axes], -options.action_range, options.action_range)
    return Episode(path, resized, (clamped / options.action_range).astype(np.float32), raw, instruction, had, attrs,
                   frame_weights(intervention, attrs, options), intervention)


def load_episodes(paths, options: DataOptions, strict: bool = False, warn=None):
    """-> (episodes, rejected [(path, problem)]). `strict` raises on the first bad file."""
    episodes, rejected = [], []
    for p in paths:
        try:
            episodes.append(read_episode(p, options))
        except EpisodeError as e:
            if strict:
                raise
            rejected.append((e.path, e.problem))
            if warn:
                warn(f"skipping {e}")
    return episodes, rejected


def find_episodes(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: episode folder not found")
    return sorted(p for p in folder.rglob("*") if p.suffix in (".h5", ".hdf5"))


def mirror_instruction(text: str) -> str:
    """Swap left and right (whole words, keeping case)."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}
    return re.sub(r"\b(left|right|Left|Right|LEFT|RIGHT)\b", lambda m: swap[m.group(0)], text)


def mirror_actions(actions: np.ndarray) -> np.ndarray:
    """Horizontal mirror of a body motion: linear_y and angular_z change sign."""
    out = actions.copy()
    out[..., 1:] *= -1
    return out


def color_jitter(images: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Same random brightness, contrast and saturation change for the whole window (uint8 RGB)."""
    x = images.astype(np.float32)
    brightness = 1 + rng.uniform(-strength, strength)
    contrast = 1 + rng.uniform(-strength, strength)
    saturation = 1 + rng.uniform(-strength, strength)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * contrast + mean
    gray = x.mean(axis=-1, keepdims=True)
    x = (x - gray) * saturation + gray
    return np.clip(x * brightness, 0, 255).astype(np.uint8)


def window_starts(episode: Episode, window: int) -> list[int]:
    return list(range(max(episode.frames - window, 0) + 1))


class EpisodeDataset:
    """Windows over episodes; a torch-compatible map-style dataset returning numpy arrays."""

    def __init__(self, episodes: list[Episode], options: DataOptions, tokenizer=None, config=None,
                 augment: bool = False, seed: int = 0):
        self.episodes, self.options, self.augment = episodes, options, augment
        self.tokenizer, self.config = tokenizer, config
        self.index = [(e, t) for e, ep in enumerate(episodes) for t in window_starts(ep, options.window)]
        self.rng = np.random.default_rng(seed)
        self._prompts: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self.index)

    def prompt(self, instruction: str) -> dict:
        if instruction not in self._prompts:
            from train.model import make_prompt  # noqa: PLC0415  torch: train.data checks recordings without it

            p = make_prompt(self.config, self.tokenizer, instruction)
            self._prompts[instruction] = {"input_ids": p.input_ids[0], "attention_mask": p.attention_mask[0],
                                          "image_slot_mask": p.image_slot_mask[0], "position_ids": p.position_ids[0]}
        return self._prompts[instruction]

    def window_targets(self, ep: Episode, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Targets (W, N, A) and mask (W, N) of the window starting at frame t; masked past the episode end."""
        w, n = self.options.window, self.options.chunk
        a = ep.actions.shape[1]
        targets = np.zeros((w, n, a), np.float32)
        mask = np.zeros((w, n), np.float32)
        for pos in range(w):
            start = t + pos
            if start >= ep.frames:
                continue  # padding position: fully masked
            chunk = ep.actions[start: start + n]
            targets[pos, : len(chunk)] = chunk
            mask[pos, : len(chunk)] = 1.0 if ep.weights is None else ep.weights[start: start + n]
        return targets, mask

    def finish(self, images: np.ndarray, targets: np.ndarray, instruction: str) -> dict:
        """Augment (the same draw for every frame given), preprocess, attach the prompt."""
        if self.augment and self.options.mirror and self.rng.random() < 0.5:
            images = images[:, :, ::-1]
            targets = mirror_actions(targets)
            instruction = mirror_instruction(instruction)
        if self.augment and self.options.color_jitter > 0:
            images = color_jitter(images, self.options.color_jitter, self.rng)
        pixels = np.stack([normalize_rgb(np.ascontiguousarray(im)) for im in images])
        sample = {"pixel_values": pixels, "targets": targets, "instruction": instruction}
        if self.tokenizer is not None:
            sample.update(self.prompt(instruction))
        return sample

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        ep, w = self.episodes[e], self.options.window
        frame_idx = np.minimum(np.arange(t, t + w), ep.frames - 1)
        targets, mask = self.window_targets(ep, t)
        return dict(self.finish(ep.images[frame_idx], targets, ep.instruction), mask=mask)


class EpisodeClipDataset(EpisodeDataset):
    """One item per episode: every frame once, and every window of it as indices into those frames.

    The same windows, targets and masks as EpisodeDataset, but each frame goes through the VLM once
    per epoch instead of once per window that holds it (W times fewer VLM passes; the VLM has no
    cross-frame terms, so the loss is the same). `window_index` (windows, W) indexes `pixel_values`.
    """

    def __init__(self, episodes: list[Episode], options: DataOptions, tokenizer=None, config=None,
                 augment: bool = False, seed: int = 0):
        super().__init__(episodes, options, tokenizer, config, augment, seed)
        self.index = [(e, 0) for e in range(len(episodes))]

    def __getitem__(self, i: int) -> dict:
        ep, w = self.episodes[i], self.options.window
        starts = window_starts(ep, w)
        window_index = np.minimum(np.asarray(starts)[:, None] + np.arange(w)[None, :], ep.frames - 1)
        pairs = [self.window_targets(ep, t) for t in starts]
        targets = np.stack([p[0] for p in pairs])
        sample = self.finish(ep.images, targets, ep.instruction)
        sample.update(mask=np.stack([p[1] for p in pairs]), window_index=window_index.astype(np.int64))
        return sample


def split_episodes(paths: list[Path], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Train/val split by episode (never by window: neighbouring windows share frames)."""
    paths = sorted(Path(p) for p in paths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    n_val = max(1, round(len(paths) * val_fraction)) if len(paths) > 1 else 0
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val


HISTOGRAM = ("< -0.5", "-0.5..0", "~0", "0..0.5", "> 0.5")  # the columns of `summary`'s action histogram


def histogram(values: np.ndarray) -> list[int]:
    """Counts per HISTOGRAM column. -0.5 and +0.5 (the default top speed, a full key press) count in the columns
    that name them (-0.5..0, 0..0.5), |v| <= 0.05 is ~0; only faster than 0.5 counts as > 0.5."""
    v = np.asarray(values)
    masks = (v < -0.5, (v >= -0.5) & (v < -0.05), np.abs(v) <= 0.05, (v > 0.05) & (v <= 0.5), v > 0.5)
    return [int(np.count_nonzero(m)) for m in masks]


def summary(episodes: list[Episode], rejected: list, options: DataOptions) -> str:
    lines = []
    frames = sum(e.frames for e in episodes)
    with_instr = sum(e.had_instruction for e in episodes)
    lines.append(f"episodes     {len(episodes)} valid, {len(rejected)} rejected")
    lines.append(f"frames       {frames} (per episode: min {min((e.frames for e in episodes), default=0)}, "
                 f"max {max((e.frames for e in episodes), default=0)})")
    lines.append(f"instructions {with_instr} in the files, {len(episodes) - with_instr} use the default")
    for text in sorted({e.instruction for e in episodes})[:8]:
        lines.append(f"             {sum(e.instruction == text for e in episodes):>4} x {text!r}")
    if episodes:
        raw = np.concatenate([e.raw_actions for e in episodes])
        lines.append(f"actions      {'axis':<10}" + "".join(f"{label:>8}" for label in HISTOGRAM) + "   range")
        for axis in range(3):
            used = " (trained)" if axis < options.action_axes else " (ignored)"
            lines.append(f"             {AXES[axis]:<10}" + "".join(f"{c:>8}" for c in histogram(raw[:, axis]))
                         + f"   [{raw[:, axis].min():+.2f}, {raw[:, axis].max():+.2f}]{used}")
    if rejected:
        lines.append("rejected")
        for path, problem in rejected:
            lines.append(f"             {path}: {problem}")
    return "\n".join(lines)


def recording_summary(episodes: list[Episode]) -> str:
    """What the recorder adds: modes, frame spacing, duration, dropped frames, intervention share (empty for
    collector files)."""
    recorded = [e for e in episodes if "recording_mode" in e.attrs]
    lines = []
    if recorded:
        groups = spacing_groups([(e.path, float(e.attrs.get("frame_spacing_s", 0.4))) for e in recorded])
        modes = {}
        for spacing, members in groups:
            for path in members:
                mode = next(e.attrs["recording_mode"] for e in recorded if e.path == path)
                modes[(mode, spacing)] = modes.get((mode, spacing), 0) + 1
        lines.append("recorded     " + ", ".join(f"{n} {mode} (one frame per {spacing:.3g} s)"
                                                for (mode, spacing), n in sorted(modes.items())))
        seconds = sum(float(e.attrs.get("total_duration", 0)) for e in recorded)
        dropped = sum(int(e.attrs.get("dropped_frames", 0)) for e in recorded)
        lines.append(f"duration     {seconds:.0f} s recorded" + (f"; {dropped} frame(s) dropped while recording (the "
                                                                 f"disk was too slow)" if dropped else ""))
    tagged = [e for e in episodes if e.intervention is not None]
    if tagged:
        frames = sum(len(e.intervention) for e in tagged)
        taken = sum(int(e.intervention.sum()) for e in tagged)
        runs = sum(bool(e.attrs.get("policy_driven")) for e in tagged)
        lines.append(f"intervention {taken} of {frames} frames ({100 * taken / max(frames, 1):.1f}%) taken over by "
                     f"a person, in {runs} policy run(s)")
    return "\n".join(lines)


def spacing_groups(spacings: list[tuple[Path, float]]) -> list[tuple[float, list[Path]]]:
    """Files grouped by frame spacing: spacings within SPACING_TOLERANCE of a group's (its most common file's)
    join it. Largest group first; each group's spacing is the median of its files'."""
    groups: list[list[tuple[Path, float]]] = []
    for path, spacing in sorted(spacings, key=lambda ps: ps[1]):
        if groups and same_spacing(float(np.median([v for _, v in groups[-1]])), spacing):
            groups[-1].append((path, spacing))
        else:
            groups.append([(path, spacing)])
    groups.sort(key=len, reverse=True)
    return [(float(np.median([v for _, v in g])), [p for p, _ in g]) for g in groups]


def spacing_report(groups: list[tuple[float, list[Path]]], limit: int = 3) -> str:
    """Which files differ from the largest group's spacing, and by how much."""
    main, _ = groups[0]
    lines = []
    for spacing, paths in groups:
        names = ", ".join(str(p) for p in paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit
                                                            else "")
        ratio = "" if spacing == main else f" ({spacing / main:.2g}x the {main:.3g} s of the most files)"
        lines.append(f"  {len(paths)} file(s) one frame per {spacing:.3g} s{ratio}: {names}")
    return "\n".join(lines)


def driving_from_episodes(episodes: list[Episode]) -> dict:
    """The frame spacing the model learns from, for the checkpoint's top-level "driving" key (the bundle carries
    it to runtime.drive). Recorder files say it (`frame_spacing_s`, `recording_mode`); the collector's files are
    one frame per 0.4 s move. Spacings that differ by more than SPACING_TOLERANCE are refused, naming the files:
    the window would mean different times."""
    spacings = [(e.path, float(e.attrs.get("frame_spacing_s", 0.4))) for e in episodes]
    modes = {str(e.attrs.get("recording_mode", "step")) for e in episodes}
    groups = spacing_groups(spacings) if spacings else [(0.4, [])]
    if len(groups) > 1:
        raise EpisodeError(Path(episodes[0].path).parent,
                           f"episodes recorded at different frame spacings (more than {SPACING_TOLERANCE:.0%} "
                           f"apart): the head's window would span different times; train on one spacing "
                           f"(python -m train.data summary shows which files have which):\n"
                           + spacing_report(groups))
    spacing = round(groups[0][0], 4)
    return {"mode": modes.pop() if len(modes) == 1 else "step", "frame_spacing_s": spacing, "source": "recordings"}


# -- managing recordings: split, merge, drop, relabel ---------------------------------------------------
@dataclass(frozen=True)
class SplitOptions:
    val_fraction: float = 0.2  # share of the episodes held out for validation (the original report's 200/50)
    seed: int = 0  # which episodes: the same seed gives the same split


def write_split(folder: Path, out: Path, val_fraction: float = SplitOptions.val_fraction,
                seed: int = SplitOptions.seed) -> dict:
    """A deterministic train/val split by episode, written (atomically) as JSON with names relative to `folder`."""
    folder = Path(folder)
    train, val = split_episodes(find_episodes(folder), val_fraction, seed)
    split = {"folder": str(folder), "seed": seed, "val_fraction": val_fraction,
             "train": [str(p.relative_to(folder)) for p in train], "val": [str(p.relative_to(folder)) for p in val]}
    atomic_write_text(Path(out), json.dumps(split, indent=2) + "\n")
    return split


def read_split(path: Path, folder: Path) -> tuple[list[Path], list[Path]]:
    """(train, val) paths of a split file written by `write_split`, checked against `folder`."""
    try:
        split = json.loads(Path(path).read_text())
        train, val = split["train"], split["val"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CommandError(f"--split {path}: not a split file from `python -m train.data split` ({e})") from e
    paths = [[Path(folder) / name for name in names] for names in (train, val)]
    missing = [p for p in paths[0] + paths[1] if not p.is_file()]
    if missing:
        raise CommandError(f"--split {path}: {len(missing)} episode(s) it names are not in {folder} (first: "
                           f"{missing[0].name}); write a new split after dropping or merging")
    return paths[0], paths[1]


def merge_folders(sources: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """Copy the episodes of several folders into `out`, numbered on after everything `out` holds (finished,
    partial and set-aside episodes); never overwrites. Each copy is written under a hidden name and renamed when
    complete. Returns [(source, copy)]."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k = next_episode_number(out)
    copies = []
    for folder in sources:
        if Path(folder).resolve() == out.resolve():
            raise CommandError(f"merge: {folder} is the output folder itself")
        for path in find_episodes(folder):
            target = out / EPISODE_NAME.format(k)
            tmp = out / f".{target.name}.merging"
            shutil.copy2(path, tmp)
            os.replace(tmp, target)
            copies.append((path, target))
            k += 1
    return copies


def file_spacing(path: Path) -> float:
    """An episode file's frame spacing from its attributes alone (the collector's files: 0.4 s)."""
    with h5py.File(path, "r") as f:
        return float(f.attrs.get("frame_spacing_s", 0.4))


def episode_paths(folder: Path, names: list[str]) -> list[Path]:
    """Episodes named by file name, stem or number (3 = episode_0003.h5) in `folder`; every one must exist."""
    folder = Path(folder)
    paths = []
    for name in names:
        candidates = [folder / name, folder / f"{name}.h5"]
        if name.isdigit():
            candidates.append(folder / f"episode_{int(name):04d}.h5")
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise CommandError(f"{folder}: no episode {name!r} (tried {', '.join(p.name for p in candidates)})")
        paths.append(found)
    return paths


def drop_episodes(paths: list[Path]) -> list[Path]:
    """Set episodes aside (renamed NAME.dropped: no reader takes them; rename back to undo). Returns the new names."""
    out = []
    for path in paths:
        target = path.with_name(path.name + DROPPED_SUFFIX)
        path.rename(target)
        out.append(target)
    return out


def relabel_episodes(paths: list[Path], instruction: str) -> None:
    """Replace each episode's instruction; the frames are not touched. Each file is edited as a copy that
    replaces it when complete, so an interrupted relabel leaves the old file as it was."""
    encoded = instruction.encode()
    if len(encoded) > 256:
        raise CommandError(f"--instruction: {len(encoded)} bytes; the episode format stores at most 256 (S256)")
    for path in paths:
        tmp = path.with_name(f".{path.name}.relabel")
        shutil.copy2(path, tmp)
        try:
            with h5py.File(tmp, "r+") as f:
                if "language_instruction" in f:
                    del f["language_instruction"]
                f.create_dataset("language_instruction", data=np.array([encoded], dtype="S256"))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def recover_partial(folder: Path, name: str) -> Path:
    """Keep the frames of an episode stopped before its end: its partial file (`.episode_0007.h5.partial`, or
    its number) is checked readable, marked complete with `recovered` True, and renamed to the next free name."""
    folder = Path(folder)
    candidates = [folder / name]
    if name.isdigit():
        candidates.append(partial_path(folder / EPISODE_NAME.format(int(name))))
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CommandError(f"{folder}: no partial episode {name!r} (tried {', '.join(p.name for p in candidates)})")
    try:
        episode = read_episode(path, DataOptions(image_size=32, allow_incomplete=True))
    except EpisodeError as e:
        raise CommandError(f"recover: {e}; the file is left as it is") from e
    target = folder / EPISODE_NAME.format(next_episode_number(folder))
    tmp = folder / f".{target.name}.recovering"
    shutil.copy2(path, tmp)
    try:
        with h5py.File(tmp, "r+") as f:
            f.attrs.update(complete=True, recovered=True, num_frames=episode.frames)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    path.unlink()
    return target


def _add_read_options(ap) -> None:
    ap.add_argument("--channel-order", choices=("bgr", "rgb"), default=DataOptions.channel_order)
    ap.add_argument("--action-axes", type=int, choices=(2, 3), default=DataOptions.action_axes)
    ap.add_argument("--action-range", type=float, default=DataOptions.action_range)


SUBCOMMANDS = ("summary", "split", "merge", "drop", "relabel", "recover", "view", "export-lerobot",
               "import-lerobot")


def tools_main(argv: list[str]) -> int:
    """python -m train.data summary|split|merge|drop|relabel ..."""
    ap = argparse.ArgumentParser(prog="python -m train.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="episodes, frames, instructions, action histogram, intervention share")
    p.add_argument("folder", type=Path)
    p.add_argument("--strict", action="store_true", help="exit 1 when any file is bad")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="read files whose recording stopped before its end (complete=False) too")
    _add_read_options(p)
    p = sub.add_parser("split", help="a deterministic train/val split by episode, written to a JSON file")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the split file (JSON)")
    p.add_argument("--val-fraction", type=float, default=SplitOptions.val_fraction)
    p.add_argument("--seed", type=int, default=SplitOptions.seed)
    p = sub.add_parser("merge", help="copy several folders' episodes into one, renumbered")
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("drop", help="set episodes aside (renamed NAME.dropped)")
    p.add_argument("folder", type=Path)
    p.add_argument("episodes", nargs="+", help="file names, stems or numbers (3 = episode_0003.h5)")
    p = sub.add_parser("relabel", help="replace the instruction of episodes (all, without names)")
    p.add_argument("folder", type=Path)
    p.add_argument("episodes", nargs="*", help="file names, stems or numbers; none: every episode of the folder")
    p.add_argument("--instruction", required=True)
    p = sub.add_parser("recover", help="keep a partial episode (checked, marked complete, renamed)")
    p.add_argument("folder", type=Path)
    p.add_argument("episode", help="the partial file's name (.episode_0007.h5.partial) or its number (7)")
    p = sub.add_parser("view", help="episodes in Rerun's viewer (or an .rrd file without a display), or an MP4")
    p.add_argument("source", type=Path, help="an .h5 episode or a folder of them")
    p.add_argument("--save", type=Path, help="write this .rrd instead of opening the viewer")
    p.add_argument("--mp4", type=Path, help="an MP4 of the frames with the actions drawn on them (alone: no Rerun)")
    p.add_argument("--jpeg-quality", type=int, default=ViewSpec.jpeg_quality, help="of the frames in the .rrd")
    d = ExportSpec
    p = sub.add_parser("export-lerobot", help="a LeRobot dataset (format v3.0: parquet, MP4, meta/) of the episodes")
    p.add_argument("folder", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the dataset folder (LeRobotDataset(repo_id, root=OUT))")
    p.add_argument("--repo-id", default=d.repo_id, help="the hub name it is meant for (push: docs/recording.md)")
    p.add_argument("--vcodec", choices=VCODECS, default=d.vcodec, help="libsvtav1: LeRobot's default (AV1)")
    p.add_argument("--crf", type=int, default=d.crf, help="video quality: lower is closer to the frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p = sub.add_parser("import-lerobot", help="episodes in our layout from a local LeRobot dataset (LeKiwi's base)")
    p.add_argument("root", type=Path, help="the LeRobot dataset folder (meta/info.json, data/, videos/)")
    p.add_argument("--out", type=Path, required=True, help="our episode folder (numbered on after what it holds)")
    p.add_argument("--camera", help="camera key or its last part (front); default: front, else the only camera")
    p.add_argument("--action-keys", default=",".join(BASE_KEYS),
                   help="the base velocities in 'action': x.vel,y.vel[,theta.vel] (m/s, m/s, deg/s)")
    args = ap.parse_args(argv)
    if args.command == "view":
        result = view(ViewSpec(args.source, args.save, args.mp4, args.jpeg_quality))
        for kind in ("rrd", "mp4"):
            if result[kind]:
                print(f"{result[kind]}: {result['episodes']} episode(s)" + (f" (open it: rerun {result[kind]})"
                                                                             if kind == "rrd" else ""))
        return 0
    if args.command == "export-lerobot":
        result = export_lerobot(ExportSpec(args.folder, args.out, args.repo_id, args.vcodec, args.crf,
                                           overwrite=args.overwrite))
        print(f"{args.out}: LeRobot dataset of {result['episodes']} episodes, {result['frames']} frames at "
              f"{result['fps']} fps, {len(result['tasks'])} task(s)")
        print(f"push it: python -c \"from lerobot.datasets.lerobot_dataset import LeRobotDataset; "
              f"LeRobotDataset('{args.repo_id}', root='{args.out}').push_to_hub()\"")
        return 0
    if args.command == "import-lerobot":
        keys = tuple(k.strip() for k in args.action_keys.split(",") if k.strip())
        written = import_lerobot(ImportSpec(args.root, args.out, args.camera, keys))
        print(f"{args.out}: {len(written)} episode(s) imported from {args.root}")
        return 0
    if args.command == "summary":
        return validate(args.folder, args.channel_order, args.action_axes, args.action_range, args.strict,
                        args.allow_incomplete)
    if args.command == "recover":
        target = recover_partial(args.folder, args.episode)
        print(f"recovered {args.episode} as {target.name} (marked complete, recovered=True)")
        return 0
    if args.command == "split":
        if not 0 < args.val_fraction < 1:
            raise CommandError(f"--val-fraction: expected between 0 and 1, got {args.val_fraction}")
        split = write_split(args.folder, args.out, args.val_fraction, args.seed)
        print(f"{args.out}: {len(split['train'])} train, {len(split['val'])} val episodes (seed {args.seed})")
        return 0
    if args.command == "merge":
        copies = merge_folders(args.folders, args.out)
        print(f"{args.out}: {len(copies)} episode(s) copied from {len(args.folders)} folder(s)")
        groups = spacing_groups([(path, file_spacing(path)) for path in find_episodes(args.out)])
        if len(groups) > 1:
            print(f"warning: {args.out} now holds episodes at different frame spacings (more than "
                  f"{SPACING_TOLERANCE:.0%} apart); train.fit refuses them together:\n" + spacing_report(groups),
                  file=sys.stderr)
        return 0
    if args.command == "drop":
        for path in drop_episodes(episode_paths(args.folder, args.episodes)):
            print(f"set aside: {path.name}")
        return 0
    paths = episode_paths(args.folder, args.episodes) if args.episodes else find_episodes(args.folder)
    relabel_episodes(paths, args.instruction)
    print(f"{len(paths)} episode(s) now say {args.instruction!r}")
    return 0


def validate(folder: Path, channel_order: str = "bgr", action_axes: int = 2, action_range: float = 1.15,
             strict: bool = False, allow_incomplete: bool = False) -> int:
    options = DataOptions(action_axes=action_axes, action_range=action_range, channel_order=channel_order,
                          image_size=64, allow_incomplete=allow_incomplete)  # small: validation only
    paths = find_episodes(folder)
    episodes, rejected = load_episodes(paths, options, strict=strict)
    if not paths:
        raise CommandError(f"{folder}: no .h5 episodes found")
    print(summary(episodes, rejected, options))
    extra = recording_summary(episodes)
    if extra:
        print(extra)
    return 1 if rejected and strict else 0


@exits_on(FileNotFoundError, EpisodeError, EpisodeFileError, OSError, LeRobotFormatError, RerunUnavailable)
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return tools_main(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    _add_read_options(ap)
    ap.add_argument("--strict", action="store_true", help="exit 1 at the first bad file")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    return validate(args.folder, args.channel_order, args.action_axes, args.action_range, args.strict)


if __name__ == "__main__":
    sys.exit(main())
