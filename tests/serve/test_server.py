"""The policy server over real websockets on loopback: protocol, many robots at once, fuzzing."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from runtime.policy.wire import PROTOCOL_VERSION, model_identity, packb, unpackb
from tests.serve.conftest import robot_frames


def open_client(url, **kw):
    """A connection and the metadata the server sends first."""
    ws = connect(url, compression=None, max_size=None, **kw).__enter__()
    return ws, unpackb(ws.recv(timeout=10))


def ask(ws, message: dict):
    ws.send(packb(message))
    raw = ws.recv(timeout=30)
    return json.loads(raw) if isinstance(raw, str) else unpackb(raw)


def engine_identity(bundle):
    from runtime.policy.backends.registry import make_backend

    return make_backend(bundle, "ort-cpu").identity()


def test_metadata_names_the_model_its_shapes_and_the_protocol(server, tiny_bundle):
    ws, meta = open_client(server.url)
    ws.close()
    assert meta["protocol_version"] == PROTOCOL_VERSION
    assert meta["model_sha256"] == model_identity(tiny_bundle.manifest)
    assert (meta["window"], meta["chunk"], meta["image_size"]) == (tiny_bundle.window, tiny_bundle.chunk, 224)
    assert meta["action_axes"] == ["linear_x", "linear_y"] and meta["feature_dim"] == 64
    assert meta["modes"] == ["actions", "feature"]
    assert meta["compute"] == engine_identity(tiny_bundle) and meta["deadlines"] is True


def test_health_endpoint_answers_http(server):
    with urllib.request.urlopen(server.url.replace("ws://", "http://") + "/healthz", timeout=5) as r:
        assert r.status == 200 and r.read() == b"OK\n"


def test_arrays_use_openpis_encoding_with_binary_keys():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = msgpack.unpackb(packb({"actions": a}), raw=False)  # plain msgpack: no hook
    enc = raw["actions"]
    assert set(enc) == {b"__ndarray__", b"data", b"dtype", b"shape"}
    assert enc[b"dtype"] == "<f4" and enc[b"shape"] == [2, 3] and enc[b"data"] == a.tobytes()
    assert np.array_equal(unpackb(packb({"x": a}))["x"], a)
    assert unpackb(packb({"s": np.float32(1.5)}))["s"] == np.float32(1.5)


def test_actions_equal_the_onboard_policy_frame_by_frame(server, onboard):
    """openpi's request shape: image (RGB) + prompt in, the chunk in robot units out, ring kept per connection."""
    policy = onboard("reach the bottle on the left")
    ws, _ = open_client(server.url)
    for frame in robot_frames(3, 10):
        reply = ask(ws, {"image": np.ascontiguousarray(frame[..., ::-1]), "prompt": "reach the bottle on the left"})
        local = policy.infer(frame)
        assert reply["actions"].dtype == np.float32 and reply["actions"].shape == (10, 2)
        assert np.array_equal(reply["actions"], local.chunk)
        assert reply["server_timing"]["infer_ms"] > 0 and "vision" in reply["policy_timing"]
    ws.close()


def test_feature_requests_are_stateless_and_equal_the_onboard_encoder(server, onboard, tiny_bundle):
    from runtime.policy.preprocess import resize_rgb

    policy = onboard()
    ws, _ = open_client(server.url)
    for frame in robot_frames(4, 3, 720, 1280):
        rgb = resize_rgb(frame, "bgr", 224, "rgb")
        reply = ask(ws, {"type": "feature", "image": rgb, "id": 7})
        feature, _ = policy.encode(frame)
        assert reply["id"] == 7 and np.array_equal(reply["feature"], feature)
    ws.close()


