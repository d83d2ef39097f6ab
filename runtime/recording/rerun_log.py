"""What the robot saw and did, logged to Rerun from a background thread that the control loop never waits on.

    python -m runtime.drive --bundle bundle/ --serial /dev/ttyUSB0 --camera csi --rerun drive.rrd
    python -m runtime.drive ... --rerun rerun+http://192.168.1.20:9876/proxy --rerun-cpus 3   # a laptop's viewer
    python -m sim.drive --bundle bundle/ --seed 3 --rerun sim-drive.rrd

    with RerunLog(RerunSpec("drive.rrd")) as rerun:     # drive() and record() open it (--rerun)
        rerun.follow(authority)                          # the motion authority's transitions, as events
        rerun.instruction(policy.instruction)
        rerun.inferred(frame, out, record)               # the drive's inference thread, after each inference
        rerun.sent(now, loop.last_command, state)        # the control thread, once a tick
        rerun.frame(stamp, step, image_bgr, action)      # the recorder: a frame and the action stored with it
    rerun.logged, rerun.dropped

`rerun-sdk` is an optional extra (`pip install -e '.[rerun]'`): nothing here
imports it until a RerunLog is opened, so `runtime.drive` starts and runs
without it, and `--rerun` without it is a clear error.

Each call only appends a tuple of references to a bounded queue (a deque: a
few microseconds, no lock to wait on, nothing copied or converted in the
caller's thread); the log's own thread downscales and JPEG-encodes the frame, converts, and hands
everything to Rerun's own batcher. A full queue (a slow
viewer, a slow disk) drops the item and counts it (`dropped`, logged as
`rerun/dropped`): the loop's timing never depends on the viewer. With
`cpus`, the thread is pinned to those cores before it opens the recording,
and Rerun's own threads, started from it, inherit the pinning (Linux), which
keeps the logging off the cores the control loop and the engines run on.

Targets: a path ending in `.rrd` is written as `.NAME.rrd.partial` and renamed
when the log closes (nothing half-written under the final name); a
`rerun+http://HOST:PORT/proxy` URL streams to a viewer started with `rerun`
on that machine (it listens on port 9876; docs/recording.md, "Live from the
robot"). A viewer that cannot be reached never holds the drive up: the
connection is made in the queue's thread (Rerun gives up after about 5 s,
and the items are dropped), and closing waits at most `close_timeout_s` for
the last items to leave.

Entities (timelines `time`: seconds since the first item, `step`: the
inference step): `camera/image` (the frame the policy saw, downscaled and
JPEG-compressed, BGR), `camera/image/action` (the action as an arrow on the
frame: up is forward, left is left), `action/{linear_x,linear_y,angular_z}`
(the policy's action), `plan/chunk` (the chunk as a path seen from above,
x forward, y left, one action period per point), `sent/{linear_x,...}` (what
left after the safety gate, every control tick), `state` (driving / zero:
why / disarmed / e-stop (cause) ..., one line per change), `instruction`, `events` (the
motion authority's transitions: arm, disarm, e-stop, faults, fences, each
with its cause and epoch), `latency/<stage>` (ms: `camera` the frame's age
when its inference began, the policy's stages, `inference` all of them,
`capture_to_plan` from the frame's capture to its plan), `rerun/dropped`.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.cli import CommandError

log = logging.getLogger(__name__)
AXES = ("linear_x", "linear_y", "angular_z")
URL_PREFIXES = ("rerun+http://", "rerun+https://", "rerun://")
PARTIAL_SUFFIX = ".partial"
INSTALL = "pip install -e '.[rerun]' (or pip install 'rerun-sdk>=0.41,<0.42')"
OPEN_WAIT_S = 1.0  # s the caller waits for a viewer's connection before it goes on (it goes on connecting)
POLL_S = 0.005  # s the log's thread sleeps when it finds nothing queued (the callers never signal it)


class RerunUnavailable(RuntimeError):
    """rerun-sdk is not installed, or the target cannot be opened; the message says what to do."""


def import_rerun():
    """The rerun module, or a RerunUnavailable that says how to install it."""
    try:
        import rerun as rr  # noqa: PLC0415  rerun-sdk: an optional extra, loaded only when a view is asked for
    except ImportError as e:
        raise RerunUnavailable(f"Rerun views need rerun-sdk: {INSTALL}") from e
    return rr


def is_url(target) -> bool:
    return str(target).startswith(URL_PREFIXES)


def partial_rrd(path: Path) -> Path:
    """Where an .rrd is written until its log closes."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


