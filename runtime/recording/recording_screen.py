"""What the person recording sees and types: the controls' legend, the live status line, each episode's instruction.

    screen = RecordingScreen(teleop, config, files)    # files: the recording's EpisodeFiles (episode_files.py)
    screen.legend()                                     # once, as recording starts (logged)
    instruction = screen.instruction(k, stopped)        # --ask-instruction: typed after the start key
    screen.update("recording", episode_started, last_command)   # every tick; redrawn 5 times a second
    screen.end()                                        # a newline after the last update

    recording | episode 3 of 10 |   41 frames   4.1 s 10.0 Hz | DROPPED 2 | cmd +0.15 +0.00 +0.00 | 41.2 GB free

The state comes first (`idle`, `recording`, `reset`, with how to start in
the first and the last), then the episode, its frames, seconds and measured
rate, the frames dropped (when any), the command sent, the free disk and why
the person's device reads as let go (`teleop.problem`). Written to the
terminal (stderr) only: events go through `logging` (runtime.logs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runtime.hardware import SentCommand
from runtime.logs import LiveLine

log = logging.getLogger(__name__)
REDRAW_S = 0.2  # s: a person reads it: 5 updates a second
START_HINT = {"idle": " (start: the start control or a move)", "reset": " (start: the start control)"}


class RecordingScreen:
    """The terminal of a recording (runtime/recording/recorder.py): `config` a RecordConfig, `files` EpisodeFiles."""

    def __init__(self, teleop, config, files):
        self.teleop, self.config, self.files = teleop, config, files
        self.line = LiveLine(enabled=config.status)
        self._shown_at = 0.0
        self._typed = ""  # the instruction typed last (--ask-instruction)

    def legend(self) -> None:
        legend = self.teleop.legend()
        if legend:
            log.info("%s", legend)

    def instruction(self, k: int, stopped: Callable[[], bool]) -> str:
        """Episode k's: the configured one (k modulo their count), or (--ask-instruction) the one typed, the last
        typed proposed; `stopped` ends the typing (a signal)."""
        proposed = self._typed or self.config.instructions[k % len(self.config.instructions)]
        if not self.config.ask_instruction:
            return proposed
        self.line.clear()
        typed = self.teleop.ask(f"\rinstruction for episode {k + 1} [{proposed}]: ", stopped)
        if len(typed.encode()) > 256:
            log.warning("instruction of %d bytes is over the format's 256: kept %r", len(typed.encode()), proposed)
            typed = ""
        self._typed = typed or proposed
        return self._typed

    def text(self, now: float, state: str, episode_started: float, command: SentCommand) -> str:
        n, files = self.config.episodes, self.files
        seconds = now - episode_started if files.writer is not None else 0.0
        v = command.velocity
        device = self.teleop.problem(now)
        return (f"{state}{START_HINT.get(state, '')} | episode {files.ended + 1}{f' of {n}' if n else ''} | "
                f"{files.frames:4d} frames {seconds:5.1f} s {files.rate():4.1f} Hz"
                + (f" | DROPPED {files.dropped}" if files.dropped else "")
                + f" | cmd {v[0]:+.2f} {v[1]:+.2f} {v[2]:+.2f} | {files.free_gb:.1f} GB free"
                + (f" | {device}" if device else ""))

    def update(self, state: str, episode_started: float, command: SentCommand) -> None:
        now = time.monotonic()
        if not self.config.status or now - self._shown_at < REDRAW_S:
            return
        self._shown_at = now
        self.line.show(self.text(now, state, episode_started, command))

    def end(self) -> None:
        self.line.end()
