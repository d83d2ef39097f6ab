"""The navigation task on the simulator: the goal, the scripted expert, and closed-loop rollouts.

    layout = random_layout(seed=7)
    result = rollout(layout, ScriptedExpert(layout))          # the expert drives itself
    result.success, result.steps, result.collided, result.path

    result = rollout(layout, policy_decider(policy))           # a bundle's policy (runtime.policy.onboard.Policy)

The task is the original rig's ("Navigate around obstacles and reach the front
of the beverage bottle on the left/right"): pass the box on the side the
instruction names, then stop in front of the bottle.

Moves are executed the way `runtime.drive --mode step` executes them: the
action goes through the same `SafetyGate` (speed clip, acceleration ramp, dead
zone) at the loop's rate for the step's 0.4 s, then zero. Only the clock is
simulated, so K layouts take seconds instead of K x steps x 0.4 s; the wire
path (serial driver, emulator, wall clock) is `sim.drive`.

A rollout ends when the decider stops (its command is zero after the dead
zone), collides, or runs out of steps. Success: stopped inside the goal zone
in front of the bottle without a collision.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.control.config import DriveConfig
from runtime.control.safety import SafetyConfig, SafetyGate
from sim.world import DETOUR_CLEARANCE, ROBOT_RADIUS, Layout, SimRobot, detour_lane, render

MOVE = 1.15  # the collector's discrete move (robot units, before the safety clip)
INSTRUCTION = "Navigate around obstacles and reach the front of the beverage bottle on the {side}"
# The goal zone: bottle ahead at a distance (centre to centre) in this range, and laterally within GOAL_Y.
GOAL_AHEAD = (ROBOT_RADIUS + 0.04 + 0.03, ROBOT_RADIUS + 0.04 + 0.45)
GOAL_Y = 0.2
STOP_AHEAD = ROBOT_RADIUS + 0.04 + 0.25  # the expert stops once the bottle is this close
ALIGN_Y = 0.1  # the expert aligns laterally to within this (wider than one move, so it never oscillates)


def instruction_for(side: str) -> str:
    return INSTRUCTION.format(side=side)


# The safety settings of the sim loop: `runtime.drive`'s defaults plus the original rig's 0.1 dead zone.
SIM_SAFETY = SafetyConfig(dead_zone=0.1)


@dataclass(frozen=True)
class StepTiming:
    rate: float = DriveConfig.rate  # control ticks per second (runtime.drive --rate)
    duration: float = DriveConfig.step_duration  # seconds per move (runtime.drive --step-duration)


def in_goal(layout: Layout, pose) -> bool:
    bx, by, _ = layout.bottle
    ahead, lateral = bx - pose[0], abs(by - pose[1])
    return GOAL_AHEAD[0] <= ahead <= GOAL_AHEAD[1] and lateral <= GOAL_Y


def execute(robot: SimRobot, gate: SafetyGate, action, timing: StepTiming, t0: float) -> tuple[np.ndarray, float]:
    """One move as the drive loop's step mode runs it; returns (first command sent, end time)."""
    dt = 1.0 / timing.rate
    ticks = max(1, int(round(timing.duration * timing.rate)))
    gate.zero(t0 - dt)  # between moves the loop sends zeros every tick: each move starts from rest
    first = None
    t = t0
    for _ in range(ticks):
        cmd = gate.filter(action, t)
        first = cmd if first is None else first
        if not any(cmd):
            break
        if not robot.step(*cmd, dt):
            break
        t += dt
    gate.zero(t)
    return first, t


class ScriptedExpert:
    """Around the first box on the layout's side, along to the bottle's line, forward, stop.

    Decides from the true pose (it is the demonstrator), one discrete move per call:
    (vx, vy) in {-1.15, 0, +1.15}^2 as the collector recorded them.
    """

    blind = True  # decides from the pose: rollouts need not render for it

    def __init__(self, layout: Layout):
        self.layout = layout
        box = layout.boxes[0]
        self.lane_y = detour_lane(box, layout.side)
        self.sign = 1.0 if layout.side == "left" else -1.0
        self.box_front = box.cx - box.hx - ROBOT_RADIUS - DETOUR_CLEARANCE / 2
        self.box_back = box.cx + box.hx + ROBOT_RADIUS + DETOUR_CLEARANCE / 2

    def __call__(self, frame, pose) -> np.ndarray:
        x, y, _ = pose
        bx, by, _ = self.layout.bottle
        vx = vy = 0.0
        if x < self.box_back:  # not past the box yet
            if self.sign * (y - self.lane_y) < 0:  # still in the box's way: step aside
                vy = self.sign * MOVE
                if x + 0.15 < self.box_front:  # far enough in front: forward at the same time
                    vx = MOVE
            else:
                vx = MOVE
        else:
            if abs(by - y) > ALIGN_Y:
                vy = MOVE if by > y else -MOVE
            if bx - x > STOP_AHEAD:
                vx = MOVE
        return np.array([vx, vy, 0.0], np.float32)

    def reset(self) -> None:
        pass


