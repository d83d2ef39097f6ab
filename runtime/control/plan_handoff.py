"""The plan between the drive's two threads: the newest one handed over, step mode's one frame per move, and
what the control thread did with it.

    plans = PlanHandoff(steplog, step_mode=True)
    plans.publish(plan)                  # inference thread: the newest plan (or a "zero now"), numbered
    plans.handshake.wait_done(stop)      # inference thread, step mode: block until that move (or its zero) is over
    current = plans.newest               # control thread, every tick
    progress = plans.follow(current)     # its step: logged once, its move's clock, finished
    plans.log_step(current, sent)        # the step log's line: the plan's record and what really went out
    plans.done(current)                  # control thread: the move with this number has finished

The inference thread (runtime/control/inference.py) publishes; the control
thread (runtime/control/loop.py) acts on the newest plan only. In step mode
(`runtime.drive --mode step`) each action is one move of `--step-duration`,
as the recordings' key presses were; the next frame may be taken only once the
move is over. "Done" names the publication it finishes, so a control tick
still finishing the previous move can never release the next frame while a
new move runs (a bare Event could be set between its clear and the next
publish). A plan's step is logged once, by the tick that first sends its
command or holds it at zero; at a normal end the drain asks `executed()`
whether the last step went out.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from runtime.control.inference import Published
from runtime.control.steplog import StepLog
from runtime.hardware import SentCommand


class StepHandshake:
    def __init__(self, lock: threading.Lock):
        self._cond = threading.Condition(lock)
        self._seq = 0  # number of the newest publication
        self._done_seq = 0  # number of the newest publication whose move is over

    def published(self) -> int:
        """A new publication; call with the lock held. Returns its number."""
        self._seq += 1
        return self._seq

    def finished(self) -> bool:
        """The newest publication's move (or its zero) is over; True before the first. Lock held."""
        return self._done_seq >= self._seq

    def done(self, seq: int) -> None:
        """Publication `seq` finished: only the newest may release the next frame. Lock not held."""
        with self._cond:
            if seq == self._seq:
                self._done_seq = seq
                self._cond.notify_all()

    def wait_done(self, stop: threading.Event, poll_s: float = 0.01) -> bool:
        """Wait until the newest publication is done; False when `stop` is set first. Lock not held."""
        with self._cond:
            while self._done_seq < self._seq:
                if stop.is_set():
                    return False
                self._cond.wait(poll_s)
        return not stop.is_set()


@dataclass
class StepProgress:
    """The control thread's view of the newest step: logged once, its move's clock, finished (step mode)."""
    step: int = -1
    logged: bool = False
    started: float | None = None
    finished: bool = False

    def follow(self, step: int) -> StepProgress:
        return self if step == self.step else StepProgress(step)


class PlanHandoff:
    """The newest plan, handed over by the inference thread, and the control thread's progress on it."""

    def __init__(self, log: StepLog, step_mode: bool):
        self.log = log
        self.step_mode = step_mode
        self._lock = threading.Lock()
        self.handshake = StepHandshake(self._lock)
        self._published: Published | None = None
        self.progress = StepProgress()
        self.last_logged_step = -1  # the newest step whose command went out (read by the drain at the end)

    def publish(self, plan: Published) -> None:
        """The inference thread hands over a plan (or a "zero now" with its reason)."""
        with self._lock:
            plan.seq = self.handshake.published()
            self._published = plan

    @property
    def newest(self) -> Published | None:
        """The plan the inference thread published last (what the control thread acts on)."""
        with self._lock:
            return self._published

    def executed(self, last_step: int) -> bool:
        """The drain's question at a normal end: did `last_step` go out (its whole move, in step mode)?"""
        if self.step_mode:
            with self._lock:
                return self.handshake.finished()
        return self.last_logged_step >= last_step

    def follow(self, plan: Published) -> StepProgress:
        """The progress on `plan`'s step: the same as last tick's, or a new one for a new step."""
        self.progress = self.progress.follow(plan.step)
        return self.progress

    def done(self, plan: Published) -> None:
        """The plan's move (or its zero) is over: in step mode the inference thread may take the next frame."""
        self.handshake.done(plan.seq)

    def log_step(self, plan: Published, result: SentCommand, **extra) -> None:
        """The plan's step in the step log, with what really went out (and, held at zero, why: `held=`)."""
        self.last_logged_step = plan.step
        self.log.write(dict(plan.record, t_serial=time.monotonic(), command=list(result.velocity),
                            sent=result.sent, acknowledged=result.acknowledged, **extra))
