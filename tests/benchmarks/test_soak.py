"""The soak: the simulated robot through the real loop, the serial driver and the C controller, faults on a
schedule. The runs are slow-marked (they drive for minutes): CI runs the compressed schedule (50 s, a fault every
2.5 s: each of the ten kinds twice) with the other slow tests (make test-slow-ci) and the 155 s version (each
kind three times) on its own (make test-soak); the suite keeps the soak's pieces (floors, the verdict, the
board's event log)."""

import json
import time

import pytest

from benchmarks.soak import FAULT_KINDS, Board, GlibcHeap, floors, medians, rss_bytes, slope_per_hour, verdict
from tests.conftest import run_python


def soak(tmp_path, bundle, *args):
    out = tmp_path / "soak.json"
    proc = run_python("-m", "benchmarks.soak", "--bundle", str(bundle), "--work", str(tmp_path / "work"),
                      "--json", str(out), *args, timeout=600)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def check(proc, r, min_per_kind):
    assert r is not None, proc.stderr[-3000:]
    assert proc.returncode == 0, (proc.stderr[-3000:], r)
    # every exception, SIGHUP and long outage restarted a run
    assert r["steps"] > 100 and r["runs"] >= 3 * min_per_kind
    assert set(r["faults_by_kind"]) == set(FAULT_KINDS)
    for kind, k in r["faults_by_kind"].items():
        assert k["n"] >= min_per_kind and k.get("zeroed", k["n"]) == k["n"], (kind, k)
    assert r["moves_in_forbidden_state"] == 0
    # the operator armed every run's start and after every reboot, e-stop and disarm
    assert r["operator_arms"] >= r["runs"] + 3 * min_per_kind
    assert r["missed_watchdogs"] == 0
    assert r["faults_not_zeroed"] == 0 and r["faults_over_limit"] == 0 and r["moved_during_fault"] == 0
    assert 0 <= r["max_zero_latency_s"] <= r["zero_latency_limit_s"] == pytest.approx(0.55)
    assert r["unexpected_errors"] == []
    assert r["open_files_growth"] <= 0 and r["threads_end"] <= r["threads_start"]
    assert r["motor"]["reconnects"] >= min_per_kind  # every unplug was reconnected
    assert r["controller_readies"] >= 1 + min_per_kind  # boot + every reboot


@pytest.mark.slow
def test_soak_compressed_schedule(tiny_bundle_dir, tmp_path):
    plot = tmp_path / "memory.png"
    proc, r = soak(tmp_path, tiny_bundle_dir, "--seconds", "50", "--fault-every", "2.5", "--plot", str(plot),
                   "--max-growth-pct", "5")  # baseline after 10 s; the hour's bound (1 %): docs/reliability.md
    check(proc, r, min_per_kind=2)
    assert r["rss_growth_pct"] < 5.0 and r["rss_figure"] == "floor of the window"
    assert r["rss_kind"] == "RssAnon after malloc_trim" and abs(r["heap_in_use_growth_pct"]) < 5.0
    assert 1 < r["heap_in_use_mb_baseline"] < r["rss_mb_baseline"]
    assert r["malloc_tcache"] == "off" and r["malloc_arena_max"] == 2  # the command ran itself again without it
    # the timeline: a point every 2 s (a twentieth of the run, in whole seconds), each point's floors, the slope
    timeline = r["memory_timeline"]
    assert r["timeline_s"] == 2 and 23 <= len(timeline) <= 25
    assert all(b[0] - a[0] == pytest.approx(2, abs=0.6) for a, b in zip(timeline, timeline[1:]))
    assert all(1 < heap < rss < 1000 for _, rss, heap in timeline)
    assert r["heap_in_use_mb_per_hour"] is not None and r["rss_mb_per_hour"] is not None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_frame_in_flight_moves_the_median_not_the_floor_and_the_slope_is_per_hour():
    """Why the soak's memory figures are floors: half the 1-s samples caught a 600 kB frame in flight."""
    kept = 25_000_000
    quiet = [(kept + 40, kept)] * 15
    busy = [(kept + 600_040, kept + 600_000)] * 16  # the load changed: one sample more caught a frame
    assert floors(quiet + busy) == (kept + 40, kept)
    assert medians(quiet + busy) == (kept + 600_040, kept + 600_000)  # a 2.4 % "growth" from the load alone
    assert slope_per_hour([(0, kept), (1800, kept + 500_000), (3600, kept + 1_000_000)]) == pytest.approx(1.0)
    assert slope_per_hour([(0, kept), (60, kept)]) is None  # under 3 points: no slope


