"""The policy server (`python -m serve`) as a process of its own, on a free loopback port.

    from tests.helpers.server import free_port, start_server
    port = free_port()
    proc = start_server(tiny_bundle_dir, port)  # returns once http://127.0.0.1:PORT/healthz answers
    ...
    proc.kill(); proc.wait()
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

from tests.helpers.processes import start_drive


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(bundle_dir, port: int, *args, timeout: float = 60) -> subprocess.Popen:
    """`python -m serve --bundle BUNDLE --port PORT ARGS`, once its /healthz answers; stdout is dropped,
    stderr a text pipe. Killed, and RuntimeError raised with its stderr, if it is not up within `timeout`."""
    proc = start_drive("--bundle", str(bundle_dir), "--port", str(port), "--log-level", "warning", *args,
                       module="serve", stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"server did not start: {proc.communicate()[1]}") from None
            time.sleep(0.1)
