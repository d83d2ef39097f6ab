"""The robot's remote policy against a real server process on loopback: equal actions, fallback, return."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from tests.helpers.processes import run_drive
from tests.helpers.server import free_port, start_server

pytest.importorskip("websockets")


@pytest.fixture(scope="module")
def bundle(tiny_bundle_dir):
    from runtime.policy.bundle import load_bundle

    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="module")
def local_backend(bundle):
    from runtime.policy.backends.registry import make_backend

    backend = make_backend(bundle, "ort-cpu").activate()
    yield backend
    backend.deactivate()


def frames(n: int, seed: int = 0):
    from runtime.cameras.sample_frames import sample_frames

    return list(sample_frames(n, seed=seed, height=360, width=640))


def make_remote(bundle, backend, url, **kw):
    """A RemotePolicy as runtime.drive opens one; max_slowdown inf unless given: tiny's onboard graphs (~4 ms) are
    not slower than a loopback round trip, so by the default rule the robot would rightly drive onboard."""
    from runtime.policy.remote import RemotePolicy
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    from runtime.policy.wire import model_identity

    kw.setdefault("max_slowdown", float("inf"))
    encoder = RemoteEncoder(RemoteConfig(url, **kw), model_identity(bundle.manifest),
                            OnboardReference(bundle, backend)).start()
    return RemotePolicy(bundle, backend, encoder, instruction="reach the bottle on the left"), encoder


def test_remote_steps_equal_onboard_steps_and_say_where_they_ran(bundle, local_backend, tiny_bundle_dir):
    from runtime.policy.behaviours import with_behaviours
    from runtime.policy.onboard import Policy

    port = free_port()
    proc = start_server(tiny_bundle_dir, port)
    try:
        remote, encoder = make_remote(bundle, local_backend, f"ws://127.0.0.1:{port}", timeout=2.0)
        wrapped = with_behaviours(remote, "ensemble", discrete=True)  # behaviours stack on it unchanged
        local = with_behaviours(Policy(bundle, local_backend, instruction="reach the bottle on the left"),
                                "ensemble", discrete=True)
        for frame in frames(10):
            a, b = wrapped.infer(frame), local.infer(frame)
            assert wrapped.source == "remote"
            assert np.array_equal(a.chunk, b.chunk) and np.array_equal(a.action, b.action)
            assert a.timings["network"] >= 0 and a.timings["server"] > 0
        encoder.close()
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_server_hands_over_within_one_control_period_and_comes_back(bundle, local_backend,
                                                                               tiny_bundle_dir, caplog):
    """The robot's inference loop at 20 Hz; the server process is killed mid-run (SIGKILL), then started again on
    the same port. The step after the kill runs onboard, late by less than one control period; every chunk equals
    the onboard policy's throughout (the ring survives both switches); the robot returns to the server."""
    from runtime.policy.onboard import Policy

    caplog.set_level(logging.INFO, logger="runtime.policy")
    period = 0.05
    port = free_port()
    proc = start_server(tiny_bundle_dir, port)
    remote, encoder = make_remote(bundle, local_backend, f"ws://127.0.0.1:{port}", timeout=0.2, retry_interval=0.2)
    reference = Policy(bundle, local_backend, instruction="reach the bottle on the left")
    log = []  # (time the step finished, source, inference seconds)
    stream = frames(6, seed=1)
    procs = [proc]
    restarted = None
    try:
        k = 0
        next_tick = time.monotonic()
        while k < 400:
            frame = stream[k % len(stream)]
            t0 = time.monotonic()
            step = remote.infer(frame)
            log.append((time.monotonic(), remote.source, time.monotonic() - t0))
            assert np.array_equal(step.chunk, reference.infer(frame).chunk), f"step {k}"
            if k == 20:
                proc.kill()
                proc.wait()
                killed_at = k
            if k == 40:
                restarted = threading.Thread(target=lambda: procs.append(start_server(tiny_bundle_dir, port)))
                restarted.start()
            if k > 40 and not restarted.is_alive() and remote.source == "remote":
                break
            k += 1
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))
        sources = [s for _, s, _ in log]
        assert sources[: killed_at + 1] == ["remote"] * (killed_at + 1)
        assert sources[killed_at + 1] == "onboard"
        gap = log[killed_at + 1][2]  # the first step after the kill: round trip failed, then onboard
        assert gap < period, f"handover took {gap * 1e3:.1f} ms, more than one control period"
        assert sources[-1] == "remote" and remote.switches == 2
        print(f"handover: {gap * 1e3:.1f} ms; back on the server after {len(log) - killed_at - 1} onboard steps")
        assert any("left" in r.message for r in caplog.records)
        assert any("connected" in r.message for r in caplog.records)
    finally:
        encoder.close()
        if restarted is not None:
            restarted.join(60)
        for p in procs:
            p.kill()
            p.wait()