def test_the_verdict_names_each_broken_bound():
    r = {"missed_watchdogs": 0, "missed_watchdogs_at_s": [], "faults_not_zeroed": 0, "faults_injected": 360,
         "faults_over_limit": 0, "zero_latency_limit_s": 0.55, "max_zero_latency_s": 0.49,
         "rss_growth_pct": 0.4, "heap_in_use_growth_pct": 1.2}
    assert verdict(r) == []  # memory is judged only when asked
    assert verdict(r, 1.0) == ["heap_in_use_growth_pct 1.2 %, expected under --max-growth-pct 1.0 %"]
    r.update(missed_watchdogs=2, missed_watchdogs_at_s=[61.2, 1800.4], faults_over_limit=1, max_zero_latency_s=0.6)
    assert verdict(r) == ["2 missed watchdogs (at [61.2, 1800.4] s), expected 0",
                          "1 faults zeroed later than 0.55 s (max 0.6 s)"]


def test_a_fault_that_lasts_must_hold_its_zero_until_it_is_over(tmp_path):
    """The board's event log (`apply <ms> EVENT vx vy wz`, as firmware/host/pty_controller prints it) replayed
    by a stand-in board: the wheels move, stop, and move again at 1.5 s. A camera stall lasting to 2.1 s broke
    its zero; one over at 1.4 s and a SIGHUP (over at once, its run restarted) did not."""
    script = tmp_path / "board.sh"
    script.write_text("#!/bin/sh\necho ready\necho 'apply 1000 SET_VELOCITY 0.1 0 0'\nread go\n"
                      "echo 'apply 1200 SET_VELOCITY 0 0 0'\necho 'apply 1500 SET_VELOCITY 0.2 0 0'\necho done\n"
                      "read quit\n")
    script.chmod(0o755)
    zeroed, moved = [], []
    board = Board(script, tmp_path / "link", lambda *v: None, zeroed.append, on_moved=moved.append)
    try:
        deadline = time.monotonic() + 5
        while not any(board.velocity) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert board.velocity == (0.1, 0.0, 0.0)
        stall = {"kind": "camera_stall", "t0": 1.1, "zero_at": None, "until": 2.1}
        short = {"kind": "serial_unplug", "t0": 1.1, "zero_at": None, "until": 1.4}
        sighup = {"kind": "sighup", "t0": 1.1, "zero_at": None, "until": 1.1}
        for fault in (stall, short, sighup):
            board.watch(fault)
        board.command("go")
    finally:
        board.stop()
    assert [f["zero_at"] for f in zeroed] == [1.2, 1.2, 1.2]
    assert moved == [stall] and stall["moved_at"] == 1.5
    assert "moved_at" not in short and "moved_at" not in sighup


def test_the_verdict_names_motion_during_a_fault():
    r = {"missed_watchdogs": 0, "faults_not_zeroed": 0, "faults_injected": 12, "faults_over_limit": 0,
         "moved_during_fault": 2}
    assert verdict(r) == ["the wheels moved during 2 faults after their zero"]


def test_the_heap_figures_count_what_the_program_holds_and_trim_hands_back_the_rest():
    heap = GlibcHeap()
    before = heap.in_use()
    held = [bytearray(50_000) for _ in range(400)]  # 20 MB in heap chunks (below the mmap threshold)
    assert heap.in_use() - before > 19e6
    del held[:-1]  # freed, except the last one, which keeps glibc from trimming the heap's top by itself
    assert heap.in_use() - before < 1e6
    untrimmed = rss_bytes()
    heap.trim()
    assert untrimmed - rss_bytes() > 10e6  # the freed pages were still resident until trimmed


@pytest.mark.slow
def test_soak_two_minutes(tiny_bundle_dir, tmp_path):
    proc, r = soak(tmp_path, tiny_bundle_dir, "--seconds", "155", "--fault-every", "5")
    check(proc, r, min_per_kind=3)
    assert r["rss_growth_pct"] < 2.0


@pytest.mark.slow
def test_without_a_bundle_the_soak_exports_the_tiny_preset_once_and_drives_it(tmp_path):
    """The documented command has no --bundle: the soak exports the tiny preset into --work itself (once)."""
    out, work = tmp_path / "soak.json", tmp_path / "work"
    proc = run_python("-m", "benchmarks.soak", "--work", str(work), "--seconds", "6", "--fault-every", "3",
                      "--json", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((work / "tiny-bundle" / "bundle.json").read_text())
    assert manifest["source"]["checkpoint"] == "preset:tiny"
    r = json.loads(out.read_text())
    assert r["bundle"] == str(work / "tiny-bundle") and r["steps"] > 20 and r["missed_watchdogs"] == 0


@pytest.mark.slow
def test_one_fault_kind_alone_and_an_unknown_kind_refused(tiny_bundle_dir, tmp_path):
    """--faults: one kind at a time, to find which fault's path keeps memory (docs/reliability.md)."""
    proc, r = soak(tmp_path, tiny_bundle_dir, "--seconds", "8", "--fault-every", "2", "--faults", "serial_unplug")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(r["faults_by_kind"]) == {"serial_unplug"} and r["faults_injected"] >= 3
    bad = run_python("-m", "benchmarks.soak", "--faults", "sighup,unplug", "--seconds", "5")
    assert bad.returncode == 2 and "--faults: unknown unplug; expected some of camera_stall" in bad.stderr