def random_decider(seed: int):
    """The baseline: one of the 8 discrete moves or stop, uniformly."""
    rng = np.random.default_rng(seed)
    moves = [np.array([vx, vy, 0.0], np.float32) for vx in (-MOVE, 0, MOVE) for vy in (-MOVE, 0, MOVE)]

    def decide(frame, pose):
        return moves[int(rng.integers(len(moves)))]

    decide.reset = lambda: None
    decide.blind = True
    return decide


def policy_decider(policy, latencies: list[float] | None = None):
    """A runtime Policy as a decider: one frame in, its first action out (what the drive loop sends).
    Each call's wall time (preprocess to action) is appended to `latencies` when given."""

    def decide(frame, pose):
        start = time.perf_counter()
        out = policy.infer(frame)
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        return out.action if out.finite else np.zeros(3, np.float32)

    decide.reset = policy.reset
    return decide


@dataclass
class Rollout:
    success: bool
    collided: bool
    steps: int
    ended_by: str  # "stop", "collision" or "step limit"
    path: list = field(default_factory=list)  # poses after every move
    frames: list = field(default_factory=list)  # (image, action) per step when recorded
    layout: Layout | None = None
    poses: list = field(default_factory=list)  # the pose each decision was made at (its frame: rollout_frame)
    actions: list = field(default_factory=list)  # the action decided at each step
    seed: int = 0  # the rollout's render seed: step k's frame is rendered with seed * 1000 + k


def rollout(layout: Layout, decide, max_steps: int = 40, width: int = 320, height: int = 180,
            timing: StepTiming = StepTiming(), safety: SafetyConfig = SIM_SAFETY, record: bool = False,
            seed: int = 0) -> Rollout:
    """Closed loop on one layout: render -> decide -> execute, until stop, collision or max_steps.
    Deciders marked `blind` (the expert, random) get no frame unless the rollout records them."""
    robot = SimRobot(layout)
    gate = SafetyGate(safety)
    if hasattr(decide, "reset"):
        decide.reset()
    see = record or not getattr(decide, "blind", False)
    t = 0.0
    frames, poses, actions = [], [], []
    for step in range(max_steps):
        image = render(layout, robot.pose, width, height, seed=seed * 1000 + step) if see else None
        poses.append(robot.pose)
        action = np.asarray(decide(image, robot.pose), np.float32)
        actions.append(action)
        if record:
            frames.append((image, action))
        first, t = execute(robot, gate, action, timing, t)
        if robot.collided:
            return Rollout(False, True, step + 1, "collision", list(robot.path), frames, layout, poses, actions, seed)
        if not any(first):
            return Rollout(in_goal(layout, robot.pose), False, step + 1, "stop", list(robot.path), frames, layout,
                           poses, actions, seed)
    return Rollout(False, False, max_steps, "step limit", list(robot.path), frames, layout, poses, actions, seed)


def rollout_frame(rollout: Rollout, step: int, width: int, height: int) -> np.ndarray:
    """The frame the decider saw at `step`, rendered again (the same pose and noise seed as in the rollout)."""
    return render(rollout.layout, rollout.poses[step], width, height, seed=rollout.seed * 1000 + step)


def heading(action, dead_zone: float = 0.1) -> int:
    """The 8-way move class of an (x, y) action (0 = forward, counter-clockwise), -1 for a stop.
    An axis below the dead zone counts as 0, as the safety gate sends it."""
    vx, vy = float(action[0]), float(action[1])
    vx = 0.0 if abs(vx) < dead_zone else vx
    vy = 0.0 if abs(vy) < dead_zone else vy
    if vx == 0.0 and vy == 0.0:
        return -1
    return int(round(math.atan2(vy, vx) / (math.pi / 4))) % 8
