"""How a predicted chunk becomes the action sent: wrappers around a policy's `infer` (openpi's pattern).

    from runtime.policy.behaviours import with_behaviours
    policy = with_behaviours(Policy(bundle, backend), chunk_mode="ensemble", discrete=True)
    step = policy.infer(frame)        # step.action: what to send now; step.timings: per stage, seconds
    policy.reset()                    # new episode: every layer forgets

A `Policy` predicts a chunk of N actions per frame. Each wrapper takes
something with `infer(frame) -> PolicyStep` and `reset()` and is one itself,
so they stack:
- `FirstAction`: the chunk's first action, every step (the original stack's
  serving rule, and what a bare `Policy` already returns).
- `OpenLoopChunk`: the chunk is executed open-loop, one action per step, and
  a new one is predicted when it runs out. The VLM still encodes every frame,
  so the ring holds consecutive frames as in training; only the head is
  skipped.
- `TemporalEnsemble`: every chunk that covers the current step votes,
  weighted exp(-k * age) with older predictions weighted more (ACT, Zhao et
  al. 2023), which smooths the motion.
- `DiscreteMoves`: each axis snapped to the nearest demonstrated move
  (-range, 0, +range). The recordings are discrete key presses, so a
  regression head predicts their average where it is unsure; snapping
  decides, as the original rig did by using only the direction. In the
  simulator: 0.74 -> 0.82 success for tiny (docs/evaluation.md).
Each wrapper adds the time it took to `timings["post"]`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace

import numpy as np

CHUNK_MODES = ("first", "chunk", "ensemble")


class Behaviour:
    """A policy wrapped: `infer` and `reset` pass through; anything else is read from the wrapped policy."""

    def __init__(self, policy):
        self.policy = policy

    def __getattr__(self, name):  # instruction, bundle, backend, encode, ... of the innermost policy
        return getattr(self.policy, name)

    def reset(self) -> None:
        self.policy.reset()

    def drop_plan(self) -> None:
        """Forget what was planned ahead (a chunk's rest, the ensemble's chunks); the ring of features stays.
        runtime.drive calls it when the next planned action would be older than --cmd-timeout."""
        inner = getattr(self.policy, "drop_plan", None)
        if inner is not None:
            inner()

    def infer(self, frame):
        step = self.policy.infer(frame)
        t0 = time.perf_counter()
        action = self.choose(step)
        timings = dict(step.timings, post=step.timings.get("post", 0.0) + time.perf_counter() - t0)
        finite = bool(step.finite and np.isfinite(action).all())
        return replace(step, action=np.asarray(action, np.float32), timings=timings, finite=finite)

    def choose(self, step) -> np.ndarray:
        raise NotImplementedError


class FirstAction(Behaviour):
    def choose(self, step) -> np.ndarray:
        return step.chunk[0]


class OpenLoopChunk(Behaviour):
    def __init__(self, policy):
        super().__init__(policy)
        self._pending: deque[np.ndarray] = deque()
        self._last = None

    def reset(self) -> None:
        super().reset()
        self.drop_plan()

    def drop_plan(self) -> None:
        super().drop_plan()
        self._pending.clear()
        self._last = None

    def infer(self, frame):
        if not self._pending:
            self._last = self.policy.infer(frame)
            self._pending.extend(self._last.chunk)
            step = self._last
        else:  # the VLM still sees every frame (the ring stays consecutive); the head is skipped
            _, timings = self.policy.encode(frame)
            step = replace(self._last, timings=dict(timings, head=0.0, post=0.0))
        # planned from the chunk's first frame: the drive ages the action from that frame's capture
        age = len(self._last.chunk) - len(self._pending)
        return replace(step, action=self._pending.popleft(), planned_steps_ago=age)


class TemporalEnsemble(Behaviour):
    def __init__(self, policy, k: float = 0.01):
        super().__init__(policy)
        self.k = k
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (step predicted at, chunk (N, A))
        self.steps = 0

    def reset(self) -> None:
        super().reset()
        self.drop_plan()

    def drop_plan(self) -> None:
        super().drop_plan()
        self.chunks.clear()
        self.steps = 0

    def choose(self, step) -> np.ndarray:
        now = self.steps
        self.steps += 1
        self.chunks.append((now, step.chunk))
        while self.chunks and now - self.chunks[0][0] >= len(self.chunks[0][1]):
            self.chunks.popleft()
        preds = np.stack([c[now - s] for s, c in self.chunks])  # oldest first
        weights = np.exp(-self.k * np.arange(len(preds)))
        return (weights[:, None] * preds).sum(0) / weights.sum()


class DiscreteMoves(Behaviour):
    def __init__(self, policy, move: float | None = None):
        super().__init__(policy)
        self.move = np.float32(policy.bundle.action_range if move is None else move)

    def choose(self, step) -> np.ndarray:
        if not step.finite:  # NaN stays NaN: the drive loop must see it and stop
            return step.action
        return np.clip(np.round(step.action / self.move), -1, 1) * self.move


def with_behaviours(policy, chunk_mode: str = "first", discrete: bool = False, ensemble_k: float = 0.01):
    """The wrappers runtime.drive's --chunk-mode and --discrete ask for, in the order they apply."""
    if chunk_mode not in CHUNK_MODES:
        raise ValueError(f"chunk_mode must be one of {', '.join(CHUNK_MODES)}, got {chunk_mode!r}")
    wrapped = {"first": FirstAction, "chunk": OpenLoopChunk,
               "ensemble": lambda p: TemporalEnsemble(p, ensemble_k)}[chunk_mode](policy)
    return DiscreteMoves(wrapped) if discrete else wrapped
