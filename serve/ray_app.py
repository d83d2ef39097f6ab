"""The policy server scaled out with Ray Serve: feature replicas on every GPU/machine, one websocket front.

    pip install -e '.[serve,fleet]'
    python -m serve.ray_app --bundle bundle/ --replicas 2 [--backend trt] [--gpus-per-replica 1] [--port 8000]

Each replica is a Ray Serve deployment holding the bundle's engines
(`serve.engine.Engine`, one backend); Ray places them on the cluster's
GPUs and machines (`ray start --head` here, `ray start --address ...` on the
others). The front is the same websocket server as `python -m serve` (same
protocol, health, key, error replies), whose `feature` requests go to any
replica through the deployment handle, so robots connect exactly as before.
Features are stateless, so no robot is tied to a replica; `actions` mode
(a ring per robot on the server) is refused here with an error naming
`python -m serve`, which serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.bundle import BundleError, load_bundle
from serve.engine import Engine, EngineConfig
from serve.protocol import ProtocolError
from serve.server import PolicyServer, ServerConfig

log = logging.getLogger(__name__)
DEPLOYMENT = "mobile_vla_features"


class FeatureReplica:
    """One replica: the bundle's engines behind `feature` (made a Ray Serve deployment by `deployment()`)."""

    def __init__(self, bundle_dir: str, backend: str, variant: str):
        self.engine = Engine(load_bundle(Path(bundle_dir)), EngineConfig(backend=backend, variant=variant))

    def feature(self, rgb, prompt):
        return self.engine.feature(rgb, prompt)

    def describe(self) -> str:
        return self.engine.describe()


def deployment(replicas: int, gpus_per_replica: float = 0.0):
    from ray import serve

    return serve.deployment(FeatureReplica, name=DEPLOYMENT, num_replicas=replicas,
                            ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": 1})


class RayEngine:
    """What PolicyServer needs from an engine, with `feature` sent to a Ray Serve deployment's replicas."""

    def __init__(self, bundle, handle, replicas: int, config: EngineConfig = EngineConfig()):
        self.bundle, self.handle, self.replicas = bundle, handle, replicas
        self.config = replace(config, workers=max(config.workers, 4 * replicas))  # calls in flight, not compute
        self.executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="ray-call")
        self._described = handle.describe.remote().result()

    def describe(self) -> str:
        return f"Ray Serve, {self.replicas} x {self._described}"

    def feature(self, rgb, prompt):
        return self.handle.feature.remote(rgb, prompt).result()

    def actions(self, robot_id, rgb, prompt, reset=False):
        raise ProtocolError("actions mode keeps a ring per robot on one server: use python -m serve for it; "
                            "this Ray Serve front answers feature requests")

    def reset(self, robot_id: str) -> bool:
        return False

    def drop(self, robot_id: str) -> None:
        pass

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def start(bundle_dir: Path, replicas: int, backend: str = "ort-cpu", variant: str = "fp32",
          gpus_per_replica: float = 0.0):
    """Deploy the replicas on the running Ray cluster (ray.init first); returns the deployment handle."""
    from ray import serve

    app = deployment(replicas, gpus_per_replica).bind(str(bundle_dir), backend, variant)
    return serve.run(app, name=DEPLOYMENT, route_prefix=None)


@exits_on(BundleError, OSError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serve.ray_app", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--gpus-per-replica", type=float, default=0.0)
    ap.add_argument("--backend", default=EngineConfig.backend)
    ap.add_argument("--variant", default=EngineConfig.variant)
    ap.add_argument("--address", help="an existing Ray cluster (default: start one here)")
    ap.add_argument("--host", default=ServerConfig.host)
    ap.add_argument("--port", type=int, default=ServerConfig.port)
    ap.add_argument("--api-key", default=ServerConfig.api_key)
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    import ray

    bundle = load_bundle(args.bundle)
    ray.init(address=args.address)
    handle = start(args.bundle.resolve(), args.replicas, args.backend, args.variant, args.gpus_per_replica)
    engine = RayEngine(bundle, handle, args.replicas, EngineConfig(args.backend, args.variant))
    try:
        asyncio.run(PolicyServer(engine, ServerConfig(args.host, args.port, args.api_key)).serve_forever())
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        engine.close()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
