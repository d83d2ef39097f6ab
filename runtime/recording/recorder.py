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

Episodes: the start control or the first move starts one; the end control
or `episode_seconds` ends it (saved); discard drops it and records that
number again; quit saves it and stops; `episodes` stops after N. Between
episodes a reset period keeps the motors at zero while the scene is reset.
The episodes' files are runtime/recording/episode_files.py's: frames written
behind the loop (a frame the writer cannot take is dropped, counted, shown on
the status line), each episode a hidden partial file renamed when it ends,
recording stopped before the disk is full (the episode kept as a partial file, exit 1); motors end
at zero. What the person sees and types (the legend, the status line, each
episode's instruction) is runtime/recording/recording_screen.py's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.control.config import DriveConfig
from runtime.control.safety import SafetyGate
from runtime.hardware import CameraStalled, DeviceError, EndOfStream, FrameTooOld, SentCommand
from runtime.logs import log_info
from runtime.policy.prompt import DEFAULT_INSTRUCTION
from runtime.recording.command_history import ZERO, CommandHistory
from runtime.recording.episode_files import EpisodeFiles
from runtime.recording.recording_screen import RecordingScreen

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
    compression: str | None = None  # frames: gzip, gzip:N, lzf, none (episode_writer.frame_compression); None: what
    #                                 the frame spacing affords (gzip in step mode, lzf at 10 Hz: default_compression)
    min_free_gb: float = 1.0  # GB: recording stops (the episode kept partial, exit 1) before less is free
    status: bool = True  # one live status line on stderr
    attrs: dict = field(default_factory=dict)  # stored on every episode (source, camera, motor, speeds)

    @property
    def frame_spacing_s(self) -> float:
        """The spacing the frames aim at: the move's duration (step), 1/rate (continuous)."""
        return self.step_duration if self.mode == "step" else 1.0 / self.rate


class Recorder:
    """The recording loop: one thread, the device read and the motors commanded at the control rate."""

    def __init__(self, camera, motor, teleop, gate: SafetyGate, config: RecordConfig, printer=None, rerun=None):
        self.camera, self.motor, self.teleop, self.gate, self.config = camera, motor, teleop, gate, config
        self.printer = printer or log_info
        self.rerun = rerun  # runtime.recording.rerun_log.RerunLog (--rerun): frames and commands, or None
        self.stop_requested = ""  # set by signal handlers (a plain attribute: see runtime.drive's request_stop)
        self.files = EpisodeFiles(config)  # the episodes' files: the open one, those written out, the saved
        self.state = "idle"  # idle (waiting for start), recording, reset
        self.episode_started = 0.0
        self.reset_until = 0.0
        self.move = None  # step mode: (event, started, frame, held at its start) of the running move
        self.move_last = SentCommand(ZERO, sent=False)
        self.next_frame = 0.0
        self.missed = 0  # continuous: due frames not taken (a tick later than a frame period, a camera with none)
        self.history = CommandHistory()  # what went out and when: a continuous frame's label
        self.last_command = SentCommand(ZERO, sent=False)
        self.ended_by = "stopped"  # why recording ended: quit, N episodes, end of the camera stream, a signal
        self.error: BaseException | None = None  # what stopped recording early (a full disk)
        self.screen = RecordingScreen(teleop, config, self.files)  # the legend, the status line, instructions asked

    @property
    def dropped(self) -> int:
        """Frames the writer could not take, over the whole run."""
        return self.files.dropped

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
    def _begin(self, now: float) -> None:
        instruction = self.screen.instruction(self.files.ended, lambda: bool(self.stop_requested))
        path = self.files.open(instruction)
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
        self.files.save(now - self.episode_started, why)
        self.state, self.reset_until = "reset", now + self.config.reset_seconds

    def _discard(self, now: float) -> None:
        self.files.discard()
        self.move = None
        self.state, self.reset_until = "reset", now + self.config.reset_seconds

    def _append(self, frame, velocity) -> None:
        if self.files.append(frame, velocity) and self.rerun is not None:  # the frame recorded, its action stored
            self.rerun.frame(frame.stamp, None, frame.image, velocity)

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
        period = 1.0 / self.config.rate
        self.next_frame += period  # due times one period apart: no drift
        if self.next_frame < now:  # late (slow camera): no burst of frames to catch up; the passed ones counted
            passed = int((now - self.next_frame) / period) + 1
            self.missed += passed
            log.debug("%d due frame(s) passed over: the loop was %.0f ms late", passed, (now - self.next_frame) * 1e3)
            self.next_frame = now + period
        frame = self._read_frame()
        if frame is not None:
            self._append(frame, self.history.in_force(frame.stamp)[0])
        else:
            self.missed += 1

    # -- the loop ----------------------------------------------------------------------
    def tick(self, now: float) -> bool:
        """One control period; False when recording is over."""
        events = self.teleop.poll(now)
        controls = [e.kind for e in events if e.kind != "move"]
        moves = [e for e in events if e.kind == "move"]
        self.files.check_writer()  # the disk filled up under the writer: stop, the frame is named
        self.files.reap()
        if "quit" in controls:
            if self.files.writer is not None:
                self._save(now, "quit")
            self.ended_by = "quit"
            return False
        self.files.check_disk(now)
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
                if self.config.episodes is not None and self.files.ended >= self.config.episodes:
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
        self.screen.update(self.state, self.episode_started, self.last_command)
        return True

    def request_stop(self, reason: str) -> None:
        """Safe from a signal handler: the loop sees the flag within one period."""
        self.stop_requested = reason

    def _start(self) -> None:
        import h5py  # noqa: F401, PLC0415  loaded before the loop: imported at the first episode, it took a tick 50 ms

        self.files.start()
        self.screen.legend()

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
                    if self.files.writer is not None:
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
            if self.files.writer is not None:
                self.files.keep_partial()
            try:
                self.files.reap(wait=True)  # the episodes still being written out, motors already at zero
            except BaseException as e:
                error = error or e
            self.screen.end()
        if self.stop_requested:
            self.ended_by = self.stop_requested
        if error is not None:
            self.error = error
            self.printer(f"error: recording stopped: {type(error).__name__}: {error}; {len(self.files.saved)} "
                         f"episode(s) saved in {self.config.out}; motors "
                         f"{'at zero' if confirmed else 'zeroed (unconfirmed)'}")
            if not isinstance(error, (DeviceError, OSError)):
                raise error
            return 1
        self.printer(f"recorded {len(self.files.saved)} episode(s) in {self.config.out} ({self.ended_by}); "
                     f"motors at zero")
        return 0
