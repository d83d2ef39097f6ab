"""The recording loop: a person drives by teleoperation, one HDF5 episode per demonstration.

    recorder = Recorder(camera, motor, teleop, SafetyGate(SafetyConfig()), RecordConfig(out=Path("rec")))
    code = recorder.run()        # until quit, --episodes, end of the camera stream, a signal; motors end at zero
    python -m runtime.record --out rec/ --teleop keyboard --serial /dev/ttyUSB0 --camera csi   # runtime/record.py

One thread: the device is read and the motors commanded at the control rate,
every command through the drive's safety gate. Every episode opens, as the
original collector's did, with a zero-action `episode_start` frame of the
scene before any move. Modes (docs/recording.md, docs/episode-format.md):
- `step` (the original collector's): each move (a key press, a stick push)
  captures one frame, runs the move for `step_duration` (0.4 s), then zero;
  the action stored is the command the motor side confirmed during the move
  (its last, after the safety gate's ramp). Letting go of the dead-man (the
  source's `held` turning False) stops a running move at once.
- `continuous`: a frame every 1/`rate` s while the person drives at the
  control rate; the action stored is the command in force at the frame's
  capture time; the episode stores the measured spacing and its spread.

Frames are written behind the loop (runtime/recording/background_writer.py): the loop never
waits on the disk; a frame the writer cannot take is dropped, counted, shown
on the status line and stored in `dropped_frames`. Episodes: the start control
or the first move starts one; the end control or `episode_seconds` ends it
(saved); discard drops it and records that number again; quit saves it and
stops; `episodes` stops after N. Between episodes a reset period keeps the
motors at zero while the scene is reset. Each episode is written to a hidden
`.NAME.partial` file and renamed when it ends (runtime/recording/episode_writer.py):
a crash or a kill leaves every finished episode and the partial one, which no
later run opens for writing. Recording stops with the episode saved before
the disk holds less than `min_free_gb`, and a write that fails anyway (the
disk filled from elsewhere) stops it with the frame named; motors end at zero.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from runtime.cli import CommandError
from runtime.control.config import DriveConfig
from runtime.control.safety import SafetyGate
from runtime.hardware import CameraStalled, DeviceError, EndOfStream, FrameTooOld, SentCommand
from runtime.logs import LiveLine, log_info
from runtime.policy.prompt import DEFAULT_INSTRUCTION
from runtime.recording.background_writer import BackgroundWriter
from runtime.recording.command_history import ZERO, CommandHistory
from runtime.recording.episode_writer import (
    EPISODE_NAME,
    EpisodeWriteError,
    EpisodeWriter,
    default_compression,
    existing_episodes,
    next_episode_number,
    partial_episodes,
)

log = logging.getLogger(__name__)
DISK_CHECK_S = 1.0  # s between two looks at the free disk space


@dataclass(frozen=True)
class RecordConfig:
    out: Path  # folder of episodes (created)
    mode: str = "step"  # "step" (one frame per move) or "continuous" (frames at `rate`)
    rate: float = 10.0  # frames per second in continuous mode
    control_rate: float = DriveConfig.rate  # Hz: the device is read and the motors commanded (the drive's rate)
    step_duration: float = DriveConfig.step_duration  # s per move in step mode (the original collector's key press)
    episodes: int | None = None  # stop after this many saved episodes
    episode_seconds: float | None = None  # end (and save) each episode after this long
    reset_seconds: float = 0.0  # s between episodes with the motors at zero (the start control ends it early)
    instructions: tuple[str, ...] = (DEFAULT_INSTRUCTION,)  # episode k gets number k modulo their count
    ask_instruction: bool = False  # the keyboard: type each episode's instruction after the start key (Enter keeps
    #                                the proposed one); episodes then start with the start key only
    resume: bool = False  # continue the numbering of a folder that already has episodes
    camera_timeout: float = DriveConfig.camera_timeout  # s a camera read may wait
    compression: str | None = None  # frames: gzip, gzip:N, lzf, none (episode_writer.frame_compression); None: what
    #                                 the frame spacing affords (gzip in step mode, lzf at 10 Hz: default_compression)
    min_free_gb: float = 1.0  # GB: recording stops (the episode saved) before the disk holds less than this
    status: bool = True  # one live status line on stderr
    attrs: dict = field(default_factory=dict)  # stored on every episode (source, camera, motor, speeds)

    @property
    def frame_spacing_s(self) -> float:
        """The spacing the frames aim at: the move's duration (step), 1/rate (continuous)."""
        return self.step_duration if self.mode == "step" else 1.0 / self.rate