def test_named_robots_keep_their_ring_across_connections_with_its_token_and_reset_empties_it(server, onboard):
    frames = robot_frames(5, 4)
    policy = onboard()
    expected = [policy.infer(f).chunk for f in frames]
    token = None
    for i, frame in enumerate(frames):  # a new connection for every frame: the ring is the robot's, not the link's
        ws, _ = open_client(server.url)
        reply = ask(ws, {"image": np.ascontiguousarray(frame[..., ::-1]), "robot_id": "r-ring", "robot_token": token})
        ws.close()
        assert reply["ring"] == ("new" if i == 0 else "kept") and reply["robot_id"] == "r-ring"
        token = reply["robot_token"]
        assert np.array_equal(reply["actions"], expected[i])
    ws, _ = open_client(server.url)
    assert ask(ws, {"type": "reset", "robot_id": "r-ring", "robot_token": token})["reset"] is True
    again = ask(ws, {"image": np.ascontiguousarray(frames[0][..., ::-1]), "robot_id": "r-ring"})
    assert again["ring"] == "kept" and np.array_equal(again["actions"], expected[0])
    reset = ask(ws, {"image": np.ascontiguousarray(frames[0][..., ::-1]), "robot_id": "r-ring", "reset": True})
    assert reset["ring"] == "reset" and np.array_equal(reset["actions"], expected[0])
    ws.close()


def test_api_key_is_required_when_set(engine):
    from websockets.exceptions import InvalidStatus

    from serve.server import ServerConfig, ServerThread

    with ServerThread(engine, ServerConfig(port=0, api_key="s3cret")) as running:
        with pytest.raises(InvalidStatus) as e:
            open_client(running.url)
        assert e.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            open_client(running.url, additional_headers={"Authorization": "Api-Key wrong"})
        ws, meta = open_client(running.url, additional_headers={"Authorization": "Api-Key s3cret"})
        assert meta["protocol_version"] == PROTOCOL_VERSION
        ws.close()


def test_eight_robots_at_once_get_exactly_what_each_gets_alone(server):
    """8 robots, 12 frames each, at their own pace on their own connections: every chunk bit-identical to the
    same robot served alone; the round trips and the server's step time are what docs/performance.md quotes."""
    robots = {i: [np.ascontiguousarray(f[..., ::-1]) for f in robot_frames(100 + i, 12)] for i in range(8)}

    def run(i, tag, out, rtts=None):
        ws, _ = open_client(server.url)
        chunks = []
        for frame in robots[i]:
            t0 = time.perf_counter()
            reply = ask(ws, {"image": frame, "prompt": f"robot {i % 2}", "robot_id": f"{tag}-{i}"})
            if rtts is not None:
                rtts.append((time.perf_counter() - t0, reply["server_timing"]["infer_ms"]))
            chunks.append(reply["actions"])
        ws.close()
        out[i] = chunks

    alone: dict = {}
    for i in robots:
        run(i, "alone", alone)
    together: dict = {}
    rtts: list = []
    threads = [threading.Thread(target=run, args=(i, "together", together, rtts)) for i in robots]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(together) == list(robots)
    for i in robots:
        assert all(np.array_equal(a, b) for a, b in zip(alone[i], together[i]))
    assert len(rtts) == 8 * 12
    rtt = np.array([r for r, _ in rtts]) * 1e3
    print(f"8 robots: round trip p50 {np.percentile(rtt, 50):.1f} ms p99 {np.percentile(rtt, 99):.1f} ms; "
          f"server step p50 {np.percentile([s for _, s in rtts], 50):.1f} ms")


