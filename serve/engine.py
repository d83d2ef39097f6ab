"""The server's inference: worker threads with a backend each, robots' rings, deadlines, batches, readiness.

    engine = Engine(bundle, EngineConfig(backend="ort-cpu", workers=2))
    pixels = engine.pixels(rgb)                                        # resize + normalise (any thread)
    future = engine.submit(Job(pixels, *engine.prompt_ids(prompt), deadline=time.monotonic() + 0.15))
    feature, timings = future.result()                                 # (1, D): stateless, any replica
    ring, status = engine.rings.open(conn, robot_id, token, prompt, engine.instruction(prompt))
    chunk, timings = engine.submit(Job(pixels, ring.policy.input_ids, ring.policy.attention_mask,
                                       ring=ring)).result()           # this robot's ring, the head, robot units
    engine.close()

Each of the `workers` threads owns one backend (ONNX Runtime sessions and
TensorRT contexts are not shared between threads; on ONNX Runtime the
process's cores are shared out among them, `worker_threads`) and takes jobs
from one queue, so the same frame gives the same numbers whichever worker runs it. A
job carries its deadline (the robot's capture time + its timeout, sent as
`deadline_ms`): one whose deadline has passed when a worker takes it is
never computed, its future fails with `DeadlineExceeded`, and `expired`
counts it.

Batching (`max_batch` > 1, `batch_window_ms`): a worker that takes a job
waits up to the window (from that job's arrival) for more, up to
`max_batch`, and runs their frames through vision and language in one call
on the bundle's batch graphs (export `--serve-batch B`); each robot's head
then runs on its own ring. On the CPU a frame's feature does not depend on
the frames batched with it (tests/serve); the batch graphs differ from the
batch-1 graphs in the last bits, which the metadata's `compute` says.

Readiness: `last_done` is when a worker last finished a job; while no robot
sends, `canary()` submits a grey frame, so `/readyz` can say whether a
worker has finished an inference within its period.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np

from runtime.policy.backends.registry import make_backend
from runtime.policy.bundle import Bundle
from runtime.policy.onboard import Policy
from runtime.policy.preprocess import normalize_rgb, resize_rgb
from serve.rings import Ring, RingConfig, RingTable

log = logging.getLogger(__name__)
STOP = 1 << 30  # a worker's stop sorts after every job: what was queued before close() still runs


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "ort-cpu"  # runtime.policy.backends name: ort-cpu, ort-cuda, ort-trt, trt, auto
    variant: str = "fp32"  # ONNX variant for the ONNX Runtime backends
    workers: int = 1  # inference threads, each with its own backend (one per GPU stream / CPU share)
    max_batch: int = 1  # frames run through vision + language in one call (> 1: the bundle's batch graphs)
    batch_window_ms: float = 0.0  # how long a worker waits for more frames after the first (batching only)
    prepare_workers: int = max(2, os.cpu_count() or 2)  # threads decoding and resizing requests, off the event loop
    prompt_cache: int = 64  # tokenized instructions kept for feature requests
    rings: RingConfig = field(default_factory=RingConfig)  # robots' rings: TTL, how many, per connection


def worker_threads(workers: int) -> int | None:
    """ONNX Runtime's compute threads for each of `workers` workers: the cores this process may use, shared out
    (None, ONNX Runtime's own default, for one worker). Each session's default takes every core, so 2 workers on
    2 cores ran 4 compute threads, and one client's large images slowed every robot's reply: 8 robots' round
    trip p99 6.5-15.1 ms beside a client sending 4096 x 4096 JPEGs, 5.2-6.4 ms with a core each
    (tests/serve/test_abuse.py, 2026-12-07, 2-core machine)."""
    if workers <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before a worker could start it: not computed."""


@dataclass
class Job:
    """One frame to encode; with a ring, also pushed into it and the head run over it."""

    pixels: np.ndarray  # (1, 3, S, S) float32, preprocessed
    input_ids: np.ndarray  # (1, T) the prompt's ids
    attention_mask: np.ndarray  # (1, T)
    ring: Ring | None = None  # actions mode: this robot's ring; None: the feature only (stateless)
    reset: bool = False  # empty the ring before this frame
    deadline: float | None = None  # time.monotonic() after which the result is of no use: not computed then
    canary: bool = False  # the readiness probe's own job (not counted as served)
    priority: int = 0  # lower first: a large image's job (1) waits while robots' frames (0) are queued
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.perf_counter)


