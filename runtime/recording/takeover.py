"""A person takes over while the policy drives, and the run is recorded with each frame tagged (DAgger).

    python -m runtime.drive --bundle b/ --serial /dev/ttyUSB0 --camera csi --teleop keyboard --record runs/
    python -m sim.drive --bundle b/ --seed 3 --teleop joystick:/dev/input/js0 --record runs/

While the person holds control (a key's move running, the gamepad's dead-man
button held, fresh ROS 2 messages: `runtime.teleop`'s `held`), the person's
command replaces the policy's action on every control tick, through the same
safety gate; letting go returns control to the policy at the next tick.

`--record DIR` writes the whole run as one episode (runtime/recording/episode_writer.py,
numbered on after what DIR holds) of the frames the policy saw: attribute
`policy_driven` True, dataset `intervention` 1 where the person drove. The
action stored for a frame: in continuous mode the command in force at its
capture; in step mode the move that followed it (the last command sent before
the next frame). `train.fit --intervention-weight/--policy-weight` weigh them
(docs/recording.md). Ended by a signal or the end of the run, the episode is
saved; a kill leaves it as a hidden partial file.

The drive loop calls three things (DriveLoop's hook): `command(now)` on each
control tick (the person's velocity, or None to let the policy drive),
`sent(now, result, person)` after each send, and `captured(frame)` on each
frame the inference thread takes.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.cli import CommandError
from runtime.hardware import SentCommand
from runtime.recording.command_history import CommandHistory
from runtime.teleop.select import SOURCES, open_teleop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TakeoverSpec:
    teleop: str  # --teleop SOURCE: the person's device (runtime.teleop.select.SOURCES)
    mode: str  # the drive's mode (continuous, step): which command a frame's action is (see the module's doc)
    record: Path | None = None  # --record DIR: the run as one episode there; None: not recorded
    instruction: str = ""  # stored with the episode (the policy's instruction)
    frame_spacing_s: float = 0.0  # stored as the episode's frame spacing (0: measured from the frames)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TakeoverSpec | None:
        if getattr(args, "teleop", None) is None:
            if getattr(args, "record", None) is not None:
                raise CommandError("--record DIR records a run with take-over: it needs --teleop SOURCE")
            return None
        return cls(args.teleop, args.mode, args.record,
                   frame_spacing_s=args.step_duration if args.mode == "step" else 0.0)


def add_takeover_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--teleop", help=f"a person may take over with this device while it is held: {SOURCES}")
    ap.add_argument("--record", type=Path, help="with --teleop: record the run as an episode in this folder, each "
                                                "frame tagged policy or intervention")


class Takeover:
    """The person's override and the run's recording, for one drive."""

    def __init__(self, teleop, spec: TakeoverSpec):
        self.teleop, self.spec = teleop, spec
        self.history = CommandHistory()  # what went out, by whom: each frame's label
        self._pending = None  # step mode: the frame waiting for the move that follows it
        self.writer = None
        self.holding = False
        self.interventions = 0  # control ticks the person drove

    def command(self, now: float):
        """The person's velocity when they hold control now, else None (the policy drives)."""
        self.teleop.poll(now)  # controls are not used while driving; moves are read as the command in force
        cmd = self.teleop.command(now)
        if cmd.held != self.holding:
            log.info("%s", "the person took over" if cmd.held else "control back to the policy")
            self.holding = cmd.held
        if not cmd.held:
            return None
        self.interventions += 1
        return cmd.velocity

    def sent(self, now: float, result: SentCommand, person: bool) -> None:
        self.history.add(time.monotonic(), result, person)

    def captured(self, frame) -> None:
        """A frame the policy saw: recorded (continuous: now; step: when the next frame shows its move)."""
        if self.spec.record is None:
            return
        if self.writer is None:
            self._open()
        if self.spec.mode == "step":
            if self._pending is not None:
                previous = self._pending
                action, person = self.history.move_between(previous.stamp, frame.stamp)
                self.writer.append(previous.image, action, previous.stamp, None, person)
            self._pending = frame
        else:
            action, person = self.history.in_force(frame.stamp)
            self.writer.append(frame.image, action, frame.stamp, None, person)

    def _open(self) -> None:
        from runtime.recording.episode_writer import (  # noqa: PLC0415  --record only; drive start-up
            EPISODE_NAME,
            BackgroundWriter,
            EpisodeWriter,
            existing_episodes,
        )

        folder = Path(self.spec.record)
        folder.mkdir(parents=True, exist_ok=True)
        numbers = existing_episodes(folder)
        path = folder / EPISODE_NAME.format(numbers[-1] + 1 if numbers else 0)
        attrs = {"recorder": "runtime.drive", "policy_driven": True, "recording_mode": self.spec.mode,
                 "teleop": self.spec.teleop}
        if self.spec.frame_spacing_s:
            attrs["frame_spacing_s"] = self.spec.frame_spacing_s
        self.writer = BackgroundWriter(EpisodeWriter(path, self.spec.instruction or None, attrs=attrs))
        log.info("recording the run into %s", path)

    def close(self) -> None:
        """Save the run's episode (the last step-mode frame with the move sent after it) and release the device."""
        try:
            if self.writer is not None:
                if self._pending is not None:
                    action, person = self.history.move_between(self._pending.stamp, float("inf"))
                    self.writer.append(self._pending.image, action, self._pending.stamp, None, person)
                    self._pending = None
                if self.writer.frames:
                    if not self.writer.has_attr("frame_spacing_s") and self.writer.frames > 1:
                        spacing = (self.writer.last_capture - self.writer.first_capture) / (self.writer.frames - 1)
                        self.writer.set_attrs(frame_spacing_s=spacing)
                    path = self.writer.finish()
                    log.info("saved the run: %s, %d frames", path, self.writer.frames)
                else:
                    self.writer.abandon(keep=False)
                self.writer = None
        finally:
            self.teleop.close()


def open_takeover(spec: TakeoverSpec, top_speed, instruction: str = "") -> Takeover:
    return Takeover(open_teleop(spec.teleop, top_speed), replace(spec, instruction=instruction))
