"""The server's command-line options, shared by `python -m serve` and `python -m serve.ray_app`.

    ap = argparse.ArgumentParser(); add_server_arguments(ap)
    args = ap.parse_args()
    config = server_config_from_args(args)       # a ServerConfig; CommandError for an exposed server without a key
    rings = ring_config_from_args(args)

Secure by default: the server binds 127.0.0.1 unless `--host` says
otherwise, and refuses to listen on any other address without a key
(`--api-key-file FILE` or the MOBILE_VLA_API_KEY environment variable;
`--insecure` to serve a trusted network without one). A key given with
`--api-key` works but is visible to every user of the machine (`ps`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging

from runtime.cli import CommandError
from runtime.policy.wire import API_KEY_ENV, read_api_key
from serve.rings import RingConfig
from serve.server import ServerConfig

log = logging.getLogger(__name__)


def add_server_arguments(ap: argparse.ArgumentParser) -> None:
    d = ServerConfig
    ap.add_argument("--host", default=d.host,
                    help="bind address (default: loopback); any other address needs a key or --insecure")
    ap.add_argument("--port", type=int, default=d.port)
    ap.add_argument("--api-key-file", metavar="FILE",
                    help=f"require 'Authorization: Api-Key KEY' with the key in FILE (default: ${API_KEY_ENV})")
    ap.add_argument("--api-key", help="the key itself (visible in ps: prefer --api-key-file or the environment)")
    ap.add_argument("--insecure", action="store_true", help="serve a non-loopback --host without a key")
    ap.add_argument("--certfile", help="TLS certificate chain (PEM): serve wss:// and https://")
    ap.add_argument("--keyfile", help="the certificate's private key (PEM)")
    ap.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes,
                    help="larger messages close their connection before being buffered")
    ap.add_argument("--max-connections", type=int, default=d.max_connections,
                    help="connections at once; more are refused with HTTP 503")
    ap.add_argument("--send-timeout", type=float, default=d.send_timeout_s,
                    help="s: a client that takes no reply for this long is dropped")
    ap.add_argument("--ready-period", type=float, default=d.ready_period_s,
                    help="s: /readyz answers 200 only when a worker finished an inference within this")
    ap.add_argument("--ring-ttl", type=float, default=RingConfig.ttl_s,
                    help="s an idle robot's ring is kept after its connection closed (actions mode)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    try:
        key = args.api_key or read_api_key(args.api_key_file)
    except ValueError as e:
        raise CommandError(f"--api-key-file: {e}") from None
    if args.api_key:
        log.warning("--api-key puts the key on the command line, where every user of this machine can read it "
                    "(ps): use --api-key-file FILE or the %s environment variable", API_KEY_ENV)
    if not is_loopback(args.host) and key is None and not args.insecure:
        raise CommandError(f"--host {args.host} listens beyond this machine, and no key is set: anyone who reaches "
                           f"it could drive your robots' policy. Give a key (--api-key-file FILE, or the "
                           f"{API_KEY_ENV} environment variable; robots send it with --policy-api-key-file), or "
                           f"pass --insecure on a network you trust")
    if bool(args.certfile) != bool(args.keyfile):
        raise CommandError("--certfile and --keyfile go together (the certificate and its private key)")
    if not is_loopback(args.host) and not args.certfile:
        log.warning("serving %s without TLS: the key and the frames cross the network in the clear "
                    "(--certfile/--keyfile, or a TLS proxy: docs/serving.md)", args.host)
    return ServerConfig(args.host, args.port, key, args.max_message_bytes, args.max_connections, args.send_timeout,
                        args.ready_period, args.certfile, args.keyfile)


def ring_config_from_args(args: argparse.Namespace) -> RingConfig:
    return RingConfig(ttl_s=args.ring_ttl)
