"""The policy server scaled out with Ray Serve (local cluster, CPU): robots and openpi-client through two replicas."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is the fleet extra: pip install -e '.[serve,fleet]'")


@pytest.mark.slow  # ~40 s: a local Ray and two replicas on 2 cores
def test_ray_serve_replicas_serve_simulated_robots_bit_identical_to_onboard(tiny_bundle_dir, tiny_bundle, onboard):
    """Two Ray Serve replicas behind the websocket front; 4 robots' clients (runtime.policy.remote) drive 8 frames
    each: every step from the server, every chunk equal to the onboard policy's; both replicas running; Ray's own
    HTTP proxy not started."""
    import threading

    from ray import serve

    from runtime.policy.backends.registry import make_backend
    from runtime.policy.remote import RemotePolicy
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    from runtime.policy.wire import model_identity
    from serve.ray_app import front_engine, start
    from serve.server import ServerConfig, ServerThread
    from tests.serve.conftest import robot_frames

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 << 20, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        handle = start(tiny_bundle_dir, replicas=2)
        engine = front_engine(tiny_bundle, handle, replicas=2)
        results, errors = {}, []
        with ServerThread(engine, ServerConfig(port=0)) as running, make_backend(tiny_bundle, "ort-cpu") as local:
            reference = OnboardReference(tiny_bundle, local)

            def robot(i):
                try:
                    encoder = RemoteEncoder(RemoteConfig(running.url, timeout=10.0, max_slowdown=float("inf")),
                                            model_identity(tiny_bundle.manifest), reference).start()
                    policy = RemotePolicy(tiny_bundle, local, encoder, instruction=f"robot {i}")
                    out = []
                    for frame in robot_frames(200 + i, 8):
                        step = policy.infer(frame)
                        out.append((policy.source, step.chunk))
                    encoder.close()
                    results[i] = out
                except Exception as e:  # reported below
                    errors.append(e)

            threads = [threading.Thread(target=robot, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
        engine.close()
        assert not errors, errors
        for i, out in results.items():
            policy = onboard(f"robot {i}")
            expected = [policy.infer(f).chunk for f in robot_frames(200 + i, 8)]
            assert [s for s, _ in out] == ["remote"] * 8
            assert all(np.array_equal(c, e) for (_, c), e in zip(out, expected))
        status = serve.status()
        replicas = status.applications["mobile_vla_features"].deployments["mobile_vla_features"]
        assert replicas.replica_states.get("RUNNING") == 2
        assert not status.proxies  # no HTTP proxy of Ray's own: the websocket front is the only ingress
    finally:
        serve.shutdown()
        ray.shutdown()


def port_8000_taken() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            return True
    return False


@pytest.mark.slow  # ~60 s: the command starts its own Ray, two replicas, then openpi-client's venv
def test_the_documented_fleet_command_serves_a_real_openpi_client(tiny_bundle_dir, onboard, tmp_path):
    """`python -m serve.ray_app --bundle B` and nothing else: it starts (Ray's proxy does not take port 8000),
    listens on 127.0.0.1:8000 only, advertises the modes it serves, and openpi-client's WebsocketClientPolicy
    gets the onboard policy's actions (the front keeps its ring); SIGTERM stops it and its Ray."""
    import shutil
    import signal
    import sys

    from tests.helpers.openpi import OPENPI_ACTIONS_SCRIPT, openpi_python
    from tests.helpers.processes import ROOT
    from tests.serve.conftest import robot_frames

    if port_8000_taken():
        pytest.skip("127.0.0.1:8000, the documented default port, is in use by another process on this machine")
    python = openpi_python()
    frames = robot_frames(12, 5)
    np.save(tmp_path / "frames.npy", np.stack([f[..., ::-1] for f in frames]))
    log = open(tmp_path / "ray_app.log", "w")  # a file, not a pipe: nobody reads it while it serves
    proc = subprocess.Popen([sys.executable, "-m", "serve.ray_app", "--bundle", str(tiny_bundle_dir)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8000/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "ray_app.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "python -m serve.ray_app did not become ready in 240 s"
            time.sleep(0.5)
        if shutil.which("ss"):
            listening = subprocess.run(["ss", "-ltnH", "sport = :8000"], capture_output=True, text=True).stdout
            assert "127.0.0.1:8000" in listening and "0.0.0.0:8000" not in listening and "*:8000" not in listening
        out = subprocess.run([python, "-c", OPENPI_ACTIONS_SCRIPT, "ws://127.0.0.1:8000", "", str(tmp_path /
                              "frames.npy"), str(tmp_path / "actions.npy")], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout.strip().splitlines()[-1])
        assert info["modes"] == ["actions", "feature"]
        policy = onboard("reach the bottle on the left")
        assert np.array_equal(np.load(tmp_path / "actions.npy"), np.stack([policy.infer(f).chunk for f in frames]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