class RerunRecording:
    """One Rerun recording stream to a file or a viewer; `close()` flushes, and renames a file to its final name.

    target: PATH.rrd, a rerun+http://HOST:PORT/proxy URL, or "spawn" (start the local viewer)."""

    def __init__(self, target, app_id: str, recording_id: str | None = None):
        self.rr = rr = import_rerun()
        self.target = str(target)
        self.path: Path | None = None
        self.stream = rr.RecordingStream(app_id, recording_id=recording_id)
        if self.target == "spawn":
            self.stream.spawn()
        elif is_url(self.target):
            self.stream.connect_grpc(self.target)
        else:
            self.path = Path(self.target)
            if self.path.suffix != ".rrd":
                raise RerunUnavailable(f"Rerun target {self.target!r}: expected a path ending in .rrd or a "
                                       f"rerun+http://HOST:PORT/proxy URL")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.stream.save(partial_rrd(self.path))

    def close(self, timeout: float = 1e38) -> Path | None:
        """Flush (at most `timeout` s) and disconnect; a file is renamed to its final name. Returns the file's path
        (None for a viewer). A viewer that went away is logged, never raised: the drive is over by then."""
        try:
            self.stream.flush(timeout_sec=timeout)
        except RuntimeError as e:  # Rerun: "gRPC has been unable to connect for 6s"
            log.warning("rerun: %s: %s", self.target, e)
        self.stream.disconnect()
        if self.path is None:
            return None
        os.replace(partial_rrd(self.path), self.path)
        return self.path


def encode_jpeg(image_bgr: np.ndarray, width: int | None, quality: int) -> bytes:
    """A BGR frame downscaled to `width` (keeping its aspect) and JPEG-encoded."""
    h, w = image_bgr.shape[:2]
    if width and w > width:
        image_bgr = cv2.resize(image_bgr, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image_bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a frame of shape {image_bgr.shape}")
    return data.tobytes()


def action_arrow(action, width: int, height: int, top: float) -> tuple[list, list]:
    """(origin, vector) in pixels of an arrow for a body velocity drawn on a frame: forward is up, left is left;
    `top` (the largest speed) spans 40 % of the frame's height."""
    vx, vy = float(action[0]), float(action[1])
    scale = 0.4 * height / max(top, 1e-6)
    return [width / 2, height * 0.95], [-vy * scale, -vx * scale]


def chunk_path(chunk: np.ndarray, period: float) -> np.ndarray:
    """A chunk of body velocities (N, >=2) as the path it plans from here, (N + 1, 2) metres (x forward, y left),
    one action period per point (rotation ignored: the moves are short)."""
    steps = np.asarray(chunk, np.float64)[:, :2] * period
    return np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def parse_cpus(text: str) -> tuple[int, ...]:
    """--rerun-cpus "3" or "2,3" or "4-5": cores of this machine. Not limited to the process's own affinity: under
    `taskset -c 0-4 python -m runtime.drive ... --rerun-cpus 5` the log's thread moves itself to core 5."""
    try:
        cpus = sorted({c for part in text.split(",") if part.strip() for c in (
            range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])})
    except ValueError:
        raise CommandError(f"--rerun-cpus {text!r}: expected core numbers such as 3, 2,3 or 4-5") from None
    count = os.cpu_count() or 1
    missing = [c for c in cpus if not 0 <= c < count]
    if not cpus or missing:
        raise CommandError(f"--rerun-cpus {text!r}: core(s) {missing or text} not on this machine, which has cores "
                           f"0-{count - 1}")
    return tuple(cpus)


@dataclass(frozen=True)
class RerunSpec:
    target: str  # PATH.rrd or rerun+http://HOST:PORT/proxy (runtime.drive --rerun)
    app_id: str = "mobile_vla_drive"  # the viewer groups recordings by this name
    depth: int = 64  # items the queue holds; when full, new ones are dropped and counted (never waited on)
    image_width: int = 320  # px: frames are downscaled to this width before JPEG encoding (0 keeps their size)
    jpeg_quality: int = 75  # JPEG quality of the logged frames
    top_speed: float = 0.5  # m/s the action arrow's full length stands for (drive(): the gate's --max-speed)
    chunk_spacing_s: float = 0.1  # s between a chunk's actions, for drawing the planned path (drive(): the bundle's)
    cpus: tuple[int, ...] = ()  # cores the logging thread (and Rerun's threads) may run on; () = any
    close_timeout_s: float = 10.0  # s closing waits for the queue and the viewer before it gives up on them

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RerunSpec | None:
        """None without --rerun."""
        if not args.rerun:
            return None
        return cls(args.rerun, cpus=parse_cpus(args.rerun_cpus) if args.rerun_cpus else ())


