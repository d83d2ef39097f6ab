"""`--dry-run` (`--motor dry-run`): a motor side where nothing moves; every command is printed and kept.

    python -m runtime.drive --bundle bundle/ --dry-run --camera episode.h5 --max-steps 18

As strict as a real link where it matters: nothing goes out before `connect()`.
"""

from __future__ import annotations

from runtime.hardware import LinklessMotorController, SentCommand


class DryRunMotor(LinklessMotorController):
    """`--motor dry-run` (`--dry-run`): nothing moves; every command is printed and kept in `sent`."""

    name = "dry-run"
    port = "dry-run"
    reconnects = 0
    missed_acks = 0

    def __init__(self, printer=None):
        self.printer = printer
        self._last_sent = (0.0, 0.0, 0.0)
        self.sent: list[tuple[float, float, float]] = []

    def send_velocity(self, vx, vy, wz=0.0) -> SentCommand:
        if not self._connected:  # as strict as a real link: nothing goes out before connect()
            return SentCommand((0.0, 0.0, 0.0), sent=False, acknowledged=None)
        velocity = (float(vx), float(vy), float(wz))
        self._last_sent = velocity
        self.sent.append(velocity)
        if self.printer:
            self.printer(f"cmd_vel {vx:+.3f} {vy:+.3f} {wz:+.3f}")
        return SentCommand(velocity, sent=True, acknowledged=None)

    def stop(self) -> bool:
        return self.send_velocity(0.0, 0.0, 0.0).sent

    def heartbeat(self):
        return self._connected

    def query_status(self):
        return {"velocity": self._last_sent, "moving": any(self._last_sent)}
