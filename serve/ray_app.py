"""The policy server scaled out with Ray Serve: replicas of the graphs on every GPU/machine, one websocket front.

    pip install -e '.[serve,fleet]'
    python -m serve.ray_app --bundle bundle/      # 2 replicas here, ws://127.0.0.1:8000, like python -m serve
    python -m serve.ray_app --bundle bundle/ --replicas 4 --gpus-per-replica 1 --backend ort-cuda \\
        --address auto --host 0.0.0.0 --api-key-file /etc/mobile-vla/key

Each replica is a Ray Serve deployment holding the bundle's engines (one
backend); Ray places them on the cluster's GPUs and machines (`ray start
--head` here, `ray start --address ...` on the others; without `--address`
a local Ray instance is started, its node on 127.0.0.1). The front is the
same websocket server as `python -m serve` (same protocol, health,
readiness, keys, limits, error replies) on an `Engine` whose workers are
proxies to the replicas: the front preprocesses, keeps each connection's
ring (actions mode: openpi-client works), and sends vision + language and
the head to any replica. Ray Serve's own HTTP proxy is not started
(`proxy_location="Disabled"`): the websocket front is the only ingress, so
`--port` (8000 by default) is free for it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.base import Backend, BackendError
from runtime.policy.backends.registry import BACKENDS, make_backend
from runtime.policy.bundle import BundleError, load_bundle
from serve.engine import Engine, EngineConfig
from serve.options import add_server_arguments, ring_config_from_args, server_config_from_args
from serve.server import PolicyServer

log = logging.getLogger(__name__)
DEPLOYMENT = "mobile_vla_features"
# the CPUs Ray counts for a replica, and the compute threads its ONNX Runtime sessions get: Ray does not hold a
# process to its count, and a session's default takes every core (serve.engine.worker_threads)
REPLICA_CPUS = 1


class GraphReplica:
    """One replica: the bundle's engines, stateless calls only (made a Ray Serve deployment by `deployment()`)."""

    def __init__(self, bundle_dir: str, backend: str, variant: str, batched: bool = False):
        self.backend = make_backend(load_bundle(Path(bundle_dir)), backend, variant=variant, threads=REPLICA_CPUS,
                                    batched=batched)
        self.backend.activate()

    def encode_frames(self, pixels, input_ids, attention_mask):
        features = self.backend.encode_frames(pixels, input_ids, attention_mask)
        return features, dict(self.backend.timings)

    def predict_chunk(self, features):
        return self.backend.predict_chunk(features), dict(self.backend.timings)

    def describe(self) -> dict:
        return {"describe": self.backend.describe(), "identity": self.backend.identity(),
                "max_batch": self.backend.max_batch}


def deployment(replicas: int, gpus_per_replica: float = 0.0):
    from ray import serve  # noqa: PLC0415  ray: the fleet extra only

    return serve.deployment(GraphReplica, name=DEPLOYMENT, num_replicas=replicas,
                            ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": REPLICA_CPUS})


class ReplicaBackend(Backend):
    """A backend whose graphs run on whichever replica Ray Serve picks: the front's workers hold one each."""

    name = "ray-serve"

    def __init__(self, bundle, handle, described: dict):
        super().__init__(bundle, described["identity"]["variant"])
        self.handle, self._described = handle, described
        self.active = True

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _run(self, graph, feeds):
        raise NotImplementedError("graphs run on the replicas")

    @property
    def max_batch(self) -> int:
        return int(self._described["max_batch"])

    def identity(self) -> dict:
        return self._described["identity"]

    def describe(self) -> str:
        return f"Ray Serve ({self._described['describe']})"

    def encode_frame(self, pixels, input_ids, attention_mask) -> np.ndarray:
        return self.encode_frames(pixels, input_ids, attention_mask)

    def encode_frames(self, pixels, input_ids, attention_mask) -> np.ndarray:
        features, self.timings = self.handle.encode_frames.remote(pixels, input_ids, attention_mask).result()
        return features

    def predict_chunk(self, features) -> np.ndarray:
        chunk, self.timings = self.handle.predict_chunk.remote(np.ascontiguousarray(features)).result()
        return chunk


def start(bundle_dir: Path, replicas: int, backend: str = "ort-cpu", variant: str = "fp32",
          gpus_per_replica: float = 0.0, batched: bool = False):
    """Deploy the replicas on the running Ray cluster (ray.init first), with no HTTP proxy of Ray's own;
    returns the deployment handle."""
    from ray import serve  # noqa: PLC0415  ray: the fleet extra only

    serve.start(proxy_location="Disabled")  # the websocket front is the ingress: Ray's proxy would take port 8000
    app = deployment(replicas, gpus_per_replica).bind(str(bundle_dir), backend, variant, batched)
    return serve.run(app, name=DEPLOYMENT, route_prefix=None)


def front_engine(bundle, handle, replicas: int, config: EngineConfig = EngineConfig()) -> Engine:
    """An Engine on the front whose workers call the replicas (4 calls in flight per replica: the front's
    workers wait on the network, they do not compute)."""
    described = handle.describe.remote().result()
    workers = max(config.workers, 4 * replicas)
    backends = [ReplicaBackend(bundle, handle, described) for _ in range(workers)]
    return Engine(bundle, replace(config, workers=workers), backends=backends)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m serve.ray_app", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = EngineConfig
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--gpus-per-replica", type=float, default=0.0)
    ap.add_argument("--backend", default=d.backend, choices=BACKENDS)
    ap.add_argument("--variant", default=d.variant)
    ap.add_argument("--max-batch", type=int, default=d.max_batch,
                    help="frames run in one replica call (needs a bundle exported with --serve-batch)")
    ap.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms)
    ap.add_argument("--address", help="an existing Ray cluster ('auto', or HOST:PORT; default: start one here, "
                                      "on 127.0.0.1)")
    add_server_arguments(ap)
    add_log_level_argument(ap)
    return ap


@exits_on(BundleError, BackendError, OSError, ValueError)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    config = server_config_from_args(args)
    import ray  # noqa: PLC0415  ray: ~2 s; the fleet extra only

    bundle = load_bundle(args.bundle)
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:  # a Ray of our own: its node on loopback, no dashboard
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    engine = None
    try:
        handle = start(args.bundle.resolve(), args.replicas, args.backend, args.variant, args.gpus_per_replica,
                       batched=args.max_batch > 1)
        engine = front_engine(bundle, handle, args.replicas,
                              EngineConfig(args.backend, args.variant, max_batch=args.max_batch,
                                           batch_window_ms=args.batch_window_ms, rings=ring_config_from_args(args)))
        asyncio.run(PolicyServer(engine, config).serve_forever())
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        if engine is not None:
            engine.close()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
