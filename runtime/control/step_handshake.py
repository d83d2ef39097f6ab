"""Step mode's handshake between the inference thread and the control thread.

    handshake = StepHandshake(lock)
    seq = handshake.published()          # inference thread: a new action went out under `lock`
    handshake.wait_done(stop_event)      # inference thread: block until that move (or its zero) is over
    handshake.done(seq)                  # control thread: the move with this number has finished

In step mode (`runtime.drive --mode step`) each action is one move of
`--step-duration`, as the recordings' key presses were; the next frame may be
taken only once the move is over. "Done" names the publication it finishes, so
a control tick still finishing the previous move can never release the next
frame while a new move runs (a bare Event could be set between its clear and
the next publish).
"""

from __future__ import annotations

import threading


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
