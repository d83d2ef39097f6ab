"""The policy server scaled out with Ray Serve (local cluster, CPU): simulated robots drive through two replicas."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.server import free_port

ray = pytest.importorskip("ray", reason="Ray Serve is the fleet extra: pip install -e '.[serve,fleet]'")


@pytest.mark.slow
def test_ray_serve_replicas_serve_simulated_robots_bit_identical_to_onboard(tiny_bundle_dir, tiny_bundle, onboard):
    """Two Ray Serve replicas behind the websocket front; 4 robots' clients (runtime.policy.remote) drive 8 frames
    each: every step from the server, every chunk equal to the onboard policy's; both replicas running."""
    import threading

    from ray import serve

    from runtime.policy.backends.registry import make_backend
    from runtime.policy.remote import RemoteConfig, RemoteEncoder, RemotePolicy
    from runtime.policy.wire import model_identity
    from serve.ray_app import RayEngine, start
    from serve.server import ServerConfig, ServerThread
    from tests.serve.conftest import robot_frames

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 << 20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        handle = start(tiny_bundle_dir, replicas=2)
        engine = RayEngine(tiny_bundle, handle, replicas=2)
        results, errors = {}, []
        with ServerThread(engine, ServerConfig(port=0)) as running, make_backend(tiny_bundle, "ort-cpu") as local:
            def robot(i):
                try:
                    encoder = RemoteEncoder(RemoteConfig(running.url, timeout=10.0),
                                            expected_model=model_identity(tiny_bundle.manifest)).start()
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
        replicas = serve.status().applications["mobile_vla_features"].deployments["mobile_vla_features"]
        assert replicas.replica_states.get("RUNNING") == 2
    finally:
        serve.shutdown()
        ray.shutdown()