def test_ten_thousand_malformed_messages_leave_the_server_serving_everyone(server, onboard):
    """Fuzz: 10^4 broken, mistyped or oversize messages on one connection, each answered with an error, while
    another robot drives on its own connection and gets exactly the onboard chunks."""
    rng = np.random.default_rng(0)
    good = packb({"image": np.zeros((8, 8, 3), np.uint8)})

    def broken(k: int):
        kind = k % 10
        if kind == 0:
            return bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8))  # random bytes
        if kind == 1:
            data = bytearray(good)
            for _ in range(3):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            return bytes(data)  # flipped bytes in a valid message
        if kind == 2:
            return good[: int(rng.integers(1, len(good)))]  # truncated
        if kind == 3:
            return msgpack.packb({"image": {b"__ndarray__": True, b"data": b"\0" * 5, b"dtype": "<f4",
                                            b"shape": [1 << 40, 1 << 40]}})  # a shape that lies
        if kind == 4:
            return msgpack.packb({"image": {b"__ndarray__": True, b"data": b"x", b"dtype": "|O", b"shape": [1]}})
        if kind == 5:
            return packb({"image": np.zeros((4, 4), np.float64), "prompt": 3})  # wrong types
        if kind == 6:
            return packb({"type": "teleport", "id": "x"})
        if kind == 7:
            return packb([1, 2, 3])  # not a map
        if kind == 8:
            return "text, not binary"
        return packb({"image": np.zeros((8, 8, 3), np.uint8), "prompt": "x" * 2000})  # an instruction too long

    ws, _ = open_client(server.url)
    results: dict = {}
    policy = onboard("robot other")

    def drive():
        ws2, _ = open_client(server.url)
        chunks = [ask(ws2, {"image": np.ascontiguousarray(f[..., ::-1]), "prompt": "robot other"})["actions"]
                  for f in robot_frames(9, 20)]
        ws2.close()
        results["chunks"] = chunks

    other = threading.Thread(target=drive)
    other.start()
    errors = 0
    for k in range(10_000):
        ws.send(broken(k))
        reply = ws.recv(timeout=10)
        if isinstance(reply, str):
            assert "error" in json.loads(reply)
            errors += 1
        else:  # a flipped byte may leave a valid request (a changed pixel): then it is served as one
            assert k % 10 == 1 and unpackb(reply)["actions"].shape == (10, 2), f"message {k}"
    other.join(60)
    assert errors >= 9_000
    expected = [policy.infer(f).chunk for f in robot_frames(9, 20)]
    assert all(np.array_equal(a, b) for a, b in zip(results["chunks"], expected))
    assert ask(ws, {"image": np.zeros((8, 8, 3), np.uint8)})["actions"].shape == (10, 2)  # the fuzzed link still works
    ws.close()


def test_a_message_over_the_limit_closes_only_that_connection(server):
    from websockets.exceptions import ConnectionClosed

    ws, _ = open_client(server.url)
    ws.send(b"\0" * ((1 << 20) + 1))
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(timeout=10)
    assert e.value.rcvd.code == 1009  # message too big
    ws2, meta = open_client(server.url)
    assert ask(ws2, {"type": "metadata"})["window"] == meta["window"]
    ws2.close()


def test_the_server_cli_refuses_a_missing_bundle(tmp_path):
    from tests.conftest import run_python

    out = run_python("-m", "serve", "--bundle", str(tmp_path / "nope"), timeout=60)
    assert out.returncode == 1 and "error:" in out.stderr and "nope" in out.stderr


def test_the_server_cli_serves_health_on_the_port_it_was_given(tiny_bundle_dir):
    from tests.helpers.server import free_port, start_server

    port = free_port()
    proc = start_server(tiny_bundle_dir, port)  # returns once /healthz answers on that port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            assert r.read() == b"OK\n"
    finally:
        proc.terminate()
        proc.wait(10)


def test_workers_share_the_cores_instead_of_each_taking_them_all(engine):
    """Two workers on ONNX Runtime each get their share of the process's cores (each session's default takes
    them all: 4 compute threads on 2 cores, and one client's large images slowed every robot's reply); one
    worker keeps ONNX Runtime's default."""
    import os

    from serve.engine import worker_threads

    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    assert [b.threads for b in engine.backends] == [share] * 2
    assert worker_threads(1) is None and worker_threads(cores * 2) == 1
    for backend in engine.backends:  # what each ONNX Runtime session was given
        assert len(backend.sessions) == 3
        assert {s.get_session_options().intra_op_num_threads for s in backend.sessions.values()} == {share}


def test_a_ray_replica_computes_on_the_cpus_ray_counts_for_it(tiny_bundle_dir):
    """serve.ray_app's replica (the class Ray Serve deploys, made here without Ray): its ONNX Runtime sessions get
    the one CPU Ray counts for it, not every core of the node its neighbours share."""
    from serve.ray_app import REPLICA_CPUS, GraphReplica

    replica = GraphReplica(str(tiny_bundle_dir), "ort-cpu", "fp32")
    try:
        options = {s.get_session_options().intra_op_num_threads for s in replica.backend.sessions.values()}
        assert options == {REPLICA_CPUS} == {1}
    finally:
        replica.backend.deactivate()
