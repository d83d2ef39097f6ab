"""Does a continuous recording keep its rate? The recorder at camera resolution, measured against not recording.

    python -m benchmarks.recording --seconds 60 --json rec.json               # docs/recording.md's figure
    python -m benchmarks.recording --seconds 60 --compression gzip --json gz.json   # the collector's gzip, for contrast
    python -m benchmarks.recording --seconds 60 --busy-cores 1 --json busy.json   # one core taken by something else
    python -m benchmarks.recording --seconds 3 --width 320 --height 180 --idle-seconds 2   # a smoke run

What runs is the robot's recorder (`runtime.recording.Recorder`, continuous
mode, `--rate` frames a second, the device read and the motors commanded at
`--control-rate`), its background writer and real HDF5 files, the serial driver
(`runtime.motors.SerialMotorController`) and the controller emulator on a
pseudo-terminal (sim/controller_emulator.py). The camera delivers camera-like
frames (`runtime.cameras.sample_frames`, textured, noisy: they compress as
badly as a real sensor's) at `--fps`, 1280x720 by default; a scripted person
drives all the time and ends an episode every `--episode-seconds`.

First `--idle-seconds` with the recorder idle (the loop ticks, nothing is
recorded: the baseline), then `--seconds` recording; `--busy-cores N` keeps N
processes spinning through both (another program, or a drive's inference, on
the same cores: the margin a compression leaves). Reported (stdout and
`--json`): frames stored and the rate they were stored at, frames dropped (counted by
the writer, stored in each episode's `dropped_frames`) and frames lost
without a count (the frames due between each episode's first and last
capture, from the file alone, minus those stored, dropped and passed over by
a late loop (`missed`, counted): 0, or one per late tick, where a frame
taken late reads as its slot or the next), the stored
spacing (mean, spread, largest gap), and the control loop with and without
recording: the time between two motor commands (p50, p99, max; the period is
1/`--control-rate`) and the time a tick takes (p50, p99, max). The machine
and its load average go with the figures (benchmarks/machine.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from benchmarks.machine import describe
from runtime.atomic import atomic_write_text
from runtime.cameras.sample_frames import sample_frames
from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.hardware import ZERO, Camera, Frame, TeleopCommand, TeleopEvent, TeleopSource
from runtime.logs import add_log_level_argument, setup_logging
from runtime.motors.serial_controller import SerialMotorController
from runtime.recording.episode_writer import default_compression
from runtime.recording.recorder import RecordConfig, Recorder
from sim.controller_emulator import ControllerEmulator

log = logging.getLogger("benchmarks.recording")


@dataclass(frozen=True)
class RecordingBenchSpec:
    seconds: float = 60.0  # s recording
    idle_seconds: float = 20.0  # s of the loop not recording first: the baseline
    width: int = 1280  # the robot's camera (docs/episode-format.md)
    height: int = 720
    fps: float = 30.0  # the camera's frame rate
    rate: float = 10.0  # frames recorded per second (runtime.record --rate)
    control_rate: float = 20.0  # Hz (runtime.record --control-rate)
    episode_seconds: float = 20.0  # an episode ends (saved, renamed) every this many seconds
    compression: str | None = None  # runtime.record --compression; None: the recorder's default for the rate
    pool: int = 12  # distinct frames cycled by the camera
    busy_cores: int = 0  # processes spinning all along: cores taken by something else


class FrameRateCamera(Camera):
    """The newest of a `fps` stream of prepared frames, stamped at its capture (no wait: a camera's own thread)."""

    name = "bench"

    def __init__(self, frames: np.ndarray, fps: float):
        self.frames, self.fps = frames, fps
        self.start = time.monotonic()

    def read(self, timeout: float = 0.5) -> Frame:
        k = int((time.monotonic() - self.start) * self.fps)
        return Frame(self.frames[k % len(self.frames)], self.start + k / self.fps, k)

    def disconnect(self) -> None:
        pass


class DrivingPerson(TeleopSource):
    """Starts an episode whenever none records (unless `idle`), and drives all the time: a slow sweep."""

    name = "bench"

    def __init__(self, idle: bool):
        self.idle = idle
        self.t0 = time.monotonic()

    def poll(self, now: float) -> list[TeleopEvent]:
        return [] if self.idle else [TeleopEvent("start", ZERO, now)]  # ignored while an episode records

    def command(self, now: float) -> TeleopCommand:
        s = np.sin(now - self.t0)
        return TeleopCommand(self.scale((0.5 + 0.5 * s, 0.3 * s, 0.0)), True)


class TimedMotor:
    """The serial controller, with the time of every command kept (the control loop's rhythm)."""

    def __init__(self, motor: SerialMotorController):
        self.motor, self.times = motor, []

    def send_velocity(self, vx, vy, wz=0.0):
        self.times.append(time.monotonic())
        return self.motor.send_velocity(vx, vy, wz)

    def stop(self) -> bool:
        return self.motor.stop()


class TimedRecorder(Recorder):
    """The recorder, with each tick's duration kept."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tick_seconds: list[float] = []

    def tick(self, now: float) -> bool:
        t = time.perf_counter()
        try:
            return super().tick(now)
        finally:
            self.tick_seconds.append(time.perf_counter() - t)


def percentiles_ms(values) -> dict:
    v = np.asarray(values, float) * 1e3
    if not len(v):
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2),
            "max": round(float(v.max()), 2), "n": int(len(v))}


def run_phase(spec: RecordingBenchSpec, frames: np.ndarray, port: str, out: Path, seconds: float, idle: bool):
    motor = TimedMotor(SerialMotorController(port).connect())
    config = RecordConfig(out=out, mode="continuous", rate=spec.rate, control_rate=spec.control_rate,
                          episode_seconds=spec.episode_seconds, compression=spec.compression, status=False,
                          min_free_gb=0.0, attrs={"source": "benchmarks.recording"})
    recorder = TimedRecorder(FrameRateCamera(frames, spec.fps), motor, DrivingPerson(idle), SafetyGate(SafetyConfig()),
                             config, printer=lambda s: None)
    timer = threading.Timer(seconds, recorder.request_stop, args=("time",))
    timer.start()
    try:
        code = recorder.run()
    finally:
        timer.cancel()
        motor.motor.disconnect()
    intervals = np.diff(motor.times[5:])  # the first ticks open the link
    return code, recorder, intervals


def stored(out: Path, period: float) -> dict:
    """What the recording left: frames, spacing, dropped, per finished episode and the partial last one."""
    frames, gaps, dropped, seconds, due = 0, [], 0, 0.0, 0
    for path in sorted(p for p in out.glob("*episode_*.h5*") if p.suffix in (".h5", ".partial")):
        with h5py.File(path, "r") as f:
            t = f["capture_time"][()]
            frames += len(t)
            gaps.extend(np.diff(t).tolist())
            dropped += int(f.attrs.get("dropped_frames", 0))
            seconds += float(t[-1] - t[0]) if len(t) > 1 else 0.0
            # due: the frames one period apart that fit between its first and last capture (from the file alone)
            due += int(round(float(t[-1] - t[0]) / period)) + 1 if len(t) else 0
    gaps = np.asarray(gaps)
    return {"frames": frames, "due": due, "episodes": len(list(out.glob("episode_*.h5"))), "dropped": dropped,
            "seconds_spanned": round(seconds, 2),
            "spacing_mean_s": round(float(gaps.mean()), 4) if len(gaps) else None,
            "spacing_spread_s": round(float(gaps.std()), 4) if len(gaps) else None,
            "largest_gap_s": round(float(gaps.max()), 4) if len(gaps) else None}


def spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def bench(spec: RecordingBenchSpec, work: Path) -> dict:
    frames = sample_frames(spec.pool, seed=7, height=spec.height, width=spec.width)
    emulator = ControllerEmulator(link=str(work / "motor")).start()
    stop = multiprocessing.Event()
    busy = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(spec.busy_cores)]
    for process in busy:
        process.start()
    try:
        _, idle, idle_intervals = run_phase(spec, frames, emulator.port, work / "idle", spec.idle_seconds, idle=True)
        code, rec, intervals = run_phase(spec, frames, emulator.port, work / "rec", spec.seconds, idle=False)
    finally:
        stop.set()
        for process in busy:
            process.join(timeout=5)
        emulator.stop()
    files = stored(work / "rec", 1.0 / spec.rate)
    period = 1.0 / spec.control_rate
    loop_idle, loop_rec = percentiles_ms(idle_intervals), percentiles_ms(intervals)
    result = {
        "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__},
        "compression": spec.compression or default_compression(1.0 / spec.rate),
        "exit_code": code, "error": repr(rec.error) if rec.error else None,
        "stored": files,
        "rate_hz": round(1.0 / files["spacing_mean_s"], 2) if files["spacing_mean_s"] else 0.0,
        # due frames come from the stored capture times alone (each episode's span at the rate), so a frame the
        # loop passed over without counting it shows as lost: due - stored - dropped - missed
        "frames_due": files["due"], "frames_dropped_counted": rec.dropped, "frames_missed_counted": rec.missed,
        "frames_lost_uncounted": files["due"] - files["frames"] - rec.dropped - rec.missed,
        "control_period_ms": round(period * 1e3, 1),
        "control_interval_ms": {"idle": loop_idle, "recording": loop_rec},
        "tick_ms": {"idle": percentiles_ms(idle.tick_seconds), "recording": percentiles_ms(rec.tick_seconds)},
        "p99_interval_delta_ms": (round(loop_rec["p99"] - loop_idle["p99"], 2)
                                  if loop_rec["p99"] is not None and loop_idle["p99"] is not None else None),
        "load_average": os.getloadavg(),
        "machine": describe(),
    }
    return result


def report(r: dict) -> str:
    s, loop, tick = r["spec"], r["control_interval_ms"], r["tick_ms"]
    return "\n".join([
        f"recording {s['width']}x{s['height']} at {s['rate']:g} Hz for {s['seconds']:g} s "
        f"(compression {r['compression']}, control loop {s['control_rate']:g} Hz, {s['busy_cores']} core(s) kept busy)",
        f"  stored {r['stored']['frames']} frames at {r['rate_hz']:.2f} Hz; dropped (counted) "
        f"{r['frames_dropped_counted']}, missed (counted) {r['frames_missed_counted']}, lost uncounted "
        f"{r['frames_lost_uncounted']}",
        f"  spacing {r['stored']['spacing_mean_s']} s (spread {r['stored']['spacing_spread_s']}, largest gap "
        f"{r['stored']['largest_gap_s']})",
        f"  control interval ms (period {r['control_period_ms']}): idle p50 {loop['idle']['p50']} p99 "
        f"{loop['idle']['p99']} max {loop['idle']['max']} | recording p50 {loop['recording']['p50']} p99 "
        f"{loop['recording']['p99']} max {loop['recording']['max']} | p99 delta {r['p99_interval_delta_ms']}",
        f"  tick ms: idle p99 {tick['idle']['p99']} | recording p50 {tick['recording']['p50']} p99 "
        f"{tick['recording']['p99']} max {tick['recording']['max']}",
        f"  load average {', '.join(f'{v:.2f}' for v in r['load_average'])}",
    ])


def main(argv=None) -> int:
    d = RecordingBenchSpec()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=d.seconds, help="s recording")
    ap.add_argument("--idle-seconds", type=float, default=d.idle_seconds, help="s of the baseline, not recording")
    ap.add_argument("--width", type=int, default=d.width)
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--fps", type=float, default=d.fps, help="the camera's frame rate")
    ap.add_argument("--rate", type=float, default=d.rate, help="frames recorded per second")
    ap.add_argument("--control-rate", type=float, default=d.control_rate)
    ap.add_argument("--episode-seconds", type=float, default=d.episode_seconds)
    ap.add_argument("--compression", help="runtime.record --compression (default: the recorder's for the rate)")
    ap.add_argument("--busy-cores", type=int, default=d.busy_cores, help="processes spinning all along")
    ap.add_argument("--work", type=Path, help="where the episodes go (default: a temporary folder, removed)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    spec = RecordingBenchSpec(seconds=args.seconds, idle_seconds=args.idle_seconds, width=args.width,
                              height=args.height, fps=args.fps, rate=args.rate, control_rate=args.control_rate,
                              episode_seconds=args.episode_seconds, compression=args.compression,
                              busy_cores=args.busy_cores)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = bench(spec, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="mvla-rec-bench-") as work:
            result = bench(spec, Path(work))
    print(report(result))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
