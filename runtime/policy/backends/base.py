"""One interface for every way of running the bundle's three graphs.

    with make_backend(bundle, "ort-cpu") as backend:
        feature = backend.encode_frame(pixels, input_ids, attention_mask)   # vision + language
        chunk = backend.predict_chunk(features)                              # action head
        backend.timings   # {"vision": s, "language": s, "head": s} of the last calls
        backend.calls     # Counter of graph runs since activation: {"vision": n, "language": n, "action_head": n}
        features = backend.encode_frames(pixels_b, ids_b, mask_b)           # B frames (a server's batch)
        backend.identity()  # what it computes: backend, variant, precision, the sha256 of the files it runs

Backends are runners in the Polygraphy sense: `activate()` loads what they
need (sessions, engines, device buffers), `deactivate()` frees it, heavy
imports happen inside `activate`, and every call checks its inputs against the
bundle's recorded names, shapes and dtypes before touching the accelerator.
`encode_frame` is one call so a GPU backend can keep the image embeddings on
the device between vision and language. `encode_frames` runs B frames: one
call per frame on the bundle's batch-1 graphs, one call in all on the batch
graphs a policy server loads (`batched`, docs/serving.md "Batching").
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections import Counter

import numpy as np

from runtime.policy.bundle import Bundle


class BackendError(RuntimeError):
    """A backend that cannot run here (library missing, engine for another GPU, ...) or a call that failed on
    the device (a TensorRT enqueue returning False, ...); the drive loop zeroes the motors on it."""


class Backend(ABC):
    name = "base"

    def __init__(self, bundle: Bundle, variant: str = "fp32"):
        self.bundle = bundle
        self.variant = variant
        self.timings: dict[str, float] = {}
        self.calls: Counter[str] = Counter()  # graph runs, counted where they are timed (benchmarks read it)
        self.active = False

    # -- lifecycle -------------------------------------------------------------
    def activate(self) -> Backend:
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Backend:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------
    def run_graph(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph with checked inputs; returns outputs by name and records its time."""
        if not self.active:
            raise BackendError(f"{self.name}: call activate() (or use `with`) before inference")
        specs = self.bundle.inputs(graph)
        where = f"{self.name} {graph}"
        missing = [s.name for s in specs if s.name not in feeds]
        extra = [k for k in feeds if k not in {s.name for s in specs}]
        if missing or extra:
            raise ValueError(f"{where}: inputs must be {[s.name for s in specs]}, got {list(feeds)}")
        dynamic = self.bundle.dynamic_axes(graph)
        for spec in specs:
            spec.check(feeds[spec.name], where, dynamic)
        start = time.perf_counter()
        out = self._run(graph, feeds)
        self.timings["head" if graph == "action_head" else graph] = time.perf_counter() - start
        self.calls[graph] += 1
        return out

    def encode_frame(self, pixels: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) pixels + prompt -> ACT feature (1, D)."""
        embeds = self.run_graph("vision", {"pixel_values": pixels})["image_embeds"]
        out = self.run_graph("language", {"input_ids": input_ids, "attention_mask": attention_mask,
                                          "image_embeds": embeds})
        return out["act_feature"]

    def encode_frames(self, pixels: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) pixels + their prompts (B, T) -> ACT features (B, D). Here one batch-1 call per frame;
        a backend with batch graphs runs them in one call (vision and language timings: the whole batch)."""
        out, seconds = [], {"vision": 0.0, "language": 0.0}
        for i in range(len(pixels)):
            out.append(self.encode_frame(pixels[i:i + 1], input_ids[i:i + 1], attention_mask[i:i + 1]))
            for k in seconds:
                seconds[k] += self.timings.get(k, 0.0)
        self.timings.update(seconds)
        return np.concatenate(out)

    @property
    def max_batch(self) -> int:
        """Frames one encode_frames call runs together (1: the batch-1 graphs, one call per frame)."""
        return 1

    def graph_files(self) -> dict[str, str]:
        """The bundle files this backend computes with, by graph (what identity() fingerprints)."""
        return dict(self.bundle.manifest["variants"][self.variant]["files"])

    def precision(self) -> str:
        return self.variant

    def identity(self) -> dict:
        """What this backend computes: two backends with the same fingerprint give the same numbers (same kernels
        on the same files); a different one may differ in the last bits (fp32 on another device) or more (fp16).
        Sent in a policy server's metadata and compared by the robot (docs/serving.md)."""
        shas = self.bundle.manifest.get("files", {})
        files = {g: shas.get(f, {}).get("sha256", "unrecorded") for g, f in sorted(self.graph_files().items())}
        record = {"backend": self.name, "variant": self.variant, "precision": self.precision(), "graphs": files}
        fingerprint = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        return {**record, "fingerprint": fingerprint}

    def predict_chunk(self, features: np.ndarray) -> np.ndarray:
        """ACT features (1, L, D), oldest first -> normalised chunk (1, N, A) for the newest frame."""
        return self.run_graph("action_head", {"act_features": features})["action_chunk"]

    # -- what a backend implements ---------------------------------------------
    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _deactivate(self) -> None: ...

    @abstractmethod
    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        return f"{self.name} ({self.variant})"
