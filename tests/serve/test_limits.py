"""The server under load and abuse: deadlines, the connection cap, message size, a client that never reads,
readiness, memory."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from runtime.policy.wire import packb, unpackb


def open_client(url, **kw):
    from websockets.sync.client import connect

    ws = connect(url, compression=None, max_size=None, **kw).__enter__()
    return ws, unpackb(ws.recv(timeout=10))


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_ready(running, timeout: float = 5.0) -> None:
    """Until /readyz answers 200: the grey frame the server sends through its workers at start has run."""
    base = running.url.replace("ws://", "http://")
    deadline = time.monotonic() + timeout
    while http_get(base + "/readyz")[0] != 200:
        assert time.monotonic() < deadline, http_get(base + "/readyz")
        time.sleep(0.02)


@pytest.fixture
def slow_device(tiny_bundle):
    """A server engine with one worker on a device whose vision takes 200 ms more."""
    from serve.engine import Engine, EngineConfig
    from tests.helpers.slow_backend import DelayedBackend

    device = DelayedBackend(tiny_bundle, delay=0.2).activate()
    engine = Engine(tiny_bundle, EngineConfig(workers=1), backends=[device])
    yield engine, device
    device.release.set()
    engine.close()


def test_a_request_whose_deadline_passes_while_it_waits_is_never_computed(slow_device):
    """4 robots ask at once, each willing to wait 100 ms, one worker taking 200 ms a frame: the first is
    computed, the three behind it expire in the queue and are answered with a 'deadline' error, never run."""
    from serve.server import ServerConfig, ServerThread

    engine, device = slow_device
    with ServerThread(engine, ServerConfig(port=0)) as running:
        wait_ready(running)
        clients = [open_client(running.url)[0] for _ in range(4)]
        device.vision_runs = 0
        frame = np.zeros((224, 224, 3), np.uint8)
        for k, ws in enumerate(clients):
            ws.send(packb({"type": "feature", "image": frame, "id": k, "deadline_ms": 100}))
        replies = [ws.recv(timeout=10) for ws in clients]
        for ws in clients:
            ws.close()
    errors = [json.loads(r) for r in replies if isinstance(r, str)]
    assert len(errors) == 3 and all(e["code"] == "deadline" and "not computed" in e["error"] for e in errors)
    assert device.vision_runs == 1 and engine.expired == 3


def test_readyz_goes_unready_within_its_period_when_the_workers_are_stuck_and_healthz_stays(slow_device):
    from serve.server import ServerConfig, ServerThread

    engine, device = slow_device
    device.delay = 0.0
    device.hang.set()  # the device is stuck from the start: the first grey frame never finishes
    with ServerThread(engine, ServerConfig(port=0, ready_period_s=0.4)) as running:
        base = running.url.replace("ws://", "http://")
        status, text = http_get(base + "/readyz")
        assert status == 503 and "since the start" in text  # no inference yet: not ready
        device.release.set()
        wait_ready(running)
        device.release.clear()  # stuck again: the next frame a worker takes never finishes
        ws, _ = open_client(running.url)
        ws.send(packb({"type": "feature", "image": np.zeros((8, 8, 3), np.uint8)}))  # the worker takes it, sticks
        stuck = time.monotonic()
        while http_get(base + "/readyz")[0] == 200 and time.monotonic() - stuck < 5:
            time.sleep(0.02)
        unready_after = time.monotonic() - stuck
        status, text = http_get(base + "/readyz")
        assert status == 503 and "not ready" in text
        assert unready_after <= 0.4 + 0.3, f"unready only after {unready_after:.2f} s (period 0.4 s)"
        assert http_get(base + "/healthz") == (200, "OK\n")
        device.release.set()
        assert "feature" in unpackb(ws.recv(timeout=10))
        wait_ready(running)
        ws.close()


def test_connections_over_the_cap_are_refused_at_the_handshake(engine):
    from websockets.exceptions import InvalidStatus

    from serve.server import ServerConfig, ServerThread

    with ServerThread(engine, ServerConfig(port=0, max_connections=2)) as running:
        a, _ = open_client(running.url)
        b, _ = open_client(running.url)
        with pytest.raises(InvalidStatus) as e:
            open_client(running.url)
        assert e.value.response.status_code == 503 and b"server full" in e.value.response.body
        a.close()
        deadline = time.monotonic() + 5
        while running.server.connections > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        c, meta = open_client(running.url)
        assert meta["max_connections"] == 2
        b.close()
        c.close()


@pytest.mark.slow  # ~4 s: ~3000 replies fill loopback's socket buffers first
def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(engine):
    """A client asks for metadata over and over and never reads: once its replies fill the socket buffers the
    server waits send_timeout, then drops it; another client is served after."""
    import socket

    from websockets.sync.client import connect

    from serve.server import ServerConfig, ServerThread

    with ServerThread(engine, ServerConfig(port=0, send_timeout_s=0.5)) as running:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", running.server.port))
        greedy = connect(running.url, sock=sock, compression=None, max_size=None, max_queue=1).__enter__()
        request = packb({"type": "metadata"})

        def flood():  # blocks in send once neither side reads: on its own thread, so the test never hangs
            try:
                while running.server.dropped == 0:
                    greedy.send(request)
            except Exception:  # the server dropped it mid-send
                pass

        threading.Thread(target=flood, daemon=True).start()
        deadline = time.monotonic() + 15
        while running.server.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.server.dropped == 1
        other, meta = open_client(running.url)
        assert other.send(packb({"type": "metadata", "id": 5})) is None and unpackb(other.recv(timeout=5))["id"] == 5
        other.close()


@pytest.mark.slow  # ~10 s: a server process and 2 GB sent to it (2-core machine)
def test_oversized_messages_are_refused_before_they_are_buffered(tiny_bundle_dir):
    """The finding's abuse: 6 connections sending 12 messages of 30 MB each. Refused from the frame header
    (1009, max 8 MiB), the server's memory stays within 60 MB of where it started (it was +500 MB buffered)."""
    from websockets.exceptions import ConnectionClosed

    from tests.helpers.server import free_port, start_server

    def rss_mb(pid: int) -> float:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    port = free_port()
    proc = start_server(tiny_bundle_dir, port)
    url = f"ws://127.0.0.1:{port}"
    blob = b"\0" * (30 << 20)
    closes = []
    try:
        before = rss_mb(proc.pid)

        def abuse():
            for _ in range(12):
                ws = None
                try:
                    ws, _ = open_client(url)
                    ws.send(blob)
                    ws.recv(timeout=10)
                    closes.append("answered")  # buffered whole, then refused
                except ConnectionClosed as e:
                    closes.append(e.rcvd.code if e.rcvd else None)
                except OSError:  # reset while the rest of the message was still being sent
                    closes.append("reset")
                finally:
                    if ws is not None:
                        ws.close()

        threads = [threading.Thread(target=abuse) for _ in range(6)]
        for t in threads:
            t.start()
        peak = before
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mb(proc.pid))
            time.sleep(0.05)
        after = rss_mb(proc.pid)
        ws, meta = open_client(url)
        assert meta["max_message_bytes"] == 8 << 20
        ws.close()
    finally:
        proc.kill()
        proc.wait()
    print(f"server RSS {before:.0f} MB before, peak {peak:.0f} MB, {after:.0f} MB after 72 x 30 MB messages")
    assert peak - before < 60 and after - before < 60
    assert len(closes) == 72 and all(c in (1009, "reset") for c in closes), closes
