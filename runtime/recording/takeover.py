"""A person takes over while the policy drives, and the run is recorded with each frame tagged (HG-DAgger).

    python -m runtime.drive --bundle b/ --serial /dev/ttyUSB0 --camera csi --teleop keyboard --record runs/
    python -m sim.drive --bundle b/ --seed 3 --teleop joystick:/dev/input/js0 --record runs/
    python -m sim.drive --bundle b/ --seed 3 --teleop expert --record runs/     # the scripted person (sim/)

While the person holds control (a key's move running, the gamepad's dead-man
button held, fresh ROS 2 messages: `runtime.teleop`'s `held`), the person's
command replaces the policy's action on every control tick, through the same
safety gate; letting go returns control to the policy at the next tick.

`--record DIR` writes the whole run as one episode (runtime/recording/episode_writer.py,
numbered after everything DIR holds, partial files included) at the frame
spacing the policy was trained on, so a correction trains the next policy
(docs/recording.md section 6):
- continuous mode: of the frames the inference thread takes, those one
  trained spacing apart (the bundle's `driving.frame_spacing_s`, kept by
  runtime/policy/frame_sampler.py, the ring's rule); the action stored is
  the command in force at the frame's capture; `frame_spacing_s` is the
  measured mean spacing (and `frame_spacing_spread_s` its spread), warned
  about when it is not the trained one (inference slower than the spacing);
- step mode: every frame the policy took for a move, and while the person
  drives one frame every step spacing (the loop hands over frames as fast as
  it takes them then: those in between are not recorded); the action stored
  is the move that followed the frame
  (the last non-zero command sent before the next frame), as a step-mode
  recording stores it; `frame_spacing_s` is the step duration.
Attributes: `policy_driven` True, `takeovers` (how often the person took
over); dataset `intervention` 1 where the person drove. `train.fit
--intervention-weight/--policy-weight` weigh them. Ended by a signal or the
end of the run, the episode is saved; a kill leaves it as a hidden partial file.

What the drive loop calls (runtime/control/), and when:
- `command(now)`: control thread, every tick, before the policy's plan: the
  person's velocity (the loop sends it through the gate, as a mode of
  armed), or None (the policy drives);
- `sent(now, result, person)`: control thread, after every send;
- `captured(frame)`: inference thread, on every frame it takes. In step mode
  the loop keeps frames coming while the person drives (runtime/control/loop.py
  signals the policy's move done on each tick the person drives, so its
  inference thread never waits for a move that is not made), and the take-over
  keeps one every step spacing. A plan from a frame the person drove over is
  never sent: the authority's epoch changes at the take-over and the hand-back.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from runtime.cli import CommandError
from runtime.hardware import SentCommand, TeleopSource
from runtime.policy.bundle import read_driving
from runtime.policy.driving import SPACING_TOLERANCE, same_spacing
from runtime.policy.frame_sampler import FrameSampler
from runtime.recording.command_history import CommandHistory
from runtime.recording.recorder import RecordConfig
from runtime.teleop.select import SOURCES, add_joy_map_argument, open_teleop

log = logging.getLogger(__name__)
DUE_SLACK_S = 1e-3  # s: a frame that lands on the spacing (0.4 s = 8 ticks at 20 Hz) counts as on time


@dataclass(frozen=True)
class TakeoverSpec:
    teleop: str  # --teleop SOURCE: the person's device (runtime.teleop.select.SOURCES)
    mode: str  # the drive's mode (continuous, step): which frames are kept and which command a frame's action is
    record: Path | None = None  # --record DIR: the run as one episode there; None: not recorded
    instruction: str = ""  # stored with the episode (the policy's instruction)
    frame_spacing_s: float = 0.0  # continuous: the trained spacing (the bundle's); step: the step duration. Needed
    #                               to record; from_args reads it from the bundle
    joy_map: str | None = None  # --joy-map: a gamepad's layout (runtime.teleop.select.GAMEPAD_MAPS or a JSON file)
    min_free_gb: float = RecordConfig.min_free_gb  # GB: the run's recording stops (its episode saved; the drive goes
    #                                                on) before less is free: the recorder's --min-free-gb
    source: TeleopSource | None = field(default=None, compare=False)  # a caller's own device (the simulator's
    #                                                                    scripted person), opened here; else --teleop

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TakeoverSpec | None:
        if getattr(args, "teleop", None) is None:
            if getattr(args, "record", None) is not None:
                raise CommandError("--record DIR records a run with take-over: it needs --teleop SOURCE")
            return None
        trained = read_driving(args.bundle).frame_spacing_s if getattr(args, "bundle", None) else 0.0
        spacing = float(args.step_duration) if args.mode == "step" else trained
        if args.record is not None and trained and not same_spacing(spacing, trained):
            raise CommandError(f"--record with --step-duration {spacing:g}: the corrections would be frames "
                               f"{spacing:g} s apart, but {args.bundle} was trained on frames {trained:g} s apart "
                               f"(more than {SPACING_TOLERANCE:.0%} off), so train.fit would refuse to fit them with "
                               f"its demonstrations; drive at the bundle's --step-duration to record corrections")
        return cls(args.teleop, args.mode, args.record, frame_spacing_s=spacing, joy_map=getattr(args, "joy_map", None),
                   min_free_gb=getattr(args, "min_free_gb", cls.min_free_gb))


def add_takeover_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--teleop", help=f"a person may take over with this device while it is held: {SOURCES}")
    ap.add_argument("--record", type=Path, help="with --teleop: record the run as an episode in this folder, each "
                                                "frame tagged policy or intervention, at the bundle's frame spacing")
    ap.add_argument("--min-free-gb", type=float, default=TakeoverSpec.min_free_gb,
                    help="with --record: the run's recording stops (its episode saved, the drive goes on) before the "
                         "disk holds less than this")
    add_joy_map_argument(ap)


class Takeover:
    """The person's override and the run's recording, for one drive."""

    def __init__(self, teleop, spec: TakeoverSpec):
        if spec.mode not in ("step", "continuous"):
            raise ValueError(f"take-over: mode {spec.mode!r}: expected step or continuous")
        if spec.record is not None and not spec.frame_spacing_s > 0:
            raise ValueError("take-over recording: TakeoverSpec.frame_spacing_s must be the policy's trained frame "
                             "spacing (continuous) or the step duration (step), > 0 s; TakeoverSpec.from_args reads "
                             "it from the bundle")
        self.teleop, self.spec = teleop, spec
        self.history = CommandHistory()  # what went out, by whom: each frame's label
        self.sampler = FrameSampler(spec.frame_spacing_s) if spec.mode == "continuous" and spec.record else None
        self._pending = None  # step mode: the frame waiting for the move that follows it
        self._last_stamp: float | None = None  # capture time of the newest frame kept
        self.writer = None
        self._saving = None  # (writer, future) of the run's episode saved early (the disk's reserve reached)
        self._disk_at = -float("inf")
        self.holding = False
        self.interventions = 0  # control ticks the person drove
        self.takeovers = 0  # times the person took control

    # -- control thread ----------------------------------------------------------------------------
    def command(self, now: float):
        """The person's velocity when they hold control now, else None (the policy drives)."""
        self.teleop.poll(now)  # controls are not used while driving; moves are read as the command in force
        cmd = self.teleop.command(now)
        if cmd.held != self.holding:
            log.info("%s", "the person took over" if cmd.held else "control back to the policy")
            self.holding = cmd.held
            self.takeovers += cmd.held
        if not cmd.held:
            return None
        self.interventions += 1
        return cmd.velocity

    def sent(self, now: float, result: SentCommand, person: bool) -> None:
        self.history.add(time.monotonic(), result, person)

    # -- inference thread --------------------------------------------------------------------------
    def captured(self, frame) -> None:
        """A frame the policy saw: recorded (continuous: at the trained spacing, now; step: when the next frame
        shows the move that followed it)."""
        if (self.spec.mode == "step" and self.holding and self._last_stamp is not None
                and frame.stamp - self._last_stamp < self.spec.frame_spacing_s - DUE_SLACK_S):
            return  # the person drives: one frame per step spacing, as a step-mode recording takes one per move
        self._last_stamp = frame.stamp
        if self.spec.record is None or self._saving is not None:
            return
        if self.writer is None:
            self._open()
        elif self._disk_low(frame.stamp):
            return self._stop_recording()
        if self.spec.mode == "step":
            if self._pending is not None:
                previous = self._pending
                action, person = self.history.move_between(previous.stamp, frame.stamp)
                self._append(previous, action, person)
            self._pending = frame
        elif self.sampler.take(frame.stamp):
            action, person = self.history.in_force(frame.stamp)
            self._append(frame, action, person)

    def _append(self, frame, action, person: bool) -> None:
        event = "episode_start" if self.writer.frames == 0 else "start_action" if any(action) else "stop_action"
        self.writer.append(frame.image, action, frame.stamp, event, person)

    def _open(self) -> None:
        from runtime.recording.background_writer import BackgroundWriter  # noqa: PLC0415  --record only; start-up
        from runtime.recording.episode_writer import (  # noqa: PLC0415  --record only; drive start-up
            EPISODE_NAME,
            EpisodeWriter,
            default_compression,
            next_episode_number,
        )

        folder = Path(self.spec.record)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / EPISODE_NAME.format(next_episode_number(folder))
        attrs = {"recorder": "runtime.drive", "policy_driven": True, "recording_mode": self.spec.mode,
                 "teleop": self.spec.teleop, "frame_spacing_s": self.spec.frame_spacing_s}
        compression = default_compression(self.spec.frame_spacing_s)
        self.writer = BackgroundWriter(partial(EpisodeWriter, path, self.spec.instruction or None, attrs=attrs,
                                               compression=compression), path=path)  # the file made on its thread
        log.info("recording the run into %s (frames %g s apart, %s)", path, self.spec.frame_spacing_s, compression)

    def _disk_low(self, now: float) -> bool:
        """Whether the record folder's disk has fallen under `min_free_gb` (looked at once a second)."""
        if now - self._disk_at < 1.0:
            return False
        self._disk_at = now
        self.free_gb = shutil.disk_usage(self.spec.record).free / 1e9
        return self.free_gb < self.spec.min_free_gb

    def _stop_recording(self) -> None:
        """The reserve reached: the run's episode is saved behind the inference thread with the frames so far, and
        nothing more is recorded; the drive goes on (a full disk never stops the robot's loop)."""
        log.warning("%s: %.2f GB free, under %g GB: the run's recording stops here (its %d frames saved); the drive "
                    "goes on", self.spec.record, self.free_gb, self.spec.min_free_gb, self.writer.frames)
        self._pending = None  # its move is still running: no label for it
        writer, self.writer = self.writer, None
        self._saving = (writer, writer.finish_later(takeovers=self.takeovers, **self._spacing_attrs(writer)))

    def _spacing_attrs(self, writer=None) -> dict:
        """Continuous: the measured spacing and its spread (warned about when it is not the trained one)."""
        writer = writer or self.writer
        if self.spec.mode == "step" or writer.frames < 2:
            return {}
        mean, spread = writer.spacing()
        if not same_spacing(mean, self.spec.frame_spacing_s):
            log.warning("the run's frames are %.3f s apart on average, the policy was trained on %g s: the frames "
                        "came slower than the spacing (inference or camera); training refuses to mix them",
                        mean, self.spec.frame_spacing_s)
        return {"frame_spacing_s": mean, "frame_spacing_spread_s": spread}

    def close(self) -> None:
        """Save the run's episode (the last step-mode frame with the move sent after it) and release the device."""
        try:
            if self._saving is not None:
                writer, future = self._saving
                try:
                    log.info("saved the run: %s, %d frames, %d take-over(s) (recording stopped early: the disk)",
                             future.result(), writer.frames, self.takeovers)
                except OSError as e:
                    log.error("the run's episode could not be saved: %s (kept: %s)", e, writer.abandon(keep=True))
            if self.writer is not None:
                if self._pending is not None:
                    action, person = self.history.move_between(self._pending.stamp, float("inf"))
                    self._append(self._pending, action, person)
                    self._pending = None
                if self.writer.frames:
                    try:
                        path = self.writer.finish(takeovers=self.takeovers, **self._spacing_attrs())
                        log.info("saved the run: %s, %d frames, %d take-over(s)", path, self.writer.frames,
                                 self.takeovers)
                    except OSError as e:
                        kept = self.writer.abandon(keep=True)
                        log.error("the run's episode could not be saved: %s (kept: %s)", e, kept)
                else:
                    self.writer.abandon(keep=False)
                self.writer = None
        finally:
            self.teleop.close()


def open_takeover(spec: TakeoverSpec, top_speed, instruction: str = "") -> Takeover:
    """The person's device opened (the spec's own source, or --teleop's) and the take-over around it."""
    if spec.source is not None:
        teleop = spec.source.open(top_speed) or spec.source
    else:
        teleop = open_teleop(spec.teleop, top_speed, joy_map=spec.joy_map)
    return Takeover(teleop, replace(spec, instruction=instruction))