def add_rerun_arguments(ap: argparse.ArgumentParser) -> None:
    """--rerun and --rerun-cpus (runtime.drive, runtime.record, sim.drive, sim.record)."""
    ap.add_argument("--rerun", metavar="FILE.rrd|rerun+http://HOST:PORT/proxy",
                    help="log what the robot saw and did to Rerun: the frames the policy saw, its actions and "
                         "chunks, what was sent after the safety gate, the state and the latencies; a file, or a "
                         f"viewer started with `rerun` on a laptop (docs/recording.md). Needs rerun-sdk: {INSTALL}")
    ap.add_argument("--rerun-cpus", metavar="CORES",
                    help="with --rerun: the cores its logging may use (3, 2,3 or 4-5), off the control loop's and "
                         "the engines' (docs/recording.md)")


def state_level(state: str) -> str:
    """How a state line shows: an e-stop is an error, a robot held at zero a warning, the rest information."""
    if state.startswith("e-stop"):
        return "ERROR"
    if state.startswith(("zero", "link down", "disarmed", "fault", "no acknowledgement")):
        return "WARN"
    return "INFO"


class RerunLog:
    """The drive's Rerun log: every call is a non-blocking put on a bounded queue; one thread does the rest."""

    def __init__(self, spec: RerunSpec):
        import_rerun()  # fail here, in the caller's thread, with the install hint
        self.spec = spec
        self.logged = 0  # items written to the recording
        self.path: Path | None = None
        # A deque, not a queue.Queue: appending is one step under the interpreter's lock, with no lock of its own
        # that the log's thread could hold; a caller that waited on one would then wait for the interpreter's
        # lock while the log's thread converts a frame (measured: the calls' p99 went from 2-6 ms to microseconds)
        self._items: deque = deque()
        self._drops: dict[int, int] = {}  # per calling thread: each thread writes only its own entry
        self._closing = False
        self._t0: float | None = None
        self._state = ""
        self._rec: RerunRecording | None = None
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rerun-log", daemon=True)
        self._thread.start()
        # a file opens at once; a viewer's connection may take Rerun up to 5 s: the caller goes on meanwhile
        self._opened.wait(timeout=OPEN_WAIT_S if is_url(spec.target) else 30)
        if self._error is not None:
            raise RerunUnavailable(f"--rerun {spec.target}: {self._error}") from self._error
        if not self._opened.is_set():
            log.warning("rerun: still connecting to %s; the drive goes on (items wait in the queue, then are "
                        "dropped and counted)", spec.target)

    # -- called from the drive's threads: never block --------------------------------------------
    def _put(self, item: tuple) -> None:
        if len(self._items) < self.spec.depth:
            self._items.append(item)
        else:
            ident = threading.get_ident()
            self._drops[ident] = self._drops.get(ident, 0) + 1

    @property
    def dropped(self) -> int:
        """Items refused because the queue was full."""
        return sum(self._drops.values())

    def inferred(self, frame, out, record: dict) -> None:
        """After an inference (the drive's inference thread): the runtime.hardware.Frame the policy saw, what it
        returned (its action and chunk) and the step's record (its number, capture and inference times, the
        stages' timings). References only: read in the queue's thread, never changed after this call."""
        self._put(("inferred", frame, out, record))

    def follow(self, authority) -> None:
        """Log each of the motion authority's transitions (runtime/control/authority.py) as an event, with its
        cause and epoch: called under the authority's lock by whichever thread caused it, so only a put."""
        authority.listeners.append(lambda epoch, started: self._put(("transition", authority.history[-1])))

    def frame(self, stamp: float, step: int | None, image_bgr: np.ndarray, action=None, chunk=None,
              timings_ms: dict | None = None) -> None:
        """A frame (its capture time; `step` None: no step), the action and chunk planned or stored with it, and
        stage latencies."""
        self._put(("frame", stamp, step, image_bgr, action, chunk, timings_ms))

    def sent(self, now: float, command, state: str = "") -> None:
        """What left after the safety gate (a runtime.hardware.SentCommand or a velocity), and the loop's state
        (logged when it changes)."""
        self._put(("sent", now, command, state))

    def instruction(self, text: str) -> None:
        """What the robot was told to do (`instruction`, shown beside the frames)."""
        self._put(("instruction", time.monotonic(), text))

    def event(self, now: float, text: str) -> None:
        """A line on the `events` log (a reset, a take-over, an arming change)."""
        self._put(("event", now, text))

    # -- the queue's thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.spec.cpus and hasattr(os, "sched_setaffinity"):
                try:  # this thread; Rerun's threads started below inherit it
                    os.sched_setaffinity(0, set(self.spec.cpus))
                except OSError as e:
                    raise OSError(f"--rerun-cpus {','.join(map(str, self.spec.cpus))}: the kernel refused ({e.strerror}"
                                  f"; cores outside this container's or cgroup's cpuset?)") from e
            rec = RerunRecording(self.spec.target, self.spec.app_id)
        except BaseException as e:
            self._error = e
            self._opened.set()
            if is_url(self.spec.target):  # the caller went on: say it here
                log.error("rerun: --rerun %s: %s; nothing is logged", self.spec.target, e)
            return
        self._rec = rec
        self._opened.set()
        rr, stream = rec.rr, rec.stream
        while True:
            try:
                item = self._items.popleft()
            except IndexError:
                if self._closing:
                    return
                time.sleep(POLL_S)
                continue
            try:
                self._write(rr, stream, item)
                self.logged += 1
            except Exception as e:  # a bad item never stops the drive; say it once per kind
                log.warning("rerun: could not log a %s item: %s", item[0], e)

    def _time(self, stream, t: float, step: int | None = None) -> None:
        if self._t0 is None:
            self._t0 = t
        # a frame captured before the first item arrived is a little before 0 (the threads' items interleave)
        stream.set_time("time", duration=t - self._t0)
        if step is not None:
            stream.set_time("step", sequence=int(step))

    def _write(self, rr, stream, item: tuple) -> None:
        kind = item[0]
        if kind == "inferred":
            _, frame, out, record = item
            timings = dict(record.get("timings_ms") or {})
            capture, start, done = record.get("t_capture"), record.get("t_infer_start"), record.get("t_action")
            if None not in (capture, start, done):
                timings.update(camera=(start - capture) * 1e3, inference=(done - start) * 1e3,
                               capture_to_plan=(done - capture) * 1e3)
            item = ("frame", frame.stamp, record.get("step"), frame.image, getattr(out, "action", None),
                    getattr(out, "chunk", None), timings)
            kind = "frame"
        if kind == "frame":
            _, stamp, step, image, action, chunk, timings = item
            self._time(stream, stamp, step)
            h, w = image.shape[:2]
            data = encode_jpeg(image, self.spec.image_width, self.spec.jpeg_quality)
            sw = min(w, self.spec.image_width) if self.spec.image_width else w
            sh = max(1, round(h * sw / w))
            stream.log("camera/image", rr.EncodedImage(contents=data, media_type="image/jpeg"))
            if action is not None:
                origin, vector = action_arrow(action, sw, sh, self.spec.top_speed)
                stream.log("camera/image/action", rr.Arrows2D(origins=[origin], vectors=[vector], colors=[0, 200, 0]))
                for axis, value in zip(AXES, np.asarray(action, np.float64).reshape(-1)):
                    stream.log(f"action/{axis}", rr.Scalars(float(value)))
            if chunk is not None and np.ndim(chunk) == 2 and len(chunk):
                stream.log("plan/chunk", rr.LineStrips2D([chunk_path(chunk, self.spec.chunk_spacing_s)]))
            for stage, ms in (timings or {}).items():
                stream.log(f"latency/{stage}", rr.Scalars(float(ms)))
            stream.log("rerun/dropped", rr.Scalars(float(self.dropped)))
        elif kind == "sent":
            _, now, command, state = item
            self._time(stream, now)
            for axis, value in zip(AXES, getattr(command, "velocity", command)):
                stream.log(f"sent/{axis}", rr.Scalars(float(value)))
            if state and state != self._state:
                self._state = state
                stream.log("state", rr.TextLog(state, level=state_level(state)))
        elif kind == "transition":
            t = item[1]
            self._time(stream, t.time)
            stream.log("events", rr.TextLog(f"{t.before} -> {t.after}: {t.event} by {t.cause} (epoch {t.epoch})",
                                            level="ERROR" if t.after == "e-stop" else
                                            "INFO" if t.after == "armed" else "WARN"))
        elif kind == "instruction":
            _, now, text = item
            self._time(stream, now)
            stream.log("instruction", rr.TextDocument(text))
        elif kind == "event":
            _, now, text = item
            self._time(stream, now)
            stream.log("events", rr.TextLog(text))

    def close(self, timeout: float | None = None) -> Path | None:
        """Write what is queued, close the recording (an .rrd gets its final name), within `timeout` s (the
        spec's close_timeout_s): what is still queued then is dropped. Returns the file or None."""
        if not self._thread.is_alive():
            return None
        deadline = time.monotonic() + (self.spec.close_timeout_s if timeout is None else timeout)
        self._closing = True  # the thread writes what is queued, then ends
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("rerun: the log did not finish within its %g s; the rest is dropped",
                        self.spec.close_timeout_s if timeout is None else timeout)
        if self._rec is not None:
            self.path = self._rec.close(timeout=max(0.5, deadline - time.monotonic()))
        level = logging.WARNING if self.dropped else logging.INFO
        log.log(level, "rerun: %d items logged, %d dropped (queue full)%s", self.logged, self.dropped,
                f", {self.path}" if self.path else "")
        return self.path

    def __enter__(self) -> RerunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