class Engine:
    def __init__(self, bundle: Bundle, config: EngineConfig = EngineConfig(), backends: list | None = None):
        """`backends`: one per worker, already active (serve.ray_app passes its replicas' proxies); None: made
        here from the config."""
        if config.workers < 1:
            raise ValueError(f"workers must be at least 1, found {config.workers}")
        if config.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, found {config.max_batch}")
        self.bundle, self.config = bundle, config
        self.backends = []
        self._queue: queue.PriorityQueue = queue.PriorityQueue()  # (priority, arrival, job); None jobs stop workers
        self._arrivals = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False
        if backends is not None:
            self.backends = list(backends)
        else:
            threads = worker_threads(config.workers)
            try:
                for _ in range(config.workers):
                    self.backends.append(make_backend(bundle, config.backend, variant=config.variant, threads=threads,
                                                      batched=config.max_batch > 1).activate())
            except BaseException:
                self.close()
                raise
        if config.max_batch > self.backends[0].max_batch:
            self.close()
            raise ValueError(f"max_batch {config.max_batch} is over what the bundle's batch graphs take "
                             f"({self.backends[0].max_batch}): export with --serve-batch {config.max_batch}")
        self.preprocess = bundle.preprocess
        self._rgb_preprocess = replace(bundle.preprocess, channel_order="rgb")  # requests carry RGB
        self._prompts: OrderedDict[str | None, Policy] = OrderedDict()
        self._prompt_lock = threading.Lock()
        self.rings = RingTable(config.rings, self._new_ring_policy)
        self.expired = 0  # robots' jobs whose deadline passed before a worker took them (never computed)
        self.computed = 0  # frames run through vision + language
        self.batches: list[int] = []  # sizes of the newest batches (the last 1000)
        self.last_done = float("-inf")  # time.monotonic() when a worker last finished a job (readiness): never yet
        self._canary_pending = False
        s = self.preprocess.size
        self._canary_pixels = self.pixels(np.full((s, s, 3), 128, np.uint8))
        for i, backend in enumerate(self.backends):
            t = threading.Thread(target=self._work, args=(backend,), name=f"serve-infer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def describe(self) -> str:
        batching = (f", batches of up to {self.config.max_batch} within {self.config.batch_window_ms:g} ms"
                    if self.config.max_batch > 1 else "")
        return f"{self.backends[0].describe()} x {len(self.backends)}{batching}"

    def identity(self) -> dict:
        return self.backends[0].identity()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._queue.put((STOP, next(self._arrivals), None))
            for t in self._threads:
                t.join(timeout=30)
        for backend in self.backends:
            backend.deactivate()
        self.backends = []

    # -- what a request needs before a worker (any thread) --------------------------------
    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """RGB image (any size) -> (1, 3, S, S) pixels; at S x S the resize is a copy, so a robot that resized its
        frame gets exactly the pixels its onboard policy computes."""
        p = self.preprocess
        return normalize_rgb(resize_rgb(rgb, "rgb", p.size, p.model_channel_order), p.mean, p.std)[None]

    def instruction(self, prompt: str | None) -> str:
        return self.bundle.manifest["prompt"]["default_instruction"] if prompt is None else prompt

    def prompt_ids(self, prompt: str | None) -> tuple[np.ndarray, np.ndarray]:
        """The tokenized prompt (ids, mask); PromptTooLongError for one that cannot fit."""
        with self._prompt_lock:
            policy = self._prompts.get(prompt)
            if policy is not None:
                self._prompts.move_to_end(prompt)
                return policy.input_ids, policy.attention_mask
        policy = Policy(self.bundle, None, instruction=prompt)
        with self._prompt_lock:
            self._prompts[prompt] = policy
            while len(self._prompts) > self.config.prompt_cache:
                self._prompts.popitem(last=False)
        return policy.input_ids, policy.attention_mask

    def _new_ring_policy(self, prompt: str | None) -> Policy:
        policy = Policy(self.bundle, None, instruction=prompt)
        policy.preprocess_config = self._rgb_preprocess
        return policy

    # -- the workers -----------------------------------------------------------------------------
    def submit(self, job: Job) -> Future:
        """Queue a job; its future gives (feature (1, D) or chunk (N, A) in robot units, timings in s)."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        self._queue.put((job.priority, next(self._arrivals), job))
        return job.future

    def canary(self, deadline_s: float) -> Future | None:
        """A grey frame through a worker, unless one is already on its way (readiness while no robot sends)."""
        if self._canary_pending or self._closed:
            return None
        self._canary_pending = True
        ids, mask = self.prompt_ids(None)
        return self.submit(Job(self._canary_pixels, ids, mask, deadline=time.monotonic() + deadline_s, canary=True))

    def _work(self, backend) -> None:
        window = self.config.batch_window_ms / 1e3
        while True:
            item = self._queue.get()
            job = item[2]
            if job is None:
                return
            jobs = [job]
            if self.config.max_batch > 1:
                until = time.perf_counter() + max(window - (time.perf_counter() - job.enqueued), 0.0)
                while len(jobs) < self.config.max_batch:
                    try:
                        more = self._queue.get(timeout=max(until - time.perf_counter(), 1e-6))
                    except queue.Empty:
                        break
                    if more[2] is None:
                        self._queue.put(more)  # the stop is for whichever worker takes it next
                        break
                    jobs.append(more[2])
            self._run(backend, jobs)

    def _run(self, backend, jobs: list[Job]) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.canary:
                self._canary_pending = False
            if job.deadline is not None and now > job.deadline:
                self.expired += not job.canary
                job.future.set_exception(DeadlineExceeded(
                    f"deadline passed {(now - job.deadline) * 1e3:.0f} ms before a worker was free: not computed"))
            else:
                live.append(job)
        if not live:
            return
        began = time.perf_counter()
        try:
            if len(live) == 1 and backend.max_batch == 1:
                features = backend.encode_frame(live[0].pixels, live[0].input_ids, live[0].attention_mask)
            else:
                features = backend.encode_frames(np.concatenate([j.pixels for j in live]),
                                                 np.concatenate([j.input_ids for j in live]),
                                                 np.concatenate([j.attention_mask for j in live]))
        except Exception as e:  # a backend failure fails these requests; the worker goes on
            for job in live:
                job.future.set_exception(e)
            return
        encoded = time.perf_counter()
        self.computed += len(live)
        self.batches = self.batches[-999:] + [len(live)]
        shared = {"vision": backend.timings.get("vision", 0.0), "language": backend.timings.get("language", 0.0)}
        for job, feature in zip(live, np.asarray(features, np.float32)):
            timings = {"preprocess": 0.0, **shared, "queue": began - job.enqueued, "batch": len(live)}
            try:
                if job.ring is None:
                    result = feature[None]
                else:
                    result = self._head(backend, job, feature, timings)
                timings["infer"] = time.perf_counter() - began
                timings["encode"] = encoded - began
                job.future.set_result((result, timings))
            except Exception as e:
                job.future.set_exception(e)
        self.last_done = time.monotonic()

    def _head(self, backend, job: Job, feature: np.ndarray, timings: dict) -> np.ndarray:
        """Push the feature into the robot's ring and run the head over it: (N, A) in robot units."""
        policy = job.ring.policy
        with job.ring.lock:
            if job.reset:
                policy.reset()
            policy.ring.push(feature)
            normalized = backend.predict_chunk(policy.window())[0]
            timings["head"] = backend.timings.get("head", 0.0)
        return (normalized.astype(np.float32) * policy.scale).astype(np.float32)
