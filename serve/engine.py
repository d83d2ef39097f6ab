"""The server's inference: a pool of backends, per-robot rings, all of it off the network thread.

    engine = Engine(bundle, EngineConfig(backend="ort-cpu", workers=1))
    feature, timings = engine.feature(rgb_224, prompt)                 # stateless: any replica, any frame
    chunk, timings = engine.actions("robot-7", rgb_frame, prompt)      # this robot's ring, the head, robot units
    engine.close()

Both calls block; the websocket server runs them in `engine.executor`, so a
robot waiting for its inference never holds up another robot's I/O. Each of
the `workers` threads takes a backend of its own from the pool for one call
(ONNX Runtime sessions and TensorRT contexts are not shared between threads),
so the same frame gives the same numbers whichever worker runs it.

A robot's state is a `runtime.policy.onboard.Policy` of its own (its ring of ACT
features and its tokenized instruction), the same class the robot runs
onboard: handed a backend from the pool for the length of one call, it
computes exactly what the onboard policy computes (tests/serve). A new
prompt starts a new ring (features under another instruction are other
features); `reset` empties it. Sessions idle longer than `session_ttl` are
dropped when the table is full.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from runtime.policy.backends.registry import make_backend
from runtime.policy.bundle import Bundle
from runtime.policy.onboard import Policy
from runtime.policy.preprocess import normalize_rgb, resize_rgb


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "ort-cpu"  # runtime.policy.backends name: ort-cpu, ort-cuda, ort-trt, trt, auto
    variant: str = "fp32"  # ONNX variant for the ONNX Runtime backends
    workers: int = 1  # inference threads, each with its own backend (one per GPU stream / CPU share)
    max_sessions: int = 1024  # robots whose rings are kept; the least recently used idle one goes first
    prompt_cache: int = 64  # tokenized instructions kept for feature requests


class Session:
    """One robot's policy state on the server."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.lock = threading.Lock()  # one call at a time on this ring (two connections may share a robot id)
        self.last_used = time.monotonic()


class Engine:
    def __init__(self, bundle: Bundle, config: EngineConfig = EngineConfig()):
        if config.workers < 1:
            raise ValueError(f"workers must be at least 1, found {config.workers}")
        self.bundle, self.config = bundle, config
        self._pool: queue.SimpleQueue = queue.SimpleQueue()
        self.backends = []
        try:
            for _ in range(config.workers):
                backend = make_backend(bundle, config.backend, variant=config.variant).activate()
                self.backends.append(backend)
                self._pool.put(backend)
        except BaseException:
            self.close()
            raise
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="serve-infer")
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._prompts: OrderedDict[str | None, Policy] = OrderedDict()
        self._table_lock = threading.Lock()
        self.preprocess = bundle.preprocess
        # requests carry RGB (the protocol's order): a session's policy preprocesses them as RGB frames
        self._rgb_preprocess = replace(bundle.preprocess, channel_order="rgb")

    def describe(self) -> str:
        return self.backends[0].describe()

    def close(self) -> None:
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown(wait=True)
        for backend in self.backends:
            backend.deactivate()
        self.backends = []

    # -- state ---------------------------------------------------------------------
    def _prompt_policy(self, prompt: str | None) -> Policy:
        """A Policy holding the tokenized prompt (feature requests use only its ids)."""
        with self._table_lock:
            policy = self._prompts.get(prompt)
            if policy is not None:
                self._prompts.move_to_end(prompt)
                return policy
        policy = Policy(self.bundle, None, instruction=prompt)  # PromptTooLongError for a prompt that cannot fit
        with self._table_lock:
            self._prompts[prompt] = policy
            while len(self._prompts) > self.config.prompt_cache:
                self._prompts.popitem(last=False)
        return policy

    def session(self, robot_id: str, prompt: str | None) -> Session:
        """The robot's session; a new one (empty ring) when it is new or its prompt changed."""
        with self._table_lock:
            session = self._sessions.get(robot_id)
            if session is not None and session.policy.instruction == self._instruction(prompt):
                self._sessions.move_to_end(robot_id)
                session.last_used = time.monotonic()
                return session
        session = Session(Policy(self.bundle, None, instruction=prompt))
        session.policy.preprocess_config = self._rgb_preprocess
        with self._table_lock:
            self._sessions[robot_id] = session
            while len(self._sessions) > self.config.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def _instruction(self, prompt: str | None) -> str:
        return self.bundle.manifest["prompt"]["default_instruction"] if prompt is None else prompt

    def drop(self, robot_id: str) -> None:
        with self._table_lock:
            self._sessions.pop(robot_id, None)

    def reset(self, robot_id: str) -> bool:
        with self._table_lock:
            session = self._sessions.get(robot_id)
        if session is None:
            return False
        with session.lock:
            session.policy.reset()
        return True

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # -- inference (blocking: run these in self.executor) ------------------------------
    def _pixels(self, rgb: np.ndarray) -> np.ndarray:
        """RGB image (any size) -> (1, 3, S, S) pixels; at S x S the resize is a copy, so a robot that resized its
        frame gets exactly the pixels its onboard policy computes."""
        p = self.preprocess
        return normalize_rgb(resize_rgb(rgb, "rgb", p.size, p.model_channel_order), p.mean, p.std)[None]

    def feature(self, rgb: np.ndarray, prompt: str | None) -> tuple[np.ndarray, dict]:
        """(1, D) ACT feature of one frame under `prompt`; nothing is kept."""
        policy = self._prompt_policy(prompt)
        t0 = time.perf_counter()
        pixels = self._pixels(rgb)
        t1 = time.perf_counter()
        backend = self._pool.get()
        try:
            feature = backend.encode_frame(pixels, policy.input_ids, policy.attention_mask)
            timings = {"preprocess": t1 - t0, "vision": backend.timings.get("vision", 0.0),
                       "language": backend.timings.get("language", 0.0)}
        finally:
            self._pool.put(backend)
        return np.asarray(feature, np.float32), timings

    def actions(self, robot_id: str, rgb: np.ndarray, prompt: str | None,
                reset: bool = False) -> tuple[np.ndarray, dict]:
        """(N, A) float32 chunk in robot units for this robot's newest frame (its ring advances by one)."""
        session = self.session(robot_id, prompt)
        with session.lock:
            if reset:
                session.policy.reset()
            backend = self._pool.get()
            try:
                session.policy.backend = backend
                step = session.policy.infer(np.ascontiguousarray(rgb))
            finally:
                session.policy.backend = None
                self._pool.put(backend)
            session.last_used = time.monotonic()
        return step.chunk.astype(np.float32), step.timings

