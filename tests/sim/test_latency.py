"""Injected inference latency on simulated time: synchronous steps lose the task's time, asynchronous chunks don't."""

from __future__ import annotations

import numpy as np
import pytest

from sim.latency import LatencySpec, closed_loop_latency, expert_planner, timed_rollout
from sim.world import random_layout

SEEDS = [10_000 * 7 + i for i in range(6)]


def expert_rows(latency: float, asynchronous: bool, jitter: float = 0.0) -> dict:
    spec = LatencySpec(latency=latency, jitter=jitter, asynchronous=asynchronous)
    return closed_loop_latency(lambda layout: expert_planner(layout, 10), [random_layout(s) for s in SEEDS], SEEDS,
                               spec, max_steps=40)


def test_a_synchronous_step_costs_the_move_plus_the_latency():
    layout = random_layout(SEEDS[0])
    fast = timed_rollout(layout, expert_planner(layout, 10), LatencySpec(), max_steps=40)
    slow = timed_rollout(layout, expert_planner(layout, 10), LatencySpec(latency=0.3, budget=1e9), max_steps=40)
    assert fast.success and slow.success and fast.inferences == slow.inferences  # the same moves...
    assert slow.sim_time - fast.sim_time == pytest.approx(0.3 * slow.inferences, abs=1e-6)  # ...0.3 s later each


def test_asynchronous_chunks_keep_the_rate_and_the_success_where_synchronous_steps_slow_down():
    """The expert (a planner that holds its move for the chunk) on 6 rooms: synchronous steps slow to one per
    0.4 s + latency; asynchronous chunks keep one plan per 0.4 s and the zero-latency success at 300 ms + jitter."""
    base = expert_rows(0.0, asynchronous=False)
    assert base["success_rate"] == 1.0
    sync = expert_rows(0.3, asynchronous=False)
    assert sync["inferences_per_s"] < 0.6 * base["inferences_per_s"]
    assert sync["mean_time_to_success_s"] > base["mean_time_to_success_s"] + 0.3 * 10
    for latency in (0.0, 0.2, 0.3):
        run = expert_rows(latency, asynchronous=True, jitter=0.05)
        assert run["success_rate"] >= base["success_rate"] - 0.05, (latency, run)
        assert run["collision_rate"] == 0.0
        assert run["inferences_per_s"] == pytest.approx(1 / 0.4, rel=0.15)  # one plan per action period kept


def test_the_async_loop_plays_nothing_before_the_first_chunk_lands():
    layout = random_layout(SEEDS[1])
    r = timed_rollout(layout, expert_planner(layout, 10), LatencySpec(latency=0.35, asynchronous=True, budget=0.3))
    assert r.ended_by == "time" and np.allclose(r.path[-1][:2], r.path[0][:2])  # never moved: no plan yet


def test_sim_evaluate_with_latency_over_a_real_server_equals_the_onboard_run(tiny_bundle_dir, tmp_path):
    """`sim.evaluate --policy ws://... --inject-latency-ms 200 --async`: every inference a loopback round trip, the
    figures identical to the onboard run's (the server's features are the onboard ones, bit for bit)."""
    import json

    from runtime.policy.bundle import load_bundle
    from serve.engine import Engine, EngineConfig
    from serve.server import ServerConfig, ServerThread
    from sim.evaluate import main

    common = ["--bundle", str(tiny_bundle_dir), "--episodes", "2", "--max-steps", "6", "--inject-latency-ms", "200",
              "--latency-jitter-ms", "20", "--async"]
    assert main([*common, "--json", str(tmp_path / "onboard.json")]) == 0
    engine = Engine(load_bundle(tiny_bundle_dir), EngineConfig())
    try:
        with ServerThread(engine, ServerConfig(port=0)) as running:
            assert main([*common, "--policy", running.url, "--json", str(tmp_path / "remote.json")]) == 0
            assert running.server.served > 0
    finally:
        engine.close()
    onboard, remote = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("onboard", "remote"))
    assert (onboard["policy"], remote["policy"]) == ("onboard", "remote")
    assert (onboard["mode"], onboard["latency_ms"], onboard["jitter_ms"]) == ("async", 200.0, 20.0)
    for key in ("success_rate", "collision_rate", "mean_inferences", "inferences_per_s"):
        assert onboard[key] == remote[key]
