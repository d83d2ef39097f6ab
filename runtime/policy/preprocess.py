"""One image preprocessing for training and serving (numpy + OpenCV only).

    from runtime.policy.preprocess import preprocess_frame
    chw = preprocess_frame(frame_bgr, channel_order="bgr")   # (3, 224, 224) float32

Training (`train.data`) and the robot (`runtime.policy`) both call
`preprocess_frame`, so the two can never drift apart (docs/original-stack.md
lists what drifting cost the original stack).

Why `cv2.INTER_AREA`: the Hugging Face Kosmos-2 processor resizes with PIL
bicubic, which antialiases when it shrinks (its kernel widens with the scale).
OpenCV's `INTER_CUBIC` does not widen its kernel and aliases badly on a
1280x720 -> 224 downscale (mean 7/255, max 77/255 from PIL); `INTER_AREA`
averages the covered source pixels, lands within ~1/255 of PIL on average
and costs ~2 ms on a 1280x720 frame. For upscaling (a frame smaller than the
model size) `INTER_CUBIC` is the faithful match and is used instead.

Channel orders: `channel_order` is the order of the incoming frame (OpenCV
cameras and the collector's files: BGR); `model_channel_order` is the order
the model was trained to find in its R, G, B input slots. Ours is true RGB.
Checkpoints imported from the original stack record "bgr": it fed the stored
BGR bytes into the model unconverted (docs/original-stack.md), so its weights
expect BGR there and the robot's BGR frames go in unconverted too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHANNEL_ORDERS = ("bgr", "rgb")
# Pixel normalisations by name -> (mean, std) on [0, 1] values. "unit": pixels / 255 and nothing else, what the
# Mobile-VLA fork's dataset fed before its commit of 2026-02-03 (docs/migrating.md); "clip": Kosmos-2's own.
PIXEL_NORMS = {"clip": (CLIP_MEAN, CLIP_STD), "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}


@dataclass(frozen=True)
class PreprocessConfig:
    """How a camera frame becomes model pixels; stored in checkpoints and bundles."""

    size: int = 224  # square side the vision tower expects (pixels)
    mean: tuple[float, float, float] = CLIP_MEAN  # per RGB channel, on [0, 1] values
    std: tuple[float, float, float] = CLIP_STD  # per RGB channel, on [0, 1] values
    channel_order: str = "bgr"  # order of the incoming frame
    resize: str = "area"  # OpenCV interpolation for downscaling (see module docstring)
    model_channel_order: str = "rgb"  # order the model expects in its R, G, B slots ("bgr": the original's quirk)
    pixel_norm: str = "clip"  # the name of mean/std (PIXEL_NORMS): recorded so a bundle says which one it uses

    def __post_init__(self):
        want = PIXEL_NORMS.get(self.pixel_norm)
        if want is None:
            raise ValueError(f"preprocess pixel_norm must be one of {', '.join(PIXEL_NORMS)}, got {self.pixel_norm!r}")
        if not np.allclose([self.mean, self.std], want):
            raise ValueError(f"preprocess pixel_norm {self.pixel_norm!r} means mean {want[0]} and std {want[1]}, "
                             f"found mean {self.mean} and std {self.std}")

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": self.channel_order,
            "resize": self.resize,
            "model_channel_order": self.model_channel_order,
            "pixel_norm": self.pixel_norm,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        mean, std = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
        # older files name no pixel_norm: the one their mean/std are (a mismatch is refused in __post_init__)
        named = next((n for n, (m, s) in PIXEL_NORMS.items() if np.allclose([mean, std], [m, s])), "clip")
        return cls(
            size=int(d["size"]),
            mean=mean,
            std=std,
            channel_order=str(d["channel_order"]),
            resize=str(d.get("resize", "area")),
            model_channel_order=str(d.get("model_channel_order", "rgb")),  # older files: always RGB
            pixel_norm=str(d.get("pixel_norm", named)),
        )


def resize_rgb(frame: np.ndarray, channel_order: str, size: int, model_channel_order: str = "rgb") -> np.ndarray:
    """Frame (H, W, 3) uint8 in `channel_order` -> (size, size, 3) uint8 in `model_channel_order` (RGB for ours)."""
    for name, value in (("channel_order", channel_order), ("model_channel_order", model_channel_order)):
        if value not in CHANNEL_ORDERS:
            raise ValueError(f"{name} must be one of {CHANNEL_ORDERS}, got {value!r}")
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"frame must be an (H, W, 3) array, got shape {shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame.dtype}")
    h, w = frame.shape[:2]
    shrinking = h >= size and w >= size
    # Exact 2x box averages first (OpenCV's fast integer path; the same as area averaging):
    # 1280x720 -> 640x360 -> 224 costs ~2 ms instead of ~5 ms, within 0.02/255 of one-step INTER_AREA.
    while shrinking and h // 2 >= size and w // 2 >= size:
        h, w = h // 2, w // 2
        frame = cv2.resize(frame[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (size, size), interpolation=interp)
    if channel_order != model_channel_order:
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)  # the same swap both ways
    return resized


@functools.lru_cache(maxsize=8)
def _normalize_table(mean: tuple, std: tuple) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level per channel."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return np.stack([(levels - m) / s for m, s in zip(mean, std)]).astype(np.float32)


def normalize_rgb(rgb: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32, CLIP-normalised (a lookup per channel: ~2x faster than math)."""
    table = _normalize_table(tuple(float(m) for m in mean), tuple(float(s) for s in std))
    return np.stack([table[c][rgb[..., c]] for c in range(3)])


def preprocess_frame(
    frame: np.ndarray,
    channel_order: str = "bgr",
    size: int = 224,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    model_channel_order: str = "rgb",
) -> np.ndarray:
    """Camera frame (H, W, 3) uint8 -> model pixels (3, size, size) float32."""
    return normalize_rgb(resize_rgb(frame, channel_order, size, model_channel_order), mean, std)


def preprocess_with(config: PreprocessConfig, frame: np.ndarray) -> np.ndarray:
    return preprocess_frame(frame, config.channel_order, config.size, config.mean, config.std,
                            config.model_channel_order)
