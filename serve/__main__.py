"""Serve a bundle to robots over a websocket (protocol and deployment: docs/serving.md).

    python -m serve --bundle bundle/                                   # ws://127.0.0.1:8000, ONNX Runtime on the CPU
    python -m serve --bundle bundle/ --backend trt --host 0.0.0.0 --api-key-file /etc/mobile-vla/key
    python -m serve --bundle bundle/ --max-batch 8 --batch-window-ms 2 # batch robots' frames (--serve-batch bundle)
    curl http://127.0.0.1:8000/healthz                                 # OK (liveness)
    curl http://127.0.0.1:8000/readyz                                  # 200 once a worker answers within its period

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
from serve.options import add_server_arguments, ring_config_from_args, server_config_from_args
from serve.server import PolicyServer

log = logging.getLogger("serve")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    d = EngineConfig
    ap.add_argument("--bundle", type=Path, required=True, help="bundle folder from export.to_onnx")
    ap.add_argument("--backend", default=d.backend, choices=BACKENDS)
    ap.add_argument("--variant", default=d.variant, help="ONNX variant (fp32, fp16, int8)")
    ap.add_argument("--workers", type=int, default=d.workers,
                    help="inference threads, each with its own backend (on ONNX Runtime they share the cores: "
                         "cores / workers compute threads each)")
    ap.add_argument("--max-batch", type=int, default=d.max_batch,
                    help="frames of different robots run in one call (needs a bundle exported with --serve-batch)")
    ap.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                    help="ms a worker waits for more frames after the first (with --max-batch)")
    add_server_arguments(ap)
    ap.add_argument("--verify", choices=("quick", "full"), default="quick", help="bundle check at start")
    add_log_level_argument(ap)
    return ap


@exits_on(BundleError, BackendError, OSError, ValueError)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    config = server_config_from_args(args)  # refuses an exposed server without a key before loading anything
    bundle = load_bundle(args.bundle, verify=args.verify)
    engine = Engine(bundle, EngineConfig(args.backend, args.variant, args.workers, args.max_batch,
                                         args.batch_window_ms, rings=ring_config_from_args(args)))
    try:
        asyncio.run(PolicyServer(engine, config).serve_forever())
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
