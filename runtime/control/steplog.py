"""JSON-lines log of a drive: one record per inference step, plus safety events.

    with StepLog(Path("drive.jsonl")) as log: log.write({...})   # a previous drive.jsonl is kept, renamed
    records = read_log(Path("drive.jsonl"))
    replay_commands(records, motor)       # re-send the logged commands with their original timing

Step records: {"type": "step", "step", "t_capture", "t_preprocess", "t_vision", "t_language",
"t_head", "t_action", "t_serial", "timings_ms", "action", "command"} with times from
time.monotonic(); events: {"type": "zero", "reason", "t"}.

A log is never overwritten: systemd restarts a failed service two seconds
later with the same --log path, and the failed run's log is the one that
says why. An existing file is first renamed to PATH.<its last write time,
UTC> (drive.jsonl.20261129T031502Z; -2, -3 ... on a clash), so PATH is
always the current run and nothing is ever deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path


def keep_previous(path: Path) -> Path | None:
    """Rename an existing log to PATH.<mtime UTC>; returns the new name (None if there was none)."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    stamp = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target, n = path.with_name(f"{path.name}.{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{stamp}-{n}")
    os.replace(path, target)
    return target


class StepLog:
    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._file = None
        self.previous: Path | None = None  # where an earlier run's log at this path was moved
        self._lock = threading.Lock()

    def __enter__(self) -> StepLog:
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.previous = keep_previous(self.path)
            self._file = open(self.path, "x", buffering=1)  # line-buffered: a crash keeps what was written
        return self

    def __exit__(self, *exc) -> None:
        if self._file:
            self._file.close()
            self._file = None

    def write(self, record: dict) -> None:
        if self._file:
            with self._lock:
                self._file.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    records = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON line: {e}") from e
    return records


def replay_commands(records: list[dict], motor, speed: float = 1.0) -> int:
    """Send each step's logged command at its logged time offset; ends with a stop. Returns commands sent."""
    steps = [r for r in records if r.get("type") == "step" and r.get("command") is not None]
    if not steps:
        return 0
    t0, start = steps[0]["t_serial"], time.monotonic()
    try:
        for r in steps:
            delay = (r["t_serial"] - t0) / speed - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            motor.send_velocity(*r["command"])
    finally:
        motor.stop()
    return len(steps)