def test_after_a_lost_reply_the_robot_stays_onboard_for_the_retry_interval_and_returns_only_after_probes(
        bundle, local_backend):
    """A server that turns slow (300 ms a frame, timeout 100 ms): the step that waits for it runs onboard after
    the timeout, not later; the steps after it go straight to the onboard engines without asking the server while
    --policy-retry lasts, and keep doing so while the probes are late; the robot returns only once the server
    answers probes within budget again."""
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread
    from tests.helpers.slow_backend import DelayedBackend

    device = DelayedBackend(bundle).activate()
    engine = Engine(bundle, EngineConfig(workers=1), backends=[device])
    stream = frames(2)
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running:
            remote, encoder = make_remote(bundle, local_backend, running.url, timeout=0.1, retry_interval=0.3)
            remote.infer(stream[0])
            assert remote.source == "remote"
            device.delay = 0.3
            t0 = time.monotonic()
            remote.infer(stream[1])
            took = time.monotonic() - t0
            assert remote.source == "onboard" and 0.1 <= took < 0.1 + 0.4  # + one onboard inference on a busy CPU
            runs, received = device.vision_runs, running.server.received
            held = []
            while time.monotonic() - t0 < 0.25:  # inside --policy-retry: onboard at once, the server untouched
                s0 = time.monotonic()
                remote.infer(stream[0])
                held.append((remote.source, time.monotonic() - s0))
            assert held and all(src == "onboard" and dt < 0.1 for src, dt in held)
            assert running.server.received == received  # not even a probe reached the server
            time.sleep(0.6)  # the probes after the retry interval meet a server still 300 ms late
            s0 = time.monotonic()
            remote.infer(stream[0])
            assert remote.source == "onboard" and time.monotonic() - s0 < 0.1  # no step waits on a failed probe
            assert device.vision_runs + engine.expired > runs
            device.delay = 0.0
            deadline = time.monotonic() + 5
            while remote.source != "remote" and time.monotonic() < deadline:
                remote.infer(stream[0])
                time.sleep(0.02)
            assert remote.source == "remote" and encoder.switches["timeout"] == 1
            encoder.close()
    finally:
        engine.close()


def test_a_server_with_another_model_is_refused(bundle, local_backend, tiny_bundle_dir):
    from runtime.policy.remote_encoder import RemoteConfig, RemoteEncoder, RemoteUnavailable
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread

    engine = Engine(bundle, EngineConfig())
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running:
            encoder = RemoteEncoder(RemoteConfig(running.url), expected_model="0" * 64).start()
            assert not encoder.connected and "serve the same bundle" in encoder.refused
            with pytest.raises(RemoteUnavailable):
                encoder.feature(np.zeros((224, 224, 3), np.uint8), None)
            encoder.close()
    finally:
        engine.close()


def test_jpeg_frames_are_decoded_by_the_server(bundle, local_backend, tiny_bundle_dir):
    from runtime.policy.onboard import Policy
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread

    engine = Engine(bundle, EngineConfig())
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running:
            remote, encoder = make_remote(bundle, local_backend, running.url, jpeg_quality=95, timeout=2)
            local = Policy(bundle, local_backend, instruction="reach the bottle on the left")
            frame = frames(1)[0]
            a, b = remote.infer(frame), local.infer(frame)
            assert remote.source == "remote"
            assert np.abs(a.chunk - b.chunk).max() < 0.05 * bundle.action_range  # lossy, close
            encoder.close()
    finally:
        engine.close()


@pytest.mark.parametrize("extra", [["--mode", "step", "--step-duration", "0.02"],
                                   ["--async", "--mode", "continuous", "--action-period", "0.05", "--rate", "50"]])
def test_the_drive_cli_drives_from_the_server_and_logs_which_policy_drove(bundle, tiny_bundle_dir, episode_file,
                                                                          tmp_path, extra):
    from runtime.control.steplog import read_log
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread

    engine = Engine(bundle, EngineConfig())
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running:
            proc = run_drive("--policy", running.url, "--fallback-bundle", str(tiny_bundle_dir), "--dry-run",
                             "--camera", str(episode_file), "--quiet", "--log", str(tmp_path / "drive.jsonl"),
                             "--policy-timeout", "2", "--policy-max-slowdown", "inf", *extra)
    finally:
        engine.close()
    assert proc.returncode == 0, proc.stderr
    steps = [r for r in read_log(tmp_path / "drive.jsonl") if r.get("type") == "step"]
    assert len(steps) >= 6 and {r["policy"] for r in steps} == {"remote"}
    assert all("network" in r["timings_ms"] for r in steps)
    assert "connected" in proc.stderr


