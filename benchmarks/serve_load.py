"""Many simulated robots against one policy server: round trips, the server's step time, each robot's rate.

    python -m benchmarks.serve_load --bundle bundle/ --robots 8 --robot-hz 10 --seconds 10
    python -m benchmarks.serve_load --bundle bundle/ --url ws://gpu-box:8000 --robots 16

Starts `python -m serve --bundle B --workers W` in its own process (or uses
--url), then runs R robots, each a thread with the robot's own client
(runtime.policy.remote: the frame resized on the robot, the ACT feature from
the server, the ring and head onboard) taking a camera-like frame every
1/rate seconds. Prints p50/p99 of the round trip, the server's step time
(vision + language, from its replies), its queueing, and each robot's rate.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from runtime.cameras.sample_frames import sample_frames
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.registry import make_backend
from runtime.policy.bundle import load_bundle
from runtime.policy.remote import RemotePolicy
from runtime.policy.remote_encoder import RemoteConfig, RemoteEncoder
from runtime.policy.wire import model_identity

ROOT = Path(__file__).resolve().parents[1]


def start_server(bundle: Path, workers: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--bundle", str(bundle), "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], cwd=ROOT)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, f"ws://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.2)


def robot(bundle, backend, url: str, index: int, rate: float, seconds: float, out: dict) -> None:
    encoder = RemoteEncoder(RemoteConfig(url, timeout=5.0), expected_model=model_identity(bundle.manifest)).start()
    policy = RemotePolicy(bundle, backend, encoder, instruction=f"robot {index}")
    frames = sample_frames(8, seed=index, height=480, width=640)
    rtts, server_ms, queue_ms, onboard = [], [], [], 0
    period = 1.0 / rate
    start = next_tick = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        t0 = time.perf_counter()
        step = policy.infer(frames[k % len(frames)])
        rtts.append(time.perf_counter() - t0)
        if policy.source == "remote":
            server_ms.append(step.timings["vision"] + step.timings["language"])
            queue_ms.append(step.timings["queue"])
        else:
            onboard += 1
        k += 1
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    encoder.close()
    out[index] = {"steps": k, "rate": k / (time.monotonic() - start), "rtt": rtts, "server": server_ms,
                  "queue": queue_ms, "onboard": onboard}


def run(bundle_dir: Path, robots: int, rate: float, seconds: float, workers: int, url: str | None) -> dict:
    bundle = load_bundle(bundle_dir)
    proc = None
    if url is None:
        proc, url = start_server(bundle_dir, workers)
    try:
        results: dict = {}
        with make_backend(bundle, "ort-cpu") as backend:  # the robots' own heads (and fallback, unused here)
            threads = [threading.Thread(target=robot, args=(bundle, backend, url, i, rate, seconds, results))
                       for i in range(robots)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    rtt = np.concatenate([r["rtt"] for r in results.values()]) * 1e3
    server = np.concatenate([r["server"] for r in results.values()]) * 1e3
    queue = np.concatenate([r["queue"] for r in results.values()]) * 1e3
    rates = [r["rate"] for r in results.values()]
    return {"robots": robots, "rate_hz": rate, "workers": workers, "seconds": seconds,
            "round_trip_ms": {"p50": round(float(np.percentile(rtt, 50)), 1),
                              "p99": round(float(np.percentile(rtt, 99)), 1)},
            "server_step_ms": {"p50": round(float(np.percentile(server, 50)), 1),
                               "p99": round(float(np.percentile(server, 99)), 1)},
            "server_queue_ms": {"p50": round(float(np.percentile(queue, 50)), 1),
                                "p99": round(float(np.percentile(queue, 99)), 1)},
            "robot_rate_hz": {"min": round(min(rates), 2), "max": round(max(rates), 2)},
            "onboard_steps": int(sum(r["onboard"] for r in results.values()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--robots", type=int, default=8)
    ap.add_argument("--robot-hz", type=float, default=10.0, help="frames per second each robot sends")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2, help="the server's inference threads")
    ap.add_argument("--url", help="an already running server (default: start one on loopback)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    r = run(args.bundle, args.robots, args.robot_hz, args.seconds, args.workers, args.url)
    print(json.dumps(r, indent=2))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
