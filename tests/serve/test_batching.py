"""Dynamic batching across robots (bit-identical on the CPU), and a server that says what it computes."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from tests.serve.conftest import robot_frames


@pytest.fixture(scope="module")
def batch_bundle(tmp_path_factory, tiny_model, tiny_bundle_dir):
    """The tiny bundle with its batch graphs (B up to 8) added, as `export.to_onnx --serve-batch 8` writes them."""
    import shutil

    from export.to_onnx import add_batch_graphs
    from runtime.policy.bundle import load_bundle

    out = tmp_path_factory.mktemp("batch") / "bundle"
    shutil.copytree(tiny_bundle_dir, out)
    record = add_batch_graphs(tiny_model, out, 8)
    assert record["parity"]["batched_vs_alone_max_abs"] == 0.0 and record["parity"]["passed"]
    return load_bundle(out, verify="full")


def test_frames_batched_across_robots_are_bit_identical_to_each_frame_alone(batch_bundle):
    """8 robots' frames (two instructions) submitted at once to a server batching up to 8 within 50 ms: they
    run as batches, and every feature equals the one the same batch graphs give that frame alone, bit for bit;
    within the fp32 tolerance of the robot's batch-1 graphs."""
    from runtime.policy.backends.registry import make_backend
    from serve.engine import Engine, EngineConfig, Job

    engine = Engine(batch_bundle, EngineConfig(workers=1, max_batch=8, batch_window_ms=50))
    try:
        jobs = []
        for i, frame in enumerate(robot_frames(40, 8)):
            ids, mask = engine.prompt_ids(f"robot {i % 2}")
            jobs.append(Job(engine.pixels(np.ascontiguousarray(frame[..., ::-1])), ids, mask))
        barrier = threading.Barrier(8)

        def submit(job):
            barrier.wait()
            engine.submit(job)

        threads = [threading.Thread(target=submit, args=(j,)) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batched = [j.future.result(30) for j in jobs]
        assert max(engine.batches) > 1 and sum(engine.batches) == 8
        assert max(timings["batch"] for _, timings in batched) == max(engine.batches)
    finally:
        engine.close()
    with make_backend(batch_bundle, "ort-cpu", batched=True) as alone, make_backend(batch_bundle, "ort-cpu") as one:
        for job, (feature, _) in zip(jobs, batched):
            assert np.array_equal(feature, alone.encode_frames(job.pixels, job.input_ids, job.attention_mask))
            static = one.encode_frame(job.pixels, job.input_ids, job.attention_mask)
            assert np.abs(feature - static).max() <= 1e-5


@pytest.mark.slow  # ~2 s: two servers, 4 robots each (2-core machine)
def test_actions_over_the_wire_are_the_same_batched_or_not(batch_bundle):
    """4 robots drive 6 frames each over websockets against a batching server, all at once, and against a server
    on the same batch graphs one frame at a time: every chunk equal."""
    from websockets.sync.client import connect

    from runtime.policy.backends.registry import make_backend
    from runtime.policy.wire import packb, unpackb
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread

    def drive(url, out, i):
        with connect(url, compression=None, max_size=None) as ws:
            unpackb(ws.recv(timeout=10))
            chunks = []
            for frame in robot_frames(50 + i, 6):
                ws.send(packb({"image": np.ascontiguousarray(frame[..., ::-1]), "prompt": f"robot {i % 2}"}))
                chunks.append(unpackb(ws.recv(timeout=30))["actions"])
            out[i] = chunks

    results = {}
    for batch in (8, 1):
        config = EngineConfig(workers=1, max_batch=batch, batch_window_ms=20 if batch > 1 else 0)
        one_by_one = [make_backend(batch_bundle, "ort-cpu", batched=True).activate()]  # the same graphs, B = 1
        engine = Engine(batch_bundle, config, backends=None if batch > 1 else one_by_one)
        out: dict = {}
        try:
            with ServerThread(engine, ServerConfig(port=0)) as running:
                threads = [threading.Thread(target=drive, args=(running.url, out, i)) for i in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
            results[batch] = (out, list(engine.batches))
        finally:
            engine.close()
    (batched, sizes), (alone, _) = results[8], results[1]
    assert max(sizes) > 1
    for i in range(4):
        assert all(np.array_equal(a, b) for a, b in zip(batched[i], alone[i]))


@pytest.mark.parametrize("mismatch", ["warn", "refuse"])
def test_a_robot_measures_a_server_that_computes_otherwise_and_warns_or_refuses(batch_bundle, onboard, caplog,
                                                                               mismatch):
    """A server on the batch graphs computes other graphs than the robot's batch-1 fp32 engines (its metadata's
    `compute` says so): the robot measures the difference on its test frame and, per --policy-mismatch, drives
    on with a warning naming both and the difference, or refuses the server."""
    from runtime.policy.backends.registry import make_backend
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    from runtime.policy.wire import model_identity
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread

    caplog.set_level(logging.WARNING, logger="runtime.policy")
    engine = Engine(batch_bundle, EngineConfig(workers=1, max_batch=4, batch_window_ms=1))
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running, make_backend(batch_bundle, "ort-cpu") as local:
            reference = OnboardReference(batch_bundle, local)
            assert engine.identity()["fingerprint"] != reference.identity["fingerprint"]
            encoder = RemoteEncoder(RemoteConfig(running.url, mismatch=mismatch, timeout=2, max_slowdown=float("inf")),
                                    model_identity(batch_bundle.manifest), reference).start()
            feature, chunk = encoder.difference
            assert 0 < feature <= 1e-5 and chunk <= 1e-4
            if mismatch == "warn":
                assert encoder.connected
                assert any("differ by max |d|" in r.message and "ort-cpu fp32" in r.message for r in caplog.records)
            else:
                assert not encoder.connected and "--policy-mismatch refuse" in encoder.refused
            encoder.close()
    finally:
        engine.close()


def test_a_server_on_the_robots_own_computation_is_accepted_silently(tiny_bundle, caplog):
    from runtime.policy.backends.registry import make_backend
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    from runtime.policy.wire import model_identity
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread

    caplog.set_level(logging.WARNING, logger="runtime.policy")
    engine = Engine(tiny_bundle, EngineConfig(workers=1))
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running, make_backend(tiny_bundle, "ort-cpu") as local:
            encoder = RemoteEncoder(RemoteConfig(running.url, mismatch="refuse", timeout=2, max_slowdown=float("inf")),
                                    model_identity(tiny_bundle.manifest), OnboardReference(tiny_bundle, local)).start()
            assert encoder.connected and encoder.difference == (0.0, 0.0) and not caplog.records
            encoder.close()
    finally:
        engine.close()
