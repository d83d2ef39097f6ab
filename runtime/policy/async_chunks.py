"""Asynchronous chunk execution: the control thread plays the current chunk while the next one is inferred.

    schedule = ChunkSchedule(AsyncConfig(action_period=0.4, threshold=9), chunk_len=10)
    schedule.land(step.chunk, captured=frame.stamp, now=time.monotonic())   # the inference thread, per chunk
    action = schedule.action_at(now)          # the control thread, every tick; None: no chunk covers now -> zero
    schedule.needs_inference(now)             # True: capture the next frame and infer

    python -m runtime.drive --bundle bundle/ --async ...        (also with --policy ws://HOST:PORT)
    python -m sim.evaluate --bundle bundle/ --episodes 20 --inject-latency-ms 200 --async

The time axis: a chunk inferred from a frame captured at `t` is a plan,
action k for [t + k * P, t + (k + 1) * P) where P is `action_period` (the
recordings' 0.4 s per move). When it lands at `now`, the actions whose time
has passed during inference are skipped (index floor((now - t) / P)), and
for `blend` seconds the new plan is cross-faded linearly with the old one
where both cover the present, so the command does not jump at the switch.
A new inference starts when at most `threshold` actions of the current plan
are left ahead of now, at most one at a time and never twice within one
action period (so the policy's ring holds one frame per recorded step, as
in training). Nothing covers the present once the newest plan has run out:
then `action_at` returns None and the drive loop zeroes the motors. The
drive also never plays a plan whose frame is older than the schedule's
replan age plus `--cmd-timeout` (`AsyncChunks.max_plan_age`;
`planned_at(now, oldest)`: an older plan is neither played nor blended in,
and counts as spent, so the next frame is taken), zeroes once the frame in
inference is `--cmd-timeout` old (a hung inference), and every reset of the
loop (a stall, an error, a reconnect) forgets the plans at once: a chunk
from a frame captured before the reset is dropped when it lands
(`reset(fence)`), so no plan made before a fault is played after it.

`discrete_move`: each axis of the blended action snapped to -m, 0, +m (the
`--discrete` behaviour applied to the action actually played).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AsyncConfig:
    action_period: float = 0.4  # s each action of a chunk covers (the recordings' step: 0.4 s key presses)
    threshold: int | None = None  # infer when at most this many actions are left ahead; None: chunk length - 1
    blend: float = 0.0  # s of linear cross-fade from the old plan to a new one (0: switch at once; see docs)


def add_async_arguments(ap) -> None:
    d = AsyncConfig
    ap.add_argument("--async", dest="async_chunks", action="store_true",
                    help="play the current chunk while the next one is inferred (--mode continuous; "
                         "docs/serving.md)")
    ap.add_argument("--action-period", type=float, default=d.action_period,
                    help="--async: seconds each action of a chunk covers (the recordings' step)")
    ap.add_argument("--async-threshold", type=int, default=d.threshold,
                    help="--async: infer when at most this many actions are left (default: chunk length - 1)")
    ap.add_argument("--blend", type=float, default=d.blend, help="--async: seconds of cross-fade to a new chunk")


def async_config_from_args(args) -> AsyncConfig | None:
    if not getattr(args, "async_chunks", False):
        return None
    return AsyncConfig(args.action_period, args.async_threshold, args.blend)


class ChunkSchedule:
    def __init__(self, config: AsyncConfig, chunk_len: int, discrete_move: float | None = None):
        if config.action_period <= 0:
            raise ValueError(f"--action-period must be positive, found {config.action_period}")
        self.config, self.chunk_len, self.discrete_move = config, chunk_len, discrete_move
        self.threshold = chunk_len - 1 if config.threshold is None else config.threshold
        if not 0 <= self.threshold < chunk_len:
            raise ValueError(f"--async-threshold must be in 0..{chunk_len - 1} (the chunk has {chunk_len} actions), "
                             f"found {self.threshold}")
        self._lock = threading.Lock()
        self._plan: tuple[float, np.ndarray] | None = None  # (capture time, chunk (N, A))
        self._old: tuple[float, np.ndarray] | None = None  # the plan before it, for the cross-fade
        self._landed = -float("inf")
        self._last_capture = -float("inf")
        self._fence = -float("inf")  # a chunk from a frame captured before this (the last reset) never lands
        self.in_flight = False
        self.skipped = 0  # actions skipped at landing because their time had passed (all chunks)
        self.landings = 0

    @property
    def replan_age(self) -> float:
        """How old the plan in force is when the schedule takes the next frame: when `threshold` actions are left,
        and never sooner than one action period after the last frame. A healthy plan is replaced within this plus
        the inference's time, which --cmd-timeout bounds."""
        return max(1, self.chunk_len - 1 - self.threshold) * self.config.action_period

    def reset(self, fence: float = -float("inf")) -> None:
        """Forget every plan: nothing planned so far is played or blended in after this. A chunk from a frame
        captured before `fence` (the drive loop: the time of the fault) is dropped when it lands."""
        with self._lock:
            self._plan = self._old = None
            self._last_capture = self._landed = -float("inf")
            self._fence = max(self._fence, fence)
            self.in_flight = False

    # -- inference side ---------------------------------------------------------------
    def needs_inference(self, now: float, max_age: float = math.inf) -> bool:
        """Whether to take the next frame now; a plan whose frame is older than `max_age` counts as spent."""
        with self._lock:
            if self.in_flight or now < self._last_capture + self.config.action_period:
                return False
            if self._plan is not None and now - self._plan[0] > max_age:
                return True
            return self._left(now) <= self.threshold

    def started(self, captured: float) -> None:
        """An inference started on a frame captured at `captured`."""
        with self._lock:
            self.in_flight = True
            self._last_capture = captured

    def land(self, chunk: np.ndarray, captured: float, now: float) -> int:
        """A chunk computed from the frame captured at `captured` arrived at `now`; returns actions skipped."""
        chunk = np.asarray(chunk, np.float32)
        skipped = min(self._slot(max(now - captured, 0.0)), len(chunk))
        with self._lock:
            if captured < self._fence:  # planned before a reset: never played
                self.in_flight = False
                return len(chunk)
            self._old = self._plan
            self._plan = (captured, chunk)
            self._landed = now
            self._last_capture = max(self._last_capture, captured)
            self.in_flight = False
            self.skipped += skipped
            self.landings += 1
        return skipped

    def failed(self) -> None:
        """The inference produced nothing (non-finite, an error): the next may start."""
        with self._lock:
            self.in_flight = False

    # -- control side -----------------------------------------------------------------------
    def _slot(self, elapsed: float) -> int:
        """Which action's time `elapsed` seconds after capture falls in (a nanosecond of slack for float sums)."""
        return math.floor(elapsed / self.config.action_period + 1e-9)

    def _index(self, plan, now: float) -> int | None:
        captured, chunk = plan
        k = self._slot(now - captured)
        return k if 0 <= k < len(chunk) else None

    def _left(self, now: float) -> int:
        if self._plan is None:
            return 0
        k = self._index(self._plan, now)
        return 0 if k is None else len(self._plan[1]) - 1 - k

    def covered_until(self) -> float:
        """The time the newest plan runs out (-inf before the first)."""
        with self._lock:
            if self._plan is None:
                return -float("inf")
            return self._plan[0] + len(self._plan[1]) * self.config.action_period

    def action_at(self, now: float) -> np.ndarray | None:
        planned = self.planned_at(now)
        return None if planned is None else planned[0]

    def planned_at(self, now: float, oldest: float = -math.inf) -> tuple[np.ndarray | None, float] | None:
        """(action for `now`, capture time of the frame it was planned from: the older plan's in a blend); None
        when no plan covers now. A plan from a frame captured before `oldest` is never played: it is not blended
        in, and when it is the newest the action is None (too old) with its capture time."""
        with self._lock:
            plan, old, landed = self._plan, self._old, self._landed
        if plan is None:
            return None
        k = self._index(plan, now)
        if k is None:
            return None
        captured = plan[0]
        if captured < oldest:
            return None, captured
        action = plan[1][k]
        if old is not None and old[0] >= oldest and self.config.blend > 0 and now - landed < self.config.blend:
            j = self._index(old, now)
            if j is not None:
                w = (now - landed) / self.config.blend
                action = w * action + (1 - w) * old[1][j]
                captured = min(captured, old[0])
        if self.discrete_move is not None:
            m = self.discrete_move
            action = np.clip(np.round(action / m), -1, 1) * m
        return np.asarray(action, np.float32), captured


