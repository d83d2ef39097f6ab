"""The scripted expert as the person who takes over while the policy drives (HG-DAgger in the simulator).

    python -m sim.drive --bundle b/ --seed 7 --teleop expert --record runs/ --end-at-goal --time-limit 30
    person = ExpertPerson(world)             # a runtime.hardware.TeleopSource: the drive's take-over reads it

It watches the simulated robot as a person at its side would (the true pose
and the velocity the robot was commanded) and takes over, through the drive's
own take-over (runtime/recording/takeover.py), when the robot leaves the
expert's safe set (`SafeSet`, below):
- heading into something: at the commanded velocity, within `lookahead_s`
  (0.2 s, half a move) the robot's disc would come closer than `clearance`
  (3 cm) to the box, a wall or the bottle;
- the wrong side: before passing the box, more than `wrong_side` (10 cm)
  from the start toward the side the instruction does not name;
- off the bottle's line: past the box, more than `off_line` (30 cm)
  sideways from the bottle;
- stopped short: commanded to stand still for `stalled_s` (1.2 s) outside
  the goal zone.
While it holds control it drives the scripted expert's moves (sim/task.py,
`ScriptedExpert`) at the top speed; it gives control back once it has held it
for `hold_s` (0.8 s: two frames at the trained 0.4 s spacing) and the robot is
back on track with margin (`on_track`: half of each threshold, twice the
clearance, not standing still). The thresholds were chosen on the demo's
rooms: the expert's own path never leaves the set (tests/sim/test_expert_person.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from runtime.hardware import ZERO, TeleopCommand, TeleopEvent, TeleopSource
from sim.task import ScriptedExpert, in_goal
from sim.world import DETOUR_CLEARANCE, ROBOT_RADIUS, Layout, SimWorld

log = logging.getLogger("sim.expert_person")


@dataclass(frozen=True)
class SafeSet:
    clearance: float = 0.03  # m between the robot's disc and an obstacle it is heading into
    lookahead_s: float = 0.2  # s ahead at the commanded velocity (half a move of the recordings: 10 cm at 0.5 m/s)
    wrong_side: float = 0.1  # m moved from the start toward the side not named, before passing the box
    off_line: float = 0.3  # m sideways from the bottle once past the box
    stalled_s: float = 1.2  # s commanded to stand still outside the goal zone
    hold_s: float = 0.8  # s the person keeps control at least, once taken


def clearance_at(layout: Layout, x: float, y: float) -> tuple[float, str]:
    """(distance from the robot's disc at (x, y) to the nearest obstacle, which one): walls, boxes, the bottle."""
    lx, ly = layout.size
    found = [(min(x, lx - x, y, ly - y) - ROBOT_RADIUS, "a wall")]
    for b in layout.boxes:
        nx, ny = np.clip(x, b.cx - b.hx, b.cx + b.hx), np.clip(y, b.cy - b.hy, b.cy + b.hy)
        found.append((math.hypot(x - nx, y - ny) - ROBOT_RADIUS, "the box"))
    bx, by, br = layout.bottle
    found.append((math.hypot(x - bx, y - by) - ROBOT_RADIUS - br, "the bottle"))
    return min(found)


class Supervisor:
    """The decision alone (no device): whether the person should take over, or may give control back."""

    def __init__(self, layout: Layout, safe: SafeSet = SafeSet()):
        self.layout, self.safe = layout, safe
        self.box = layout.boxes[0]
        self.sign = 1.0 if layout.side == "left" else -1.0
        self.box_back = self.box.cx + self.box.hx + ROBOT_RADIUS + DETOUR_CLEARANCE / 2
        self.still_since: float | None = None

    def _predicted(self, pose, velocity) -> tuple[float, float]:
        x, y, yaw = pose
        vx, vy, _ = velocity
        t = self.safe.lookahead_s
        return x + (vx * math.cos(yaw) - vy * math.sin(yaw)) * t, y + (vx * math.sin(yaw) + vy * math.cos(yaw)) * t

    def watch(self, velocity, pose, now: float) -> None:
        """Once per control tick: how long the robot has been commanded to stand still outside the goal."""
        if any(abs(v) > 1e-3 for v in velocity) or in_goal(self.layout, pose):
            self.still_since = None
        elif self.still_since is None:
            self.still_since = now

    def deviations(self, pose, velocity, now: float) -> dict[str, float]:
        """How far outside each bound the robot is, as a share of the bound (> 1: outside)."""
        x, y, _ = pose
        px, py = self._predicted(pose, velocity)
        ahead, _ = clearance_at(self.layout, px, py)
        out = {"heading into": self.safe.clearance / ahead if ahead > 0 else math.inf}
        if x < self.box_back:
            out["wrong side"] = max(0.0, -self.sign * (y - self.layout.start[1])) / self.safe.wrong_side
        else:
            out["off line"] = abs(y - self.layout.bottle[1]) / self.safe.off_line
        still = 0.0 if self.still_since is None else now - self.still_since
        out["stopped short"] = still / self.safe.stalled_s
        return out

    def off_track(self, pose, velocity, now: float) -> str:
        """Why the robot left the safe set ("" when it has not)."""
        worst = max(self.deviations(pose, velocity, now).items(), key=lambda kv: kv[1])
        return worst[0] if worst[1] > 1.0 else ""

    def on_track(self, pose, velocity, now: float) -> bool:
        """Back inside the set with margin: every deviation under half its bound."""
        return all(v < 0.5 for v in self.deviations(pose, velocity, now).values())


class ExpertPerson(TeleopSource):
    """The supervisor as a teleop source: `held` while it drives, the scripted expert's move as the command."""

    name = "expert"

    def __init__(self, world: SimWorld, safe: SafeSet = SafeSet()):
        self.world = world
        self.supervisor = Supervisor(world.robot.layout, safe)
        self.expert = ScriptedExpert(world.robot.layout)
        self.holding_since: float | None = None
        self.takeovers: list[str] = []  # why it took over, each time

    def poll(self, now: float) -> list[TeleopEvent]:
        return []

    def command(self, now: float) -> TeleopCommand:
        self.world.advance()
        robot = self.world.robot
        pose, velocity = robot.pose, self.world.velocity
        self.supervisor.watch(velocity, pose, now)
        if self.holding_since is None:
            why = self.supervisor.off_track(pose, velocity, now)
            if not why or robot.collided:
                return TeleopCommand(ZERO, False)
            self.holding_since = now
            self.takeovers.append(why)
            log.info("the expert takes over (%s) at (%.2f, %.2f)", why, pose[0], pose[1])
        elif (now - self.holding_since >= self.supervisor.safe.hold_s
              and self.supervisor.on_track(pose, self._move(pose), now)):
            self.holding_since = None
            return TeleopCommand(ZERO, False)
        return TeleopCommand(self._move(pose), True)

    def _move(self, pose) -> tuple[float, float, float]:
        return self.scale(np.sign(self.expert(None, pose)))

    def legend(self) -> str:
        return "the scripted expert takes over when the robot leaves its safe set (sim/expert_person.py)"