def drive_side_by_side(remote, onboard, stream, ticks: int, period: float = 0.1) -> list[tuple[str, float, float]]:
    """At 1/period Hz: the remote policy's step, then the onboard policy's step on the same frame (paired, so the
    machine's load weighs on both alike); (source, remote step s, onboard step s) per tick."""
    out = []
    next_tick = time.monotonic()
    for k in range(ticks):
        frame = stream[k % len(stream)]
        t0 = time.perf_counter()
        remote.infer(frame)
        t1 = time.perf_counter()
        onboard.infer(frame)
        out.append((remote.source, t1 - t0, time.perf_counter() - t1))
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    return out


SLOW_SERVER_CASES = {"120 ms": 0.12, "200 ms": 0.2, "hung (SIGSTOP)": None}


@pytest.mark.slow  # ~6 s each, 20 s for the three (2-core machine)
@pytest.mark.parametrize("case", list(SLOW_SERVER_CASES))
def test_a_slow_or_hung_server_never_makes_the_robot_slower_than_its_own_board(bundle, tiny_bundle_dir, case):
    """The robot's board takes ~33 ms a frame (vision delayed 30 ms), the server ~5 ms: the robot drives remote.
    Then the server answers in 120 ms, 200 ms, or hangs (SIGSTOP). With the defaults (timeout 0.15 s, retry
    0.5 s, max slowdown 1.2 over 10 steps), every step after the first one that waited for the server (the
    first timeout, or the 10th slow step at 120 ms) has a p50 within 20 % of the same frames on the onboard
    engines, measured side by side; the server computes only the step that timed out, the slow steps that made
    the robot leave, and one probe per retry interval (the old client: every step)."""
    import os
    import signal

    from runtime.policy.onboard import Policy
    from runtime.policy.remote import RemotePolicy
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    from runtime.policy.wire import model_identity
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread
    from tests.helpers.slow_backend import DelayedBackend

    delay = SLOW_SERVER_CASES[case]
    board, board_twin = (DelayedBackend(bundle, delay=0.03).activate() for _ in range(2))
    stream = frames(6, seed=2)
    config = RemoteConfig("")  # the defaults runtime.drive uses
    engine = proc = running = None
    try:
        if delay is None:
            port = free_port()
            proc = start_server(tiny_bundle_dir, port)
            url = f"ws://127.0.0.1:{port}"
        else:
            device = DelayedBackend(bundle).activate()
            engine = Engine(bundle, EngineConfig(workers=1), backends=[device])
            running = ServerThread(engine, ServerConfig(port=0)).__enter__()
            url = running.url
        encoder = RemoteEncoder(RemoteConfig(url), model_identity(bundle.manifest),
                                OnboardReference(bundle, board)).start()
        remote = RemotePolicy(bundle, board, encoder, instruction="reach the bottle on the left")
        onboard = Policy(bundle, board_twin, instruction="reach the bottle on the left")
        before = drive_side_by_side(remote, onboard, stream, 10)
        assert [s for s, _, _ in before] == ["remote"] * 10, before
        if delay is None:
            os.kill(proc.pid, signal.SIGSTOP)
        else:
            runs, device.delay = device.vision_runs, delay
        start = time.monotonic()
        after = drive_side_by_side(remote, onboard, stream, 40)
        seconds = time.monotonic() - start
        sources = [s for s, _, _ in after]
        first = sources.index("onboard")
        waited = config.compare_steps - 1 if delay is not None and delay < config.timeout else 0
        assert first <= waited, sources  # the step that found the server late, or the window's last slow step
        rest = after[first + 1:]
        assert [s for s, _, _ in rest] == ["onboard"] * len(rest)
        p50_remote = float(np.median([r for _, r, _ in rest]))
        p50_onboard = float(np.median([o for _, _, o in rest]))
        print(f"{case}: step p50 {p50_remote * 1e3:.1f} ms against {p50_onboard * 1e3:.1f} ms onboard after the "
              f"first {first + 1} step(s); left the server for: {dict(encoder.switches)}")
        assert p50_remote <= 1.2 * p50_onboard, (p50_remote, p50_onboard)
        if delay is not None:
            computed = device.vision_runs - runs
            bound = first + 1 + int(seconds / config.retry_interval) + 1
            assert computed <= bound, f"the server computed {computed} frames, at most {bound} were still wanted"
        encoder.close()
    finally:
        if proc is not None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        if running is not None:
            running.stop()
        if engine is not None:
            engine.close()
        board.deactivate()
        board_twin.deactivate()
