"""Serve a bundle to robots over a websocket (protocol and deployment: docs/serving.md).

    python -m serve --bundle bundle/                                   # ws://127.0.0.1:8000, ONNX Runtime on the CPU
    python -m serve --bundle bundle/ --backend trt --host 0.0.0.0 --port 8000 --api-key "$KEY"
    curl http://127.0.0.1:8000/healthz                                 # OK

Robots connect with `python -m runtime.drive --policy ws://HOST:8000 --fallback-bundle bundle/`
(features from here, their own ring and head), or with openpi-client's
WebsocketClientPolicy (image + prompt in, actions out; this server keeps the ring).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.base import BackendError
from runtime.policy.backends.registry import BACKENDS
from runtime.policy.bundle import BundleError, load_bundle
from serve.engine import Engine, EngineConfig
from serve.server import PolicyServer, ServerConfig

log = logging.getLogger("serve")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="bundle folder from export.to_onnx")
    ap.add_argument("--backend", default=EngineConfig.backend, choices=BACKENDS)
    ap.add_argument("--variant", default=EngineConfig.variant, help="ONNX variant (fp32, fp16, int8)")
    ap.add_argument("--workers", type=int, default=EngineConfig.workers,
                    help="inference threads, each with its own backend")
    ap.add_argument("--host", default=ServerConfig.host, help="bind address (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=ServerConfig.port)
    ap.add_argument("--api-key", default=ServerConfig.api_key,
                    help="require 'Authorization: Api-Key KEY' on every connection")
    ap.add_argument("--max-message-bytes", type=int, default=ServerConfig.max_message_bytes)
    ap.add_argument("--verify", choices=("quick", "full"), default="quick", help="bundle check at start")
    add_log_level_argument(ap)
    return ap


@exits_on(BundleError, BackendError, OSError)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    bundle = load_bundle(args.bundle, verify=args.verify)
    engine = Engine(bundle, EngineConfig(args.backend, args.variant, args.workers))
    config = ServerConfig(args.host, args.port, args.api_key, args.max_message_bytes,
                          max(ServerConfig.hard_limit_bytes, 4 * args.max_message_bytes))
    try:
        asyncio.run(PolicyServer(engine, config).serve_forever())
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
