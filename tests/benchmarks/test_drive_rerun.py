"""benchmarks.drive_rerun: the real drive loop timed without and with the Rerun log (docs/performance.md holds the
figure; this only proves the benchmark measures what it says)."""

import pytest


@pytest.mark.slow
def test_the_benchmark_times_the_loop_both_ways_and_the_hooks(tiny_bundle_dir):
    pytest.importorskip("rerun")
    from benchmarks.drive_rerun import BenchConfig, run_benchmark

    result = run_benchmark(tiny_bundle_dir, BenchConfig(seconds=2.0, pairs=1, warmup_s=0.5))
    without, with_log = result["runs"]
    assert (without["rerun"], with_log["rerun"]) == (False, True)
    for run in result["runs"]:  # 20 Hz for the 1.5 s measured: every tick's lateness, none negative
        assert 25 <= run["ticks"] <= 35 and 0 <= run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    assert with_log["logged"] > with_log["ticks"] and with_log["dropped"] == 0  # frames, commands, events
    assert with_log["hook_calls"] > with_log["ticks"] and with_log["rrd_mb"] > 0
    assert result["p99_increase_ms"] == pytest.approx(result["p99_with_ms"] - result["p99_without_ms"], abs=1e-6)
