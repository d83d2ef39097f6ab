"""Behaviours wrap a real Policy (tiny bundle, ONNX Runtime): which action each sends, and what each runs."""

import numpy as np
import pytest

from runtime.cameras.sample_frames import sample_frames
from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
from runtime.policy.behaviours import DiscreteMoves, FirstAction, OpenLoopChunk, TemporalEnsemble, with_behaviours
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy


class CountingBackend:
    """The real ORT backend, with how often the VLM and the head ran."""

    def __init__(self, backend):
        self.backend, self.frames, self.heads = backend, 0, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def encode_frame(self, *args):
        self.frames += 1
        return self.backend.encode_frame(*args)

    def predict_chunk(self, *args):
        self.heads += 1
        return self.backend.predict_chunk(*args)


@pytest.fixture(scope="module")
def bundle(tiny_bundle_dir):
    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="module")
def backend(bundle):
    with OnnxRuntimeBackend(bundle) as b:
        yield b


@pytest.fixture(scope="module")
def frames():
    return sample_frames(12, seed=3, height=96, width=128)


def reference_chunks(bundle, backend, frames):
    """Chunks of a bare Policy, frame by frame: what every behaviour chooses from."""
    policy = Policy(bundle, backend)
    return [policy.infer(f).chunk for f in frames]


def test_first_action_is_the_chunks_first_and_a_bare_policy_does_the_same(bundle, backend, frames):
    chunks = reference_chunks(bundle, backend, frames)
    wrapped = FirstAction(Policy(bundle, backend))
    for frame, chunk in zip(frames, chunks):
        step = wrapped.infer(frame)
        np.testing.assert_allclose(step.action, chunk[0], atol=1e-6)
        assert set(step.timings) >= {"preprocess", "vision", "language", "head", "post"}


def test_open_loop_chunk_runs_the_head_once_per_chunk_but_the_vlm_on_every_frame(bundle, backend, frames):
    counting = CountingBackend(backend)
    policy = OpenLoopChunk(Policy(bundle, counting))
    n = bundle.chunk
    sent = [policy.infer(f) for f in frames]
    assert counting.frames == len(frames)  # the ring stays consecutive, as in training
    assert counting.heads == -(-len(frames) // n)
    chunks = reference_chunks(bundle, backend, frames)
    for i, step in enumerate(sent):
        start = (i // n) * n  # the chunk predicted at the start of this block, executed in order
        np.testing.assert_allclose(step.action, chunks[start][i - start], atol=1e-6)
        if i % n:
            assert step.timings["head"] == 0.0  # only the VLM ran for this frame
    policy.reset()
    counting.heads = 0
    policy.infer(frames[0])
    assert counting.heads == 1  # reset drops the rest of the chunk


def test_temporal_ensemble_weights_every_chunk_that_covers_the_step(bundle, backend, frames):
    k = 0.5
    chunks = reference_chunks(bundle, backend, frames)
    policy = TemporalEnsemble(Policy(bundle, backend), k=k)
    n = bundle.chunk
    for t, frame in enumerate(frames):
        got = policy.infer(frame).action
        covering = [(s, chunks[s]) for s in range(max(0, t - n + 1), t + 1)]  # oldest first
        w = np.exp(-k * np.arange(len(covering)))
        want = sum(wi * c[t - s] for wi, (s, c) in zip(w, covering)) / w.sum()
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_discrete_moves_snap_each_axis_to_the_demonstrated_moves(bundle, backend, frames):
    move = bundle.action_range
    policy = DiscreteMoves(FirstAction(Policy(bundle, backend)))
    chunks = reference_chunks(bundle, backend, frames)
    for frame, chunk in zip(frames, chunks):
        action = policy.infer(frame).action
        assert set(np.round(action / move, 6)) <= {-1.0, 0.0, 1.0}
        np.testing.assert_allclose(action, np.clip(np.round(chunk[0] / move), -1, 1) * move, atol=1e-6)


def test_non_finite_chunks_stay_non_finite_through_every_wrapper(bundle, backend, frames):
    class NanHead(CountingBackend):
        def predict_chunk(self, *args):
            return np.full_like(self.backend.predict_chunk(*args), np.nan)

    for mode in ("first", "chunk", "ensemble"):
        policy = with_behaviours(Policy(bundle, NanHead(backend)), mode, discrete=True)
        step = policy.infer(frames[0])
        assert not step.finite, mode  # the drive loop zeroes on this


def test_with_behaviours_composes_in_order_and_refuses_unknown_modes(bundle, backend):
    policy = with_behaviours(Policy(bundle, backend), "ensemble", discrete=True)
    assert isinstance(policy, DiscreteMoves) and isinstance(policy.policy, TemporalEnsemble)
    assert policy.instruction == bundle.manifest["prompt"]["default_instruction"]  # read through the wrappers
    with pytest.raises(ValueError, match="chunk_mode must be one of first, chunk, ensemble"):
        with_behaviours(Policy(bundle, backend), "average")
