"""The policy the robot runs: camera frame in, velocities in robot units out.

    from runtime.bundle import load_bundle
    from runtime.policy.backends.registry import make_backend
    from runtime.policy.onboard import Policy

    bundle = load_bundle("bundle/")
    with make_backend(bundle, "auto") as backend:
        policy = Policy(bundle, backend, instruction="reach the bottle on the left")
        step = policy.infer(frame_bgr)     # step.chunk (N, A), step.action = its first action, step.timings
        policy.reset()                     # new episode: empty the ring

Per frame: preprocess -> vision -> language -> push the ACT feature into a
ring of the last W features -> head over the ring -> chunk -> undo the
normalisation. The VLM runs once per frame, never over the whole window; the
instruction is tokenized once, at construction.

How a chunk becomes the action sent (first action, open-loop chunk,
temporal ensemble, discrete moves) is not decided here: wrappers around
`infer` do it (runtime/policy/behaviours.py). A bare Policy returns the chunk's first
action.

Frame spacing: the head learnt windows of W frames spaced as recorded (the
bundle's `driving.frame_spacing_s`: 0.4 s per step-mode move, 1/rate for
continuous recordings; 0.4 s for bundles that do not say). Given a
`runtime.hardware.Frame` (the drive passes them), a feature enters the ring
only when that spacing has passed in capture time since the last entry (the
frame nearest each due time); every frame still runs the VLM, and the head
runs over the ring's newest W-1 entries plus the newest frame's feature, so
the action always answers the present frame while the window spans the time
the model learnt from. Given a bare image (offline replays of recorded
frames, which are already at the recorded spacing) every frame enters.
`check_frame_spacing` refuses a drive mode that cannot keep the spacing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.hardware import Frame
from runtime.policy.bundle import Bundle, BundleError
from runtime.policy.frame_sampler import FrameSampler
from runtime.policy.preprocess import preprocess_with
from runtime.policy.prompt import build_prompt, manifest_layout


class ActionRing:
    """The last W ACT features, oldest first."""

    def __init__(self, window: int, dim: int):
        self.window, self.dim = window, dim
        self._buf = np.zeros((window, dim), np.float32)
        self._count = 0  # features pushed since reset

    def push(self, feature: np.ndarray) -> None:
        feature = np.asarray(feature, np.float32).reshape(self.dim)
        if self._count < self.window:
            self._buf[self._count] = feature
        else:
            self._buf[:-1] = self._buf[1:]
            self._buf[-1] = feature
        self._count += 1

    def __len__(self) -> int:
        return min(self._count, self.window)

    def view(self) -> np.ndarray:
        """(1, L, D) with L = min(pushed, W)."""
        return self._buf[None, : len(self)]

    def view_with(self, feature: np.ndarray) -> np.ndarray:
        """(1, L, D): the newest W-1 entries and `feature` after them (a frame between two ring entries)."""
        kept = self._buf[max(len(self) - (self.window - 1), 0): len(self)]
        return np.concatenate([kept, np.asarray(feature, np.float32).reshape(1, self.dim)])[None]

    def reset(self) -> None:
        self._count = 0


log = logging.getLogger(__name__)
COLLECTOR_FRAME_SPACING_S = 0.4  # the original collector (and bundles that do not say): one frame per 0.4 s move


def bundle_frame_spacing(bundle: Bundle) -> float:
    """The frame spacing (s) the bundle's model was trained on: bundle.json's `driving.frame_spacing_s`."""
    value = (bundle.manifest.get("driving") or {}).get("frame_spacing_s", COLLECTOR_FRAME_SPACING_S)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = -1.0
    if not value > 0:
        raise BundleError(f"{bundle.root / 'bundle.json'}: driving.frame_spacing_s must be a positive number of "
                          f"seconds, found {bundle.manifest['driving'].get('frame_spacing_s')!r}")
    return value


def check_frame_spacing(spacing_s: float, mode: str, step_duration_s: float) -> None:
    """Refuse a drive mode that cannot feed the ring at the trained spacing: in step mode a frame comes at
    most once per move, so moves longer than the spacing (by more than half of it) would stretch the window."""
    if mode == "step" and step_duration_s > 1.5 * spacing_s:
        raise BundleError(f"the bundle was trained on frames {spacing_s:g} s apart, but --mode step takes one frame "
                          f"per --step-duration {step_duration_s:g} s move, so its window would span "
                          f"{step_duration_s / spacing_s:.1f}x the time the model learnt from: drive with --mode "
                          f"continuous (the ring then takes a frame every {spacing_s:g} s), or --step-duration "
                          f"{spacing_s:g}")


class RingPacer(FrameSampler):
    """Which frames enter the ring: the one nearest each due time, one `spacing_s` after the previous entry
    (runtime/policy/frame_sampler.py), their capture times kept and a gap the model never saw warned about."""

    def __init__(self, spacing_s: float):
        super().__init__(spacing_s)
        self.entries: list[float] = []  # capture times of the entries since reset (the newest 64)

    def reset(self) -> None:
        super().reset()
        self.entries.clear()

    def take(self, stamp: float) -> bool:
        if not super().take(stamp):
            return False
        self.entries = self.entries[-63:] + [stamp]
        if len(self.entries) > 1:
            gap = self.entries[-1] - self.entries[-2]
            log.debug("ring entry %d at %.3f s, %.3f s after the previous", len(self.entries), stamp, gap)
            if gap > 1.5 * self.spacing_s:
                log.warning("ring entries %.2f s apart, the model learnt %.2f s: frames arrive too slowly (camera "
                            "or inference stalled)", gap, self.spacing_s)
        return True


@dataclass
class PolicyStep:
    action: np.ndarray  # (A,) robot units: the action to send now (a bare Policy: the chunk's first)
    chunk: np.ndarray  # (N, A) robot units: the newest predicted chunk
    normalized_chunk: np.ndarray  # (N, A) in [-1, 1] as the head produced it
    timings: dict = field(default_factory=dict)  # seconds per stage
    finite: bool = True  # False when the graphs produced NaN/inf (safety must stop)
    planned_steps_ago: int = 0  # the action was planned from the frame this many infer calls back (a chunk's tail)


class Policy:
    def __init__(self, bundle: Bundle, backend, instruction: str | None = None):
        self.bundle, self.backend = bundle, backend
        p = bundle.manifest["prompt"]
        self.instruction = p["default_instruction"] if instruction is None else instruction
        if instruction is None:
            self.input_ids = np.asarray([p["default_input_ids"]], np.int64)
            self.attention_mask = np.asarray([p["default_attention_mask"]], np.int64)
        else:
            try:
                layout = manifest_layout(p)
            except ValueError as e:
                raise BundleError(f"{bundle.root / 'bundle.json'}: {e}") from None
            prompt = build_prompt(bundle.tokenizer(), instruction, latent_query_num=p["latent_query_num"],
                                  max_text_tokens=p["max_text_tokens"], template=p["template"], layout=layout)
            self.input_ids, self.attention_mask = prompt.input_ids, prompt.attention_mask
        if self.input_ids.shape[1] != p["total_tokens"]:
            raise BundleError(f"{bundle.root / 'bundle.json'}: prompt has {self.input_ids.shape[1]} tokens, "
                              f"graphs expect {p['total_tokens']}")
        self.preprocess_config = bundle.preprocess
        dim = bundle.outputs("language")[0].shape[-1]
        self.ring = ActionRing(bundle.window, int(dim))
        self.scale = np.float32(bundle.action_range)
        self.pacer = RingPacer(bundle_frame_spacing(bundle))
        self._between: np.ndarray | None = None  # the newest frame's feature when it did not enter the ring

    def reset(self) -> None:
        self.ring.reset()
        self.pacer.reset()
        self._between = None

    def encode(self, frame) -> tuple[np.ndarray, dict]:
        """Frame (a BGR image, or a runtime.hardware.Frame with its capture time) -> pixels -> ACT feature (1, D);
        it enters the ring unless a Frame came before the trained spacing passed (see the module's doc)."""
        image, stamp = (frame.image, frame.stamp) if isinstance(frame, Frame) else (frame, None)
        feature, timings = self.feature(image)
        if stamp is None or self.pacer.take(stamp):
            self.ring.push(feature)
            self._between = None
        else:
            self._between = feature
        return feature, timings

    def feature(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """BGR image -> ACT feature (1, D) and the stages' seconds; the ring is untouched (runtime.policy.remote
        computes it on a server instead)."""
        t0 = time.perf_counter()
        pixels = preprocess_with(self.preprocess_config, image)[None]
        t1 = time.perf_counter()
        feature = self.backend.encode_frame(pixels, self.input_ids, self.attention_mask)
        return feature, {"preprocess": t1 - t0, "vision": self.backend.timings.get("vision", 0.0),
                         "language": self.backend.timings.get("language", 0.0)}

    def window(self) -> np.ndarray:
        """What the head sees: the ring, or its newest W-1 entries and the newest frame between two entries."""
        return self.ring.view() if self._between is None else self.ring.view_with(self._between)

    def infer(self, frame) -> PolicyStep:
        _, timings = self.encode(frame)
        normalized = self.backend.predict_chunk(self.window())[0]
        timings["head"] = self.backend.timings.get("head", 0.0)
        t0 = time.perf_counter()
        chunk = normalized.astype(np.float32) * self.scale
        timings["post"] = time.perf_counter() - t0
        return PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=normalized, timings=timings,
                          finite=bool(np.isfinite(chunk).all()))
