"""The policy the robot runs: camera frame in, velocities in robot units out.

    from runtime.bundle import load_bundle
    from runtime.backends.registry import make_backend
    from runtime.policy import Policy

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
`infer` do it (runtime/behaviours.py). A bare Policy returns the chunk's first
action.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from runtime.bundle import Bundle, BundleError
from runtime.preprocess import preprocess_with
from runtime.prompt import build_prompt, manifest_layout


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

    def reset(self) -> None:
        self._count = 0


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

    def reset(self) -> None:
        self.ring.reset()

    def encode(self, frame: np.ndarray) -> tuple[np.ndarray, dict]:
        """Frame -> pixels -> ACT feature (1, D), pushed into the ring."""
        t0 = time.perf_counter()
        pixels = preprocess_with(self.preprocess_config, frame)[None]
        t1 = time.perf_counter()
        feature = self.backend.encode_frame(pixels, self.input_ids, self.attention_mask)
        self.ring.push(feature)
        timings = {"preprocess": t1 - t0, "vision": self.backend.timings.get("vision", 0.0),
                   "language": self.backend.timings.get("language", 0.0)}
        return feature, timings

    def infer(self, frame: np.ndarray) -> PolicyStep:
        _, timings = self.encode(frame)
        normalized = self.backend.predict_chunk(self.ring.view())[0]
        timings["head"] = self.backend.timings.get("head", 0.0)
        t0 = time.perf_counter()
        chunk = normalized.astype(np.float32) * self.scale
        timings["post"] = time.perf_counter() - t0
        return PolicyStep(action=chunk[0], chunk=chunk, normalized_chunk=normalized, timings=timings,
                          finite=bool(np.isfinite(chunk).all()))
