"""The recording loop: a person drives by teleoperation, one HDF5 episode per demonstration.

    recorder = Recorder(camera, motor, teleop, SafetyGate(SafetyConfig()), RecordConfig(out=Path("rec")))
    code = recorder.run()        # until quit, --episodes, end of the camera stream, a signal; motors end at zero
    python -m runtime.record --out rec/ --teleop keyboard --serial /dev/ttyUSB0 --camera csi   # runtime/record.py

One thread: the device is read and the motors commanded at the control rate,
every command through the drive's safety gate. Modes (docs/recording.md,
docs/episode-format.md):
- `step` (the original collector's): each move (a key press, a stick push)
  captures one frame, runs the move for `step_duration` (0.4 s), then zero;
  the action stored is the command the motor side confirmed during the move
  (its last, after the safety gate's ramp).
- `continuous`: a frame every 1/`rate` s while the person drives at the
  control rate; the action stored is the command in force at the frame's
  capture time.

Episodes: the start control or the first move starts one; the end control or
`episode_seconds` ends it (saved); discard drops it and records that number
again; quit saves it and stops; `episodes` stops after N. Between episodes a
reset period keeps the motors at zero while the scene is reset. Each episode
is written to a hidden `.NAME.partial` file and renamed when it ends
(runtime/recording/episode_writer.py): a crash or a kill leaves every
finished episode and the partial one.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from runtime.cli import CommandError
from runtime.control.config import DriveConfig
from runtime.control.safety import SafetyGate
from runtime.hardware import CameraStalled, DeviceError, EndOfStream, FrameTooOld, SentCommand
from runtime.logs import log_info
from runtime.policy.prompt import DEFAULT_INSTRUCTION
from runtime.recording.command_history import CommandHistory
from runtime.recording.episode_writer import EPISODE_NAME, BackgroundWriter, EpisodeWriter, existing_episodes

log = logging.getLogger(__name__)


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
    compression: int = 4  # gzip level of the frames (the collector's)
    status: bool = True  # one live status line on stderr
    attrs: dict = field(default_factory=dict)  # stored on every episode (source, camera, motor, speeds)


def first_index(out: Path, resume: bool) -> int:
    """The number of the first episode to write; refuses to mix into a folder without --resume."""
    numbers = existing_episodes(out)
    if numbers and not resume:
        raise CommandError(f"--out {out}: already holds {len(numbers)} episode(s) (up to "
                           f"{EPISODE_NAME.format(numbers[-1])}); pass --resume to continue its numbering, or "
                           f"choose a new folder")
    partial = sorted(Path(out).glob(".episode_*.partial"))
    if partial:
        log.warning("%s: %d unfinished episode(s) from an earlier run (%s): not training data; rename one to "
                    "keep it, or delete it", out, len(partial), ", ".join(p.name for p in partial))
    return numbers[-1] + 1 if numbers else 0


class Recorder:
    """The recording loop: one thread, the device read and the motors commanded at the control rate."""

    def __init__(self, camera, motor, teleop, gate: SafetyGate, config: RecordConfig, printer=None, rerun=None):
        self.camera, self.motor, self.teleop, self.gate, self.config = camera, motor, teleop, gate, config
        self.printer = printer or log_info
        self.rerun = rerun  # runtime.recording.rerun_log.RerunLog (--rerun): frames and commands, or None
        self.stop_requested = ""  # set by signal handlers (a plain attribute: see runtime.drive's request_stop)
        self.saved: list[Path] = []
        self.discarded = 0
        self.index = 0
        self.writer = None
        self.state = "idle"  # idle (waiting for start), recording, reset
        self.episode_started = 0.0
        self.reset_until = 0.0
        self.move = None  # step mode: (event, started, frame) of the running move
        self.move_last = SentCommand((0.0, 0.0, 0.0), sent=False)
        self.next_frame = 0.0
        self.history = CommandHistory()  # what went out and when: a continuous frame's label
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=False)
        self._typed = ""  # the instruction typed last (--ask-instruction)
        self.ended_by = "stopped"  # why recording ended: quit, N episodes, end of the camera stream, a signal
        self._frame_times: deque = deque(maxlen=20)
        self._status_at = 0.0

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

    # -- episodes ----------------------------------------------------------------------
    def instruction(self, k: int) -> str:
        proposed = self._typed or self.config.instructions[k % len(self.config.instructions)]
        if not self.config.ask_instruction:
            return proposed
        typed = self.teleop.ask(f"\rinstruction for episode {k + 1} [{proposed}]: ", lambda: bool(self.stop_requested))
        if len(typed.encode()) > 256:
            log.warning("instruction of %d bytes is over the format's 256: kept %r", len(typed.encode()), proposed)
            typed = ""
        self._typed = typed or proposed
        return self._typed

    def _begin(self, now: float) -> None:
        k = len(self.saved)
        instruction = self.instruction(k)
        path = self.config.out / EPISODE_NAME.format(self.index)
        spacing = self.config.step_duration if self.config.mode == "step" else 1.0 / self.config.rate
        attrs = dict(self.config.attrs, recording_mode=self.config.mode, frame_spacing_s=spacing,
                     control_rate_hz=self.config.control_rate, recorder="runtime.record")
        self.writer = BackgroundWriter(EpisodeWriter(path, instruction, attrs=attrs,
                                                     compression=self.config.compression))
        self.state, self.episode_started, self.next_frame = "recording", now, now
        self.move = None
        log.info("episode %s started: %r", path.name, instruction)
        if self.rerun is not None:
            self.rerun.event(now, f"{path.name} begins: {instruction}")

    def _save(self, now: float, why: str) -> None:
        if self.move is not None:
            self._finish_move(now)
        writer, self.writer = self.writer, None
        if writer.frames == 0:
            writer.abandon(keep=False)
            log.info("episode %s ended (%s) with no frames: nothing saved", writer.path.name, why)
        else:
            duration = now - self.episode_started
            path = writer.finish(duration_s=duration)
            self.saved.append(path)
            self.index += 1
            log.info("saved %s: %d frames, %.1f s (%s)", path.name, writer.frames, duration, why)
        self.state, self.reset_until = "reset", now + self.config.reset_seconds

    def _discard(self, now: float) -> None:
        writer, self.writer = self.writer, None
        writer.abandon(keep=False)
        self.discarded += 1
        self.move = None
        log.info("discarded %s (%d frames): recording it again", writer.path.name, writer.frames)
        self.state, self.reset_until = "reset", now + self.config.reset_seconds

    def _append(self, frame, velocity, intervention: bool = False) -> None:
        event = "episode_start" if self.writer.frames == 0 else ("start_action" if any(velocity) else "stop_action")
        self.writer.append(frame.image, velocity, frame.stamp, event, intervention)
        self._frame_times.append(frame.stamp)
        if self.rerun is not None:  # the frame recorded and the action stored with it
            self.rerun.frame(frame.stamp, None, frame.image, velocity)

    def _read_frame(self):
        try:
            return self.camera.read(timeout=self.config.camera_timeout)
        except (CameraStalled, FrameTooOld) as e:
            log.warning("no frame: %s", e)
            return None

    # -- step mode ---------------------------------------------------------------------
    def _finish_move(self, now: float) -> None:
        _event, _started, frame = self.move
        self.move = None
        velocity = self.move_last.velocity if self.move_last.sent else (0.0, 0.0, 0.0)
        self._append(frame, velocity)

    def _step_tick(self, now: float, moves: list) -> None:
        if self.move is not None:
            _event, started, _frame = self.move
            if now - started >= self.config.step_duration:
                self._zero(now)
                self._finish_move(now)
            else:
                self.move_last = self._send(self.move[0].velocity, now)
            return  # moves that arrive while one runs are dropped: a held key gives back-to-back moves
        if not moves:
            self._zero(now)
            return
        frame = self._read_frame()  # the scene the move starts from
        if frame is None:
            self._zero(now)
            return
        self.move = (moves[0], time.monotonic(), frame)
        self.move_last = self._send(moves[0].velocity, time.monotonic())

    # -- continuous mode ---------------------------------------------------------------
    def _continuous_tick(self, now: float) -> None:
        self._send(self.teleop.command(now).velocity, now)
        if now < self.next_frame:
            return
        self.next_frame += 1.0 / self.config.rate
        if self.next_frame < now:  # late (slow camera or disk): no burst of frames to catch up
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
        if "quit" in controls:
            if self.writer is not None:
                self._save(now, "quit")
            self.ended_by = "quit"
            return False
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
                if self.config.episodes is not None and len(self.saved) >= self.config.episodes:
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
                    self._step_tick(now, moves)
        if self.rerun is not None:  # what went out this tick, and idle / recording / reset
            self.rerun.sent(now, self.last_command, self.state)
        self._status()
        return True

    def _status(self) -> None:
        now = time.monotonic()
        if not self.config.status or now - self._status_at < 0.2:  # a person reads it: 5 updates a second
            return
        self._status_at = now
        n = self.config.episodes
        frames = self.writer.frames if self.writer is not None else 0
        seconds = time.monotonic() - self.episode_started if self.writer is not None else 0.0
        times = self._frame_times
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        v = self.last_command.velocity
        free = shutil.disk_usage(self.config.out).free / 1e9
        sys.stderr.write(f"\r{self.state:<9} episode {len(self.saved) + 1}{f' of {n}' if n else ''} | "
                         f"{frames:4d} frames {seconds:5.1f} s {rate:4.1f} Hz | "
                         f"cmd {v[0]:+.2f} {v[1]:+.2f} {v[2]:+.2f} | {free:.1f} GB free ")
        sys.stderr.flush()

    def request_stop(self, reason: str) -> None:
        """Safe from a signal handler: the loop sees the flag within one period."""
        self.stop_requested = reason

    def run(self) -> int:
        """Record until quit, --episodes, end of the camera stream, a signal or an error. Motors end at zero."""
        self.config.out.mkdir(parents=True, exist_ok=True)
        self.index = first_index(self.config.out, self.config.resume)
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
            if self.writer is not None:  # a signal or an error mid-episode: its frames stay, marked partial
                writer, self.writer = self.writer, None
                kept = writer.abandon(keep=True)
                if kept:
                    log.warning("episode stopped before its end: %d frames kept in %s (not training data until "
                                "renamed)", writer.frames, kept)
            if self.config.status:
                sys.stderr.write("\n")
        if self.stop_requested:
            self.ended_by = self.stop_requested
        if error is not None:
            self.printer(f"error: recording stopped: {type(error).__name__}: {error}; motors "
                         f"{'at zero' if confirmed else 'zeroed (unconfirmed)'}")
            if not isinstance(error, (DeviceError, OSError)):
                raise error
            return 1
        self.printer(f"recorded {len(self.saved)} episode(s) in {self.config.out} ({self.ended_by}); "
                     f"motors at zero")
        return 0