class AsyncChunks:
    """The drive loop's strategy in --async: when to take a frame, what to play now (runtime/drive.py calls it)."""

    def __init__(self, schedule: ChunkSchedule, poll: float = 0.005):
        self.schedule, self.poll = schedule, poll

    def wait_needed(self, stop_event, clock, max_age: float = math.inf) -> bool:
        """Block until the schedule wants the next frame (a plan older than `max_age` is spent); False when the
        loop is stopping."""
        while not stop_event.is_set():
            if self.schedule.needs_inference(clock(), max_age):
                return True
            stop_event.wait(self.poll)
        return False

    def reset(self, fence: float) -> None:
        """The loop reset (a fault): no plan made so far plays, nor one from a frame captured before `fence`."""
        self.schedule.reset(fence)

    def max_plan_age(self, cmd_timeout: float) -> float:
        """The oldest a plan's frame may be and the plan still play: the schedule's replan age plus --cmd-timeout
        (the most a healthy inference takes). A plan is meant to run ahead of its frame, so its age is not held
        to --cmd-timeout alone, which would zero the motors on every replan of a healthy 0.2 s remote inference
        at the default 0.4 s action period; a hung inference is caught by its own frame's age."""
        return self.schedule.replan_age + cmd_timeout

    def inferred(self, step, captured: float, now: float) -> dict:
        """A step came back from the policy: its chunk goes on the time axis; returns fields for the step log."""
        if not step.finite:
            self.schedule.failed()
            return {}
        return {"skipped": self.schedule.land(step.chunk, captured, now)}

    def planned_at(self, now: float, oldest: float = -math.inf):
        return self.schedule.planned_at(now, oldest)


def open_chunks(config: AsyncConfig | None, policy, discrete: bool, mode: str) -> AsyncChunks | None:
    """The drive's --async strategy for `policy` (None without --async); ValueError for a mode it cannot serve."""
    if config is None:
        return None
    if mode != "continuous":
        raise ValueError(f"--async plays chunks at the control rate: it needs --mode continuous, found --mode {mode}")
    bundle = policy.bundle
    return AsyncChunks(ChunkSchedule(config, bundle.chunk, bundle.action_range if discrete else None))
