"""One client sending 4096 x 4096 JPEGs does not hold up the other robots (the event loop only moves bytes)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from runtime.policy.wire import packb, unpackb


def big_jpeg() -> bytes:
    """A 4096 x 4096 JPEG of ~0.32 MB (the finding's abuse): small on the wire, 50 MB and ~290 ms once decoded."""
    import cv2

    yy, xx = np.mgrid[0:4096, 0:4096]
    image = np.dstack([(xx // 16) % 256, (yy // 16) % 256, ((xx + yy) // 32) % 256]).astype(np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def round_trips_beside_an_abuser(bundle_dir) -> tuple[np.ndarray, np.ndarray, int]:
    """8 robots' round trips in ms started while the abuser sends and while it does not, and its JPEGs served."""
    from websockets.sync.client import connect

    from tests.helpers.server import free_port, start_server

    jpeg = big_jpeg()
    port = free_port()
    proc = start_server(bundle_dir, port, "--workers", "2")
    url = f"ws://127.0.0.1:{port}"
    start = time.monotonic() + 1.5  # each client's first requests (below) are over by then
    seconds, phase = 12.0, 0.25  # ~1,000 round trips on each side: a p99 is the 10th slowest, not the 4th
    abusing = threading.Event()
    stop = threading.Event()
    rtts: list[tuple[bool, float]] = []
    abuse_replies = []

    def robot(i: int) -> None:
        image = np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8)
        with connect(url, compression=None, max_size=None) as ws:
            unpackb(ws.recv(timeout=10))
            for k in (-1, -2):  # not measured: a fresh server's first run of a graph allocates its memory
                ws.send(packb({"type": "feature", "image": image, "id": k}))
                unpackb(ws.recv(timeout=10))
            tick = start + i * 0.05 / 8
            k = 0
            while tick < start + seconds:
                time.sleep(max(0.0, tick - time.monotonic()))
                tick += 0.05
                during = abusing.is_set()
                t0 = time.perf_counter()
                ws.send(packb({"type": "feature", "image": image, "id": k}))
                reply = unpackb(ws.recv(timeout=10))
                assert reply["id"] == k and reply["feature"].shape == (1, 64)
                rtts.append((during, time.perf_counter() - t0))
                k += 1

    def abuser() -> None:
        with connect(url, compression=None, max_size=None) as ws:
            unpackb(ws.recv(timeout=10))
            ws.send(packb({"jpeg": jpeg, "prompt": "reach the bottle"}))  # not measured, as the robots' first
            unpackb(ws.recv(timeout=30))
            while not stop.is_set():
                if not abusing.wait(0.05):
                    continue
                ws.send(packb({"jpeg": jpeg, "prompt": "reach the bottle"}))
                abuse_replies.append(unpackb(ws.recv(timeout=30))["actions"].shape)

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(8)] + [threading.Thread(target=abuser)]
    try:
        for t in threads:
            t.start()
        time.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < start + seconds:  # on and off by turns
            abusing.set() if not abusing.is_set() else abusing.clear()
            time.sleep(phase)
        abusing.clear()
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        proc.kill()
        proc.wait()
    clean = np.array([r for during, r in rtts if not during]) * 1e3
    abused = np.array([r for during, r in rtts if during]) * 1e3
    return clean, abused, len(abuse_replies)


@pytest.mark.slow  # ~20 s a measurement, one to three: a server process, 8 robots for 12 s (2-core machine)
def test_a_client_sending_4096_jpegs_leaves_eight_robots_round_trips_alone(tiny_bundle_dir):
    """8 robots send their 224 x 224 frames at 20 Hz for 12 s (feature requests, tiny, loopback, a server process
    with 2 workers) while a ninth client sends 4096 x 4096 JPEGs back to back during every other 0.25 s. Round
    trips started while it sends against those started while it does not (the same seconds of this machine's
    load): p99 under 10 ms (this 2-core machine alone: 5.2-6.4 ms, docs/performance.md); on a machine whose p99
    is already over 10 ms without the abuser (shared with other jobs: 50-180 ms from run to run), not more than
    5 ms or 25 % above it, the larger. (Decoding on the event loop, each JPEG held every robot's reply for the
    ~290 ms of its decode; workers that each took every core, 6.5-15.1 ms.)

    A p99 is a tail: one other process taking a core for a few seconds moved it by 8 ms here (a soak beside it:
    8.1 -> 15.9 ms), and this virtual machine's host has stretches of a minute or so where the p99 without the
    abuser alone is 12-27 ms and with it 6 ms more (2 of 12 runs on one afternoon; the others 6.2-7.3 ms with,
    2 ms above without). So a measurement that misses the bound is taken again, after a pause, up to three in
    all, until one meets it; the defect it guards against adds the decode's ~290 ms to every window the
    abuser sends in, and fails all three. The first requests of each client are not measured: a fresh
    server's first run of a graph allocates its memory (the first JPEG's round trip 28 ms, the next 11-18)."""
    for attempt in (1, 2, 3):
        if attempt > 1:
            time.sleep(10.0)
        clean, abused, served = round_trips_beside_an_abuser(tiny_bundle_dir)
        assert len(clean) > 100 and len(abused) > 20
        p99_clean, p99_abused = np.percentile(clean, 99), np.percentile(abused, 99)
        bound = max(10.0, p99_clean + 5.0, 1.25 * p99_clean)
        figures = ["/".join(f"{np.percentile(a, q):.1f}" for q in (50, 90, 99)) for a in (clean, abused)]
        print(f"measurement {attempt}: 8 robots' round trip p50/p90/p99: {figures[0]} ms without, {figures[1]} ms "
              f"with a client sending 4096 x 4096 JPEGs ({served} served)")
        if p99_abused < bound:
            break
    assert p99_abused < bound
    assert len(abused) > 300 and served >= 10  # both sides kept going
