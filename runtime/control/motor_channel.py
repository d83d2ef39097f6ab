"""The one path to the motors: what goes out, through the gate and the motion authority's lock, the zero owed,
the link watched.

    channel = MotorChannel(motor, gate, authority, health, steplog, DriveConfig())
    result = channel.send_moving(command, now, plan_epoch)   # a SentCommand, or None: the authority refused it
    channel.send_zero(now, "command timeout")                # a zero, with the state and the zero event it leaves
    if channel.zero_owed(): ...                              # a stop since the last look: a zero before any move
    channel.shutdown()                                       # the zero that must arrive, tried three times

The drive loop (runtime/control/loop.py) decides on each tick what should go
out; this is how it goes out, and the only way. A non-zero command leaves only
inside the authority's `motion()` (runtime/control/authority.py): its lock is
held while the command is decided and sent, so no e-stop, disarm or fault
interleaves. Every stop the authority makes (disarm, e-stop, fault) owes a
zero before anything moves again, even one already reset and re-armed by the
next tick. Explicit zeros keep the controller's own watchdog fed. Every
command, zero or not, is what the step log says reached the robot
(`SentCommand`), and tells the link watch (runtime/control/link_watch.py)
about the link: down or silent holds the authority in `fault` while it lasts,
a reconnect starts a new epoch, the controller's restart (its READY after the
link was up) disarms. With `--quiet-when-disarmed` a ROS motor side publishes
nothing while disarmed, so that twist_mux hands the base to another input.
"""

from __future__ import annotations

import time

from runtime.control.authority import DISARMED, MotionAuthority
from runtime.control.config import DriveConfig
from runtime.control.link_watch import LinkWatch, link_counter
from runtime.control.loop_health import LoopHealth, command_state, zero_state
from runtime.control.safety import SafetyGate
from runtime.control.steplog import StepLog
from runtime.hardware import SentCommand

LINK_DOWN = "motor link down"


class MotorChannel:
    """The control thread's motor side: the motor, the gate's zeros, the authority's lock, the link watch."""

    def __init__(self, motor, gate: SafetyGate, authority: MotionAuthority, health: LoopHealth, log: StepLog,
                 config: DriveConfig, takeover=None):
        self.motor, self.gate, self.authority, self.health, self.log = motor, gate, authority, health, log
        self.takeover = takeover  # runtime.recording.takeover.Takeover: told what went out, and whose it was
        self.quiet_wanted = config.quiet_when_disarmed
        self.link = LinkWatch(motor, config.give_up_after, config.auto_resume, health.counters_text)
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=False)  # what the motor side really did last
        self._restarts = link_counter(motor, "controller_starts")  # READYs seen: a later one is a restart
        self._quiet: bool | None = None  # --quiet-when-disarmed: the ROS motor side's setting now
        self._stops = authority.stops  # the authority's stops seen: each owes a zero before any move

    def send(self, command, now: float, person: bool = False) -> SentCommand:
        vx, vy, wz = (float(v) for v in command)
        result = self.motor.send_velocity(vx, vy, wz)
        if not isinstance(result, SentCommand):  # the log must say what reached the robot, not guess
            raise TypeError(f"{type(self.motor).__name__}.send_velocity returned {type(result).__name__}, not "
                            f"runtime.hardware.SentCommand (see docs/motors.md)")
        self.last_command = result
        if self.takeover is not None:
            self.takeover.sent(time.monotonic(), result, person)
        self._watch_link(result, now)
        return result

    def send_moving(self, command, now: float, plan_epoch: int | None, person: bool = False):
        """A non-zero command, sent only if the authority allows it now, under its lock; None when it did not
        (the caller sends a zero and says why)."""
        with self.authority.motion(plan_epoch, person) as allowed:
            if allowed:
                return self.send(command, now, person)
        return None

    def send_plan(self, command, now: float, plan_epoch: int) -> SentCommand | None:
        """A policy's command (non-zero under the authority), with the state it leaves; None when the authority
        refused it (the caller sends a zero and says why)."""
        refused, lateral = link_counter(self.motor, "refused"), self.gate.refused_lateral
        if any(command):
            result = self.send_moving(command, now, plan_epoch)
            if result is None:  # the authority changed its mind between the tick's check and the send
                return None
        else:
            result = self.send(command, now)
        self.health.set_state(command_state(result, link_counter(self.motor, "refused") != refused,
                                            self.gate.refused_lateral != lateral))
        return result

    def send_zero(self, now: float, reason: str) -> None:
        was_moving = any(self.last_command.velocity)
        result = self.send(self.gate.zero(now), now)  # explicit zeros keep the controller's watchdog fed
        self.health.set_state(zero_state(reason, result))
        if self.health.zeroed(now, reason, was_moving):
            self.log.write({"type": "zero", "reason": reason, "t": now, "sent": result.sent,
                            "acknowledged": result.acknowledged})

    def zero_owed(self) -> bool:
        """A stop since the last look (even one already reset and re-armed): a zero goes out before any move."""
        stops = self.authority.stops
        if stops == self._stops:
            return False
        self._stops = stops
        return True

    def _watch_link(self, result: SentCommand, now: float) -> None:
        """The link after a command: down or silent (a fault while it lasts, the run ends after --give-up-after),
        reconnected (a new epoch), its controller restarted (disarmed)."""
        event = self.link.observe(result, now)
        if event == "down":
            self.authority.fault(LINK_DOWN)
        elif event == "up":
            self.authority.clear_fault(LINK_DOWN)
        if self.link.reconnected():
            self.authority.fence("motor link reconnected")
        restarts = link_counter(self.motor, "controller_starts")
        if restarts != self._restarts:
            self._restarts = restarts
            self.authority.controller_restarted(f"the motor controller restarted (READY after the link was up, "
                                                f"{restarts} so far)")

    def quiet_when_disarmed(self) -> None:
        """--quiet-when-disarmed: a ROS motor side publishes nothing while disarmed, so that twist_mux hands the
        base to a lower-priority input; an e-stop or a fault keeps publishing zeros (nobody else may move it)."""
        quiet = self.authority.state == DISARMED
        if self.quiet_wanted and quiet != self._quiet and hasattr(self.motor, "set_quiet"):
            self.motor.set_quiet(quiet)
        self._quiet = quiet

    def link_problem(self) -> str:
        """The pre-arm check "motor link": "" when the robot may be armed as far as the motor side goes."""
        if not self.motor.is_connected:
            return f"{self.motor.name} not connected"
        if getattr(self.motor, "config_error", ""):
            return self.motor.config_error
        if getattr(self.motor, "verified", True) is False and not getattr(self.motor, "allow_unverified", False):
            return "the controller's configuration is not verified yet (QUERY_INFO)"
        return "" if self.link.up else "down"

    def shutdown(self) -> None:
        """Zero the motors: tried several times, because this is the one command that must arrive."""
        now = time.monotonic()
        self.gate.zero(now)
        confirmed = False
        for _ in range(3):
            try:
                if self.motor.stop():
                    confirmed = True
                    break
            except Exception:
                time.sleep(0.02)
        self.last_command = SentCommand((0.0, 0.0, 0.0), sent=confirmed)
        self.health.zeroed(now, "shutdown", was_moving=True)
        self.log.write({"type": "zero", "reason": "shutdown", "t": now, "confirmed": confirmed})
