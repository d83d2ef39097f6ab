"""The benchmark runs on tiny in seconds and reports every stage, path and ratio, sanely."""

import csv
import json

import pytest

from tests.conftest import run_python

STAGES = ("preprocess", "vision", "language", "head", "post", "serial", "overhead", "end_to_end")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = run_python("-m", "benchmarks.latency", "--preset", "tiny", "--compare", "--variants", "fp32", "int8",
                      "--steps", "6", "--warmup", "2", "--json", str(out / "r.json"), "--csv", str(out / "r.csv"),
                      "--plot", str(out / "r.png"), "--work", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "r.json").read_text()), proc.stdout, out


def test_every_stage_with_sane_statistics(result):
    r, stdout, _ = result
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    for key in ("ort-cpu:fp32", "ort-cpu:int8"):
        stages = r["runtime"][key]["stages"]
        for stage in STAGES:
            s = stages[stage]
            assert s["n"] == 6 and 0 < s["p50"] <= s["p99"] <= s["max"] and s["mean"] > 0, (key, stage, s)
        assert stages["end_to_end"]["mean"] >= stages["vision"]["mean"] + stages["language"]["mean"]
        assert r["runtime"][key]["control_rate_hz"]["mean"] > 0
        assert r["runtime"][key]["calls_per_step"] == {"vision": 1, "language": 1, "action_head": 1}
    assert "control rate" in stdout and "ratio_vs_original" in stdout


def test_four_code_paths_really_differ(result):
    r, _, _ = result
    paths = r["compare"]["paths"]
    assert set(paths) == {"runtime:ort-cpu:fp32", "runtime:ort-cpu:int8", "naive_window", "eager", "original"}
    calls = r["compare"]["calls_per_step"]
    assert calls["naive_window"]["vision"] == r["window"] == 8  # W vision calls per step, counted
    assert calls["eager"]["vision"] == 1 and calls["original"]["vision"] == 1
    assert calls["original"]["prompt_tokens"] == 256
    for key in ("ort-cpu:fp32", "ort-cpu:int8"):
        ratios = r["compare"]["ratios"][key]
        assert set(ratios) == {"ratio_vs_original", "ratio_vs_naive", "ratio_vs_eager"}
        assert all(v > 0 for v in ratios.values())
    assert r["ratio_vs_naive"] == r["compare"]["ratios"]["ort-cpu:fp32"]["ratio_vs_naive"]


def test_memory_startup_csv_and_plot(result):
    r, _, out = result
    m = r["memory"]
    assert m["peak_rss_mb"] > 10 and 0 < m["startup_s"] < 60 and m["heavy_modules"] == []
    rows = list(csv.DictReader(open(out / "r.csv")))
    assert {row["stage"] for row in rows} >= set(STAGES)
    assert (out / "r.png").stat().st_size > 5000


def test_the_benchmark_times_the_behaviour_the_robot_runs(tmp_path):
    """--chunk-mode chunk wraps the policy as runtime.drive does: the head runs once per chunk, the VLM every step."""
    proc = run_python("-m", "benchmarks.latency", "--preset", "tiny", "--chunk-mode", "chunk", "--discrete",
                      "--steps", "10", "--warmup", "0", "--json", str(tmp_path / "r.json"), "--work", str(tmp_path),
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = json.loads((tmp_path / "r.json").read_text())["runtime"]["ort-cpu:fp32"]["calls_per_step"]
    assert calls["vision"] == calls["language"] == 1
    assert calls["action_head"] == pytest.approx(0.1)  # one chunk of N=10 per 10 steps
