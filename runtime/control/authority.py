"""The one motion authority: it alone decides whether a non-zero command may leave the host.

    authority = MotionAuthority(checks=[PreArmCheck("camera fresh", camera_is_fresh)])
    estop = authority.add_input("gpio /sys/class/gpio/gpio17/value", kind="estop", max_age=0.1)
    authority.report(estop, pressed=False)             # an e-stop source, on every poll of its device
    refusal = authority.arm("key 'a'")                  # "" when armed, else which pre-arm check failed
    with authority.motion(plan_epoch) as allowed:       # the control thread, on every tick
        if allowed:
            motor.send_velocity(*command)              # no transition can happen while this runs

An explicit state machine (docs/reliability.md has its table, checked against
`TRANSITIONS` by a test):
- `disarmed`: zeros. `arm` runs the pre-arm checks (every configured e-stop
  input present, fresh and released; the motor link up with the board's
  configuration verified; the camera fresh; the policy warmed) and says which
  failed; a drive started without `--start-disarmed` arms itself the same way
  as soon as they pass (that one arm keeps the first epoch: nothing happened
  since the start that a plan could be from before).
- `armed`: the robot may move, from a plan of the current epoch, or by a
  person holding a take-over device (a mode of armed, never a way around it).
- `e-stop`: latched zeros, for everyone, the person too. An e-stop input that
  is pressed, lost or stale latches it; `arm` is refused while it holds;
  `reset_estop` (a separate, explicit step, refused while any e-stop input is
  pressed, lost or stale) returns to `disarmed`, never to `armed`.
- `fault`: armed, but held at zero by a condition that is still there (the
  motor link down); when it clears the robot is armed again, with a new epoch.

The epoch counts every accepted event (arm, disarm, e-stop, reset, fault,
its clearing, a take-over and its end, and every fence: a camera stall, a
non-finite action, an --async inference stall, a reconnect, a new instruction). A plan
carries the epoch in force when its frame was captured (`epoch_at`), so a plan
from a frame captured before any of those never moves the robot after it: a
fence, not a race between threads. `motion()` holds the authority's lock while
a non-zero command is decided and sent, so an e-stop either comes before the
send (and the send is a zero) or after it (and the next tick's is).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DISARMED, ARMED, ESTOP, FAULT = "disarmed", "armed", "e-stop", "fault"
STATES = (DISARMED, ARMED, ESTOP, FAULT)
REFUSED, SAME = "refused", "same"  # the event is refused (said why) / changes nothing, not even the epoch
# What each event does in each state: the next state, REFUSED or SAME. An event not SAME or REFUSED starts a new
# epoch even when the state stays (a fault while already in fault, a fence). docs/reliability.md shows this table.
TRANSITIONS: dict[str, dict[str, str]] = {
    "arm": {DISARMED: ARMED, ARMED: SAME, ESTOP: REFUSED, FAULT: SAME},
    "disarm": {DISARMED: SAME, ARMED: DISARMED, ESTOP: SAME, FAULT: DISARMED},
    "estop": {DISARMED: ESTOP, ARMED: ESTOP, ESTOP: SAME, FAULT: ESTOP},
    "reset_estop": {DISARMED: SAME, ARMED: SAME, ESTOP: DISARMED, FAULT: SAME},
    "arm source lost": {DISARMED: SAME, ARMED: DISARMED, ESTOP: SAME, FAULT: DISARMED},
    "controller restarted": {DISARMED: DISARMED, ARMED: DISARMED, ESTOP: ESTOP, FAULT: DISARMED},
    "fault": {DISARMED: DISARMED, ARMED: FAULT, ESTOP: ESTOP, FAULT: FAULT},
    "fault cleared": {DISARMED: DISARMED, ARMED: ARMED, ESTOP: ESTOP, FAULT: ARMED},
    "take over / hand back": {DISARMED: SAME, ARMED: ARMED, ESTOP: SAME, FAULT: SAME},
    "fence": {DISARMED: DISARMED, ARMED: ARMED, ESTOP: ESTOP, FAULT: FAULT},
}
# The conditions on an accepted event, and what happens otherwise.
CONDITIONS = {
    ("arm", DISARMED): "if the pre-arm checks pass, else refused (naming the check that failed)",
    ("reset_estop", ESTOP): "if every e-stop input is present, fresh and released, else refused",
    ("fault cleared", FAULT): "if no other fault holds, else `fault`, new epoch",
}
EPOCHS_KEPT = 512  # epoch starts remembered: a plan's frame older than the oldest is never current


@dataclass
class PreArmCheck:
    name: str  # what is checked, for the refusal ("camera fresh")
    failure: object  # callable() -> "" when it passes, else why not ("last frame 1.2 s ago")


@dataclass
class Input:
    """One arm or e-stop input, as its source last reported it."""

    name: str  # "gpio estop /sys/class/gpio/gpio17/value", "gamepad /dev/input/js0", "ROS topic ~/estop", ...
    kind: str  # "estop" or "arm"
    max_age: float | None = None  # s a report may be old before the input counts as lost; None: no liveness
    pressed: bool = False  # an e-stop input: pressed now
    healthy: bool = True  # the device is there and readable
    detail: str = ""  # why it is not healthy
    added: float = field(default_factory=time.monotonic)  # time.monotonic() it was registered
    updated: float | None = None  # time.monotonic() of the last report; None: none yet
    lost: bool = False  # lost or stale, already acted on (once per loss)

    def liveness(self, now: float) -> str:
        """"" for an input that is there and fresh; else what is wrong with it (lost, or silent too long)."""
        if not self.healthy:
            return f"{self.name} lost ({self.detail or 'unreadable'})"
        if self.updated is None:
            return f"{self.name} has not reported yet"
        if self.max_age is not None and now - self.updated > self.max_age:
            return f"{self.name} silent for {now - self.updated:.2f} s (its limit {self.max_age:g} s)"
        return ""

    def problem(self, now: float) -> str:
        """"" for a present, fresh, released input; else what is wrong with it."""
        if self.kind == "estop" and self.pressed and self.healthy:
            return f"{self.name} pressed"
        return self.liveness(now)


@dataclass(frozen=True)
class Transition:
    time: float  # time.monotonic()
    event: str
    before: str
    after: str
    epoch: int  # the epoch after it
    cause: str  # who or what, in words


LATE_CHECK_S = 0.15  # s between two liveness checks that says the checker itself was held up...
GRACE_S = 0.5  # ...and then no input is judged stale for this long: a process-wide stall (swap, a loaded board)
#                held the sources back too, it did not lose them (a dead source is still caught: by its own
#                thread's failure at once, or by staleness once the grace is over)


class MotionAuthority:
    def __init__(self, armed: bool = False, checks: list[PreArmCheck] | tuple = (), auto_arm: bool = False,
                 starting: bool = False, clock=time.monotonic):
        """`armed`: start armed without checks (a library caller, the tests); `auto_arm`: arm as soon as the
        pre-arm checks pass, until the first explicit event (a drive started without --start-disarmed);
        `starting`: every arm is refused until `started()` (the drive's sources and services open before its
        loop, and its pre-arm checks, exist)."""
        self._lock = threading.RLock()
        self.clock = clock
        self._state = ARMED if armed else DISARMED
        self.starting = starting
        self.checks = list(checks)
        self.inputs: list[Input] = []
        self.auto_arm = auto_arm and not armed
        self.person = False  # armed, and a person drives (take-over)
        self._faults: dict[str, float] = {}  # cause -> since when (state fault while armed)
        self._epoch = 0
        self._starts: deque[tuple[float, int]] = deque([(-float("inf"), 0)], maxlen=EPOCHS_KEPT)
        self.history: deque[Transition] = deque(maxlen=200)  # the newest transitions (status, diagnostics, tests)
        self.listeners: list = []  # callables(epoch, started): a new epoch began (the --async chunks forget)
        self.changes = 0  # accepted state changes
        self.stops = 0  # transitions into a state that may not move (disarmed, e-stop, fault): each owes a zero
        self.cause = "start"  # the cause of the newest state change
        self._waiting = ""  # the auto-arm's last refusal, logged once
        self._last_check: float | None = None  # the previous liveness check
        self._grace_until = -math.inf  # no staleness judged before this (the checker itself was held up)

    # -- reading ----------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def armed(self) -> bool:
        return self._state == ARMED

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def epoch_started(self) -> float:
        return self._starts[-1][0]

    def epoch_at(self, t: float) -> int:
        """The epoch in force at time.monotonic() `t` (a frame's capture); -1 when older than the memory."""
        with self._lock:
            for started, epoch in reversed(self._starts):
                if started <= t:
                    return epoch
        return -1

    def describe(self) -> str:
        """The state as the status line shows it: "armed", "armed (person driving)", "e-stop (gpio ...)", ..."""
        with self._lock:
            if self._state == ESTOP:
                return f"e-stop ({self.cause})"
            if self._state == FAULT:
                return f"fault: {', '.join(self._faults)}"
            if self._state == ARMED and self.person:
                return "armed (person driving)"
            return self._state

    def started(self) -> None:
        """The drive's loop runs and its pre-arm checks exist: arms are judged by them from now on."""
        with self._lock:
            self.starting = False

    # -- the control thread --------------------------------------------------------------------------------
    @contextmanager
    def motion(self, plan_epoch: int | None, person: bool = False):
        """Yields True, with the lock held until the block ends, when a non-zero command may leave now: armed,
        and a policy's plan of the current epoch (`plan_epoch`) or a person driving (`person`). Else yields
        False at once (send a zero)."""
        self._lock.acquire()
        allowed = self._state == ARMED and (person or plan_epoch == self._epoch)
        if not allowed:
            self._lock.release()
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()

    def check_inputs(self, now: float | None = None) -> None:
        """Liveness, on every control tick: a lost or stale e-stop input latches the e-stop, a lost or stale arm
        input disarms (once per loss)."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._last_check is not None and now - self._last_check > LATE_CHECK_S:
                self._grace_until = now + GRACE_S
                log.warning("the control thread was held up %.2f s: input liveness judged again in %.1f s",
                            now - self._last_check, GRACE_S)
            self._last_check = now
            for inp in self.inputs:
                problem = inp.liveness(now)
                if problem and (now < self._grace_until and inp.healthy):
                    continue  # silent, judged after the grace; a source that says it is lost is acted on now
                if problem and inp.updated is None and self._state == DISARMED:
                    continue  # never reported: it refuses the arm (pre-arm) but latches nothing yet
                if problem and inp.updated is None and now - inp.added <= (inp.max_age or 0.0):
                    continue  # registered just now
                if problem and not inp.lost:
                    inp.lost = True
                    self._apply("estop" if inp.kind == "estop" else "arm source lost", problem)
                elif not problem and inp.lost:
                    inp.lost = False
            if self.auto_arm and self.changes == 0 and self._state == DISARMED:  # never after any change
                refusal = self._refusal(now)
                if not refusal:
                    self.auto_arm = False
                    # the first epoch goes on: nothing happened since the start that a plan could be from before
                    self._apply("arm", "start-up (pre-arm checks passed)", new_epoch=False)
                elif refusal.split(":")[0] != self._waiting:  # once per kind of refusal, not per tick
                    self._waiting = refusal.split(":")[0]
                    log.info("waiting to arm: %s", refusal)

    # -- sources -------------------------------------------------------------------------------------------
    def add_input(self, name: str, kind: str, max_age: float | None = None) -> Input:
        if kind not in ("estop", "arm"):
            raise ValueError(f"input kind must be 'estop' or 'arm', got {kind!r}")
        with self._lock:
            inp = Input(name, kind, max_age, added=self.clock())
            self.inputs.append(inp)
            return inp

    def report(self, inp: Input, pressed: bool = False, healthy: bool = True, detail: str = "") -> None:
        """What a source read from its device just now. A pressed or lost e-stop input latches the e-stop at
        once; a lost arm input disarms."""
        with self._lock:
            inp.pressed, inp.healthy, inp.detail, inp.updated = pressed, healthy, detail, self.clock()
            if inp.kind == "estop" and pressed and self._state != ESTOP:
                self._apply("estop", f"{inp.name} pressed")
            elif not healthy and not inp.lost:
                inp.lost = True
                self._apply("estop" if inp.kind == "estop" else "arm source lost", inp.liveness(inp.updated))
            elif healthy and inp.lost:
                inp.lost = False

    def arm(self, source: str) -> str:
        """Arm, if the pre-arm checks pass: "" when armed (or already), else the refusal, naming what failed."""
        with self._lock:
            if self._state == ESTOP:
                refusal = (f"e-stop latched ({self.cause}): reset the e-stop first (a separate step: "
                           f"docs/reliability.md)")
            elif self._state != DISARMED:
                return ""
            else:
                refusal = self._refusal(self.clock())
            if refusal:
                log.warning("arm by %s refused: %s", source, refusal)
                return refusal
            self.auto_arm = False
            self._apply("arm", source)
            return ""

    def disarm(self, source: str) -> None:
        with self._lock:
            self.auto_arm = False
            self._apply("disarm", source)

    def estop(self, source: str) -> None:
        """Latch zero until `reset_estop`, then an `arm`."""
        with self._lock:
            self.auto_arm = False
            self._apply("estop", source)

    def reset_estop(self, source: str) -> str:
        """Clear a latched e-stop (to disarmed): "" when done (or nothing to reset), else why not."""
        with self._lock:
            if self._state != ESTOP:
                return ""
            now = self.clock()
            problems = [p for p in (inp.problem(now) for inp in self.inputs if inp.kind == "estop") if p]
            if problems:
                refusal = "; ".join(problems)
                log.warning("e-stop reset by %s refused: %s", source, refusal)
                return refusal
            self._apply("reset_estop", source)
            return ""

    # -- faults and fences ---------------------------------------------------------------------------------
    def controller_restarted(self, cause: str) -> None:
        with self._lock:
            self._apply("controller restarted", cause)

    def fault(self, cause: str) -> None:
        """A condition that holds the robot at zero while it lasts (the motor link down)."""
        with self._lock:
            if cause in self._faults:
                return
            self._faults[cause] = self.clock()
            self._apply("fault", cause)

    def clear_fault(self, cause: str) -> None:
        with self._lock:
            if self._faults.pop(cause, None) is None:
                return
            if self._faults and self._state == FAULT:
                self._new_epoch("fault cleared", cause, self._state)  # another fault still holds
                return
            self._apply("fault cleared", cause)

    def take_over(self, person: bool, cause: str) -> None:
        """A person takes control (True) or hands it back (False): a new epoch either way, so a plan made while
        the other drove never plays."""
        with self._lock:
            if person == self.person:
                return
            self.person = person
            self._apply("take over / hand back", cause)

    def fence(self, cause: str) -> None:
        """A new epoch, the state unchanged: no plan from a frame captured before now moves the robot."""
        with self._lock:
            self._apply("fence", cause)

    # -- internals -----------------------------------------------------------------------------------------
    def _refusal(self, now: float) -> str:
        if self.starting:
            return "the drive is starting (its loop and pre-arm checks are not up yet)"
        problems = [p for p in (inp.problem(now) for inp in self.inputs if inp.kind == "estop") if p]
        if self._faults:
            problems.append(f"fault: {', '.join(self._faults)}")
        for check in self.checks:
            failure = check.failure()
            if failure:
                problems.append(f"{check.name}: {failure}")
        return "; ".join(problems)

    def _apply(self, event: str, cause: str, new_epoch: bool = True) -> None:
        before = self._state
        after = TRANSITIONS[event][before]
        if after in (SAME, REFUSED):
            return
        if after not in (ARMED, FAULT):
            self.person = False
        if after != ARMED:
            self.stops += 1  # the control thread sends a zero for it before anything moves again
        self._state = after
        self._new_epoch(event, cause, before, new_epoch)

    def _new_epoch(self, event: str, cause: str, before: str, new_epoch: bool = True) -> None:
        now = self.clock()
        if new_epoch:
            self._epoch += 1
            self._starts.append((now, self._epoch))
        after = self._state
        self.history.append(Transition(now, event, before, after, self._epoch, cause))
        if after != before:
            self.changes += 1
            self.cause = cause
            level = logging.ERROR if after == ESTOP else logging.WARNING
            log.log(level, "%s -> %s: %s by %s", before, self.describe(), event, cause)
        elif event != "fence":
            log.info("%s: %s by %s (epoch %d)", after, event, cause, self._epoch)
        for listener in self.listeners:
            listener(self._epoch, now)


def transition_table_markdown() -> str:
    """The TRANSITIONS table as docs/reliability.md shows it (a test checks the two are the same)."""
    head = "| event | " + " | ".join(f"`{s}`" for s in STATES) + " |"
    rule = "|---" * (len(STATES) + 1) + "|"
    rows = []
    for event, row in TRANSITIONS.items():
        cells = []
        for state in STATES:
            after = row[state]
            if after == SAME:
                cell = "—"
            elif after == REFUSED:
                cell = "refused"
            else:
                cell = f"`{after}`" + ("" if after != state else ", new epoch")
                condition = CONDITIONS.get((event, state))
                if condition:
                    cell += f" {condition}"
            cells.append(cell)
        rows.append(f"| {event} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])