def first_index(out: Path, resume: bool) -> int:
    """The number of the first episode to write: after every finished, partial and set-aside episode of the folder,
    so no partial file is ever opened again. Refuses to mix into a folder of finished episodes without --resume."""
    numbers = existing_episodes(out)
    if numbers and not resume:
        raise CommandError(f"--out {out}: already holds {len(numbers)} episode(s) (up to "
                           f"{EPISODE_NAME.format(numbers[-1])}); pass --resume to continue its numbering, or "
                           f"choose a new folder")
    partial = partial_episodes(out)
    if partial:
        log.warning("%s: %d unfinished episode(s) from an earlier run (%s), kept as they are: not training data "
                    "until recovered (python -m train.data recover %s NAME) or deleted", out, len(partial),
                    ", ".join(p.name for p in partial), out)
    return next_episode_number(out)


class Recorder:
    """The recording loop: one thread, the device read and the motors commanded at the control rate."""

    def __init__(self, camera, motor, teleop, gate: SafetyGate, config: RecordConfig, printer=None, rerun=None):
        self.camera, self.motor, self.teleop, self.gate, self.config = camera, motor, teleop, gate, config
        self.printer = printer or log_info
        self.rerun = rerun  # runtime.recording.rerun_log.RerunLog (--rerun): frames and commands, or None
        self.stop_requested = ""  # set by signal handlers (a plain attribute: see runtime.drive's request_stop)
        self.saved: list[Path] = []
        self._closing: list = []  # (writer, future, duration, why) of episodes being written out
        self.discarded = 0
        self.dropped = 0  # frames the writer could not take, over the whole run
        self.index = 0
        self.writer = None
        self.state = "idle"  # idle (waiting for start), recording, reset
        self.episode_started = 0.0
        self.reset_until = 0.0
        self.move = None  # step mode: (event, started, frame, held at its start) of the running move
        self.move_last = SentCommand(ZERO, sent=False)
        self.next_frame = 0.0
        self.history = CommandHistory()  # what went out and when: a continuous frame's label
        self.last_command = SentCommand(ZERO, sent=False)
        self._typed = ""  # the instruction typed last (--ask-instruction)
        self.ended_by = "stopped"  # why recording ended: quit, N episodes, end of the camera stream, a signal
        self.error: BaseException | None = None  # what stopped recording early (a full disk)
        self._frame_times: deque = deque(maxlen=20)
        self._status_at = 0.0
        self._disk_at = -float("inf")
        self.free_gb = float("inf")
        self.line = LiveLine(enabled=config.status)

    # -- motors ------------------------------------------------------------------------
    def _send_command(self, command) -> SentCommand:
        result = self.motor.send_velocity(*(float(v) for v in command))
        if not isinstance(result, SentCommand):
            raise TypeError(f"{type(self.motor).__name__}.send_velocity returned {type(result).__name__}, not "
                            f"runtime.hardware.SentCommand (see docs/motors.md)")
        self.last_command = result
        self.history.add(time.monotonic(), result)
        return result

    def _send(self, velocity, now: float) -> SentCommand:
        return self._send_command(self.gate.filter(velocity, now))

    def _zero(self, now: float) -> SentCommand:
        return self._send_command(self.gate.zero(now))  # explicit zeros keep the controller's watchdog fed

    def shutdown(self) -> bool:
        """Zero the motors: tried several times, this is the one command that must arrive."""
        self.gate.zero(time.monotonic())
        for _ in range(3):
            try:
                if self.motor.stop():
                    return True
            except Exception:
                time.sleep(0.02)
        return False

    # -- the disk ----------------------------------------------------------------------
    def _disk_low(self, now: float) -> bool:
        """Whether the free space fell under --min-free-gb (looked at once a second)."""
        if now - self._disk_at >= DISK_CHECK_S:
            self._disk_at = now
            self.free_gb = shutil.disk_usage(self.config.out).free / 1e9
        return self.free_gb < self.config.min_free_gb

    # -- episodes ----------------------------------------------------------------------
    def instruction(self, k: int) -> str:
        proposed = self._typed or self.config.instructions[k % len(self.config.instructions)]
        if not self.config.ask_instruction:
            return proposed
        self.line.clear()
        typed = self.teleop.ask(f"\rinstruction for episode {k + 1} [{proposed}]: ", lambda: bool(self.stop_requested))
        if len(typed.encode()) > 256:
            log.warning("instruction of %d bytes is over the format's 256: kept %r", len(typed.encode()), proposed)
            typed = ""
        self._typed = typed or proposed
        return self._typed

    def _begin(self, now: float) -> None:
        k = self.ended
        instruction = self.instruction(k)
        path = self.config.out / EPISODE_NAME.format(self.index)
        attrs = dict(self.config.attrs, recording_mode=self.config.mode, frame_spacing_s=self.config.frame_spacing_s,
                     control_rate_hz=self.config.control_rate, recorder="runtime.record")
        compression = self.config.compression or default_compression(self.config.frame_spacing_s)
        # the file is made on the writer's thread: the loop never waits for h5py (recording/background_writer.py)
        self.writer = BackgroundWriter(partial(EpisodeWriter, path, instruction, attrs=attrs, compression=compression),
                                       path=path)
        now = time.monotonic()  # the episode starts once its instruction is typed
        self.state, self.episode_started = "recording", now
        self.move = None
        log.info("episode %s started: %r", path.name, instruction)
        frame = self._read_frame()  # the collector's first frame: the scene before any move, a zero action
        if frame is not None:
            self._append(frame, ZERO)
        self.next_frame = (frame.stamp if frame is not None else now) + 1.0 / self.config.rate
        if self.rerun is not None:
            self.rerun.event(now, f"{path.name} begins: {instruction}")

    def _save(self, now: float, why: str) -> None:
        if self.move is not None:
            self._finish_move(now)
        writer = self.writer
        if writer.frames == 0:
            self.writer = None
            writer.abandon(keep=False)
            log.info("episode %s ended (%s) with no frames: nothing saved", writer.path.name, why)
        else:
            duration = now - self.episode_started
            # written out and renamed behind the loop (the queue may hold half a second of frames)
            future = writer.finish_later(duration_s=duration, **self._spacing_attrs(writer))
            self._closing.append((writer, future, duration, why))
            self.writer = None
            self.index = next_episode_number(self.config.out)
        self.state, self.reset_until = "reset", now + self.config.reset_seconds

    def _reap(self, wait: bool = False) -> None:
        """Episodes whose writing finished: saved, or (a write error) kept partial and the error raised."""
        failed = None
        for item in list(self._closing):
            writer, future, duration, why = item
            if not (wait or future.done()):
                continue
            self._closing.remove(item)
            try:
                path = future.result()
            except BaseException as e:
                kept = writer.abandon(keep=True)
                log.error("%s could not be saved (%s): its frames stay in %s", writer.path.name, e, kept)
                failed = failed or e
                continue
            self.saved.append(path)
            dropped = f", {writer.dropped} frame(s) dropped (the disk was too slow)" if writer.dropped else ""
            log.info("saved %s: %d frames, %.1f s (%s)%s", path.name, writer.frames, duration, why, dropped)
        if failed is not None:
            raise failed

    @property
    def ended(self) -> int:
        """Episodes ended and kept: saved, or being written out."""
        return len(self.saved) + len(self._closing)

    def _discard(self, now: float) -> None:
        writer, self.writer = self.writer, None
        writer.abandon(keep=False)
        self.discarded += 1
        self.move = None
        log.info("discarded %s (%d frames): recording it again", writer.path.name, writer.frames)
        self.state, self.reset_until = "reset", now + self.config.reset_seconds

    def _append(self, frame, velocity, intervention: bool = False) -> None:
        event = "episode_start" if self.writer.frames == 0 else ("start_action" if any(velocity) else "stop_action")
        if self.writer.append(frame.image, velocity, frame.stamp, event, intervention):
            self._frame_times.append(frame.stamp)
            if self.rerun is not None:  # the frame recorded and the action stored with it
                self.rerun.frame(frame.stamp, None, frame.image, velocity)
        else:
            self.dropped += 1

    def _read_frame(self):
        try:
            return self.camera.read(timeout=self.config.camera_timeout)
        except (CameraStalled, FrameTooOld) as e:
            log.warning("no frame: %s", e)
            return None

    # -- step mode ---------------------------------------------------------------------
    def _finish_move(self, now: float) -> None:
        _event, _started, frame, _held = self.move
        self.move = None
        velocity = self.move_last.velocity if self.move_last.sent else ZERO
        self._append(frame, velocity)

    def _step_tick(self, now: float, moves: list) -> None:
        if self.move is not None:
            event, started, _frame, held = self.move
            if held and not self.teleop.command(now).held:  # the dead-man let go: the move stops now
                self._zero(now)
                log.info("move stopped after %.2f s: the person let go", now - started)
                self._finish_move(now)
            elif now - started >= self.config.step_duration:
                self._zero(now)
                self._finish_move(now)
            else:
                self.move_last = self._send(event.velocity, now)
            return  # moves that arrive while one runs are dropped: a held key gives back-to-back moves
        if not moves:
            self._zero(now)
            return
        frame = self._read_frame()  # the scene the move starts from
        if frame is None:
            self._zero(now)
            return
        started = time.monotonic()
        self.move = (moves[0], started, frame, self.teleop.command(started).held)
        self.move_last = self._send(moves[0].velocity, started)

    # -- continuous mode ---------------------------------------------------------------
    def _continuous_tick(self, now: float) -> None:
        self._send(self.teleop.command(now).velocity, now)
        if now < self.next_frame:
            return
        self.next_frame += 1.0 / self.config.rate  # due times one period apart: no drift
        if self.next_frame < now:  # late (slow camera): no burst of frames to catch up
            self.next_frame = now + 1.0 / self.config.rate
        frame = self._read_frame()
        if frame is not None:
            self._append(frame, self.history.in_force(frame.stamp)[0])

    # -- the loop ----------------------------------------------------------------------
    def tick(self, now: float) -> bool:
        """One control period; False when recording is over."""
        events = self.teleop.poll(now)
        controls = [e.kind for e in events if e.kind != "move"]
        moves = [e for e in events if e.kind == "move"]
        if self.writer is not None and self.writer.error is not None:
            raise self.writer.error  # the disk filled up under the writer: stop, the frame is named
        self._reap()
        if "quit" in controls:
            if self.writer is not None:
                self._save(now, "quit")
            self.ended_by = "quit"
            return False
        if self._disk_low(now):
            raise EpisodeWriteError(f"{self.config.out}: {self.free_gb:.2f} GB free, under --min-free-gb "
                                    f"{self.config.min_free_gb:g}: recording stopped before the disk is full")
        if self.state == "recording":
            if "discard" in controls:
                self._discard(now)
            elif "end" in controls:
                self._save(now, "end")
            elif (self.config.episode_seconds is not None
                  and now - self.episode_started >= self.config.episode_seconds and self.move is None):
                self._save(now, f"{self.config.episode_seconds:g} s")
            elif self.config.mode == "step":
                self._step_tick(now, moves)
            else:
                self._continuous_tick(now)
            if self.state != "recording":
                self._zero(now)
                if self.config.episodes is not None and self.ended >= self.config.episodes:
                    self.ended_by = f"{self.config.episodes} episodes"  # no reset period after the last one
                    return False
        else:
            self._zero(now)
            if self.state == "reset" and ("start" in controls or now >= self.reset_until):
                self.state = "idle"
                if "start" in controls:
                    self._begin(now)
            elif self.state == "idle" and ("start" in controls or (moves and not self.config.ask_instruction)):
                self._begin(now)
                if moves and self.config.mode == "step":
                    self._step_tick(time.monotonic(), moves)
        if self.rerun is not None:  # what went out this tick, and idle / recording / reset
            self.rerun.sent(now, self.last_command, self.state)
        self._status()
        return True

    def status_text(self, now: float) -> str:
        n = self.config.episodes
        frames = self.writer.frames if self.writer is not None else 0
        seconds = now - self.episode_started if self.writer is not None else 0.0
        times = self._frame_times
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        v = self.last_command.velocity
        hint = {"idle": " (start: the start control or a move)", "reset": " (start: the start control)"}
        device = self.teleop.problem(now)
        return (f"{self.state}{hint.get(self.state, '')} | episode {self.ended + 1}{f' of {n}' if n else ''} | "
                f"{frames:4d} frames {seconds:5.1f} s {rate:4.1f} Hz"
                + (f" | DROPPED {self.dropped}" if self.dropped else "")
                + f" | cmd {v[0]:+.2f} {v[1]:+.2f} {v[2]:+.2f} | {self.free_gb:.1f} GB free"
                + (f" | {device}" if device else ""))

    def _status(self) -> None:
        now = time.monotonic()
        if not self.config.status or now - self._status_at < 0.2:  # a person reads it: 5 updates a second
            return
        self._status_at = now
        self.line.show(self.status_text(now))

    def request_stop(self, reason: str) -> None:
        """Safe from a signal handler: the loop sees the flag within one period."""
        self.stop_requested = reason

    def _start(self) -> None:
        import h5py  # noqa: F401, PLC0415  loaded before the loop: imported at the first episode, it took a tick 50 ms

        self.config.out.mkdir(parents=True, exist_ok=True)
        self.index = first_index(self.config.out, self.config.resume)
        if self._disk_low(time.monotonic()):
            raise CommandError(f"--out {self.config.out}: {self.free_gb:.2f} GB free, under --min-free-gb "
                               f"{self.config.min_free_gb:g}: free some space or lower --min-free-gb")
        legend = self.teleop.legend()
        if legend:
            log.info("%s", legend)

    def _keep_partial(self) -> None:
        """A signal or an error mid-episode: its frames stay, marked partial, under a name no run reuses."""
        writer, self.writer = self.writer, None
        kept = writer.abandon(keep=True, **self._spacing_attrs(writer))
        if kept:
            log.warning("episode stopped before its end: %d frames kept in %s (not training data until recovered: "
                        "python -m train.data recover %s %s)", writer.frames, kept, kept.parent, kept.name)

    def _spacing_attrs(self, writer) -> dict:
        """Continuous: the measured spacing and its spread (step mode keeps the move's duration)."""
        if self.config.mode == "step" or writer.error is not None or writer.frames < 2:
            return {}
        mean, spread = writer.spacing()
        return {"frame_spacing_s": mean, "frame_spacing_spread_s": spread}

    def run(self) -> int:
        """Record until quit, --episodes, end of the camera stream, a signal or an error. Motors end at zero."""
        self._start()
        period = 1.0 / self.config.control_rate
        error = None
        try:
            next_tick = time.monotonic()
            while not self.stop_requested:
                try:
                    if not self.tick(time.monotonic()):
                        break
                except EndOfStream as e:
                    self.ended_by = f"end of camera stream ({e})"
                    if self.writer is not None:
                        self._save(time.monotonic(), "end of camera stream")
                    break
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()
        except BaseException as e:
            error = e
        finally:
            confirmed = self.shutdown()
            if self.writer is not None:
                self._keep_partial()
            try:
                self._reap(wait=True)  # the episodes still being written out, motors already at zero
            except BaseException as e:
                error = error or e
            self.line.end()
        if self.stop_requested:
            self.ended_by = self.stop_requested
        if error is not None:
            self.error = error
            self.printer(f"error: recording stopped: {type(error).__name__}: {error}; {len(self.saved)} episode(s) "
                         f"saved in {self.config.out}; motors {'at zero' if confirmed else 'zeroed (unconfirmed)'}")
            if not isinstance(error, (DeviceError, OSError)):
                raise error
            return 1
        self.printer(f"recorded {len(self.saved)} episode(s) in {self.config.out} ({self.ended_by}); "
                     f"motors at zero")
        return 0
