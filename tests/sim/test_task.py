"""The navigation task: the scripted expert, the goal, how moves execute, and the baselines."""

import numpy as np
import pytest

from runtime.control.safety import SafetyGate
from sim.task import (
    MOVE,
    SIM_SAFETY,
    ScriptedExpert,
    StepTiming,
    execute,
    heading,
    in_goal,
    instruction_for,
    random_decider,
    rollout,
)
from sim.world import SimRobot, random_layout

LAYOUTS = [random_layout(10_000 * 7 + i) for i in range(50)]


def test_expert_succeeds_on_50_layouts_and_random_does_not():
    expert = [rollout(layout, ScriptedExpert(layout), width=64, height=36) for layout in LAYOUTS]
    random = [rollout(layout, random_decider(i), width=64, height=36) for i, layout in enumerate(LAYOUTS)]
    assert np.mean([r.success for r in expert]) >= 0.95
    assert not any(r.collided for r in expert)
    assert np.mean([r.success for r in random]) <= 0.2
    assert 8 <= np.mean([r.steps for r in expert]) <= 20  # about the 18-frame recordings


def test_expert_passes_the_box_on_the_named_side_and_moves_like_the_collector():
    for layout in LAYOUTS[:20]:
        moves = []
        expert = ScriptedExpert(layout)

        def record(frame, pose, moves=moves, expert=expert):
            moves.append(expert(frame, pose))
            return moves[-1]

        result = rollout(layout, record, width=64, height=36)
        box = layout.boxes[0]
        path = np.asarray(result.path)
        beside = path[np.abs(path[:, 0] - box.cx) <= box.hx]  # poses level with the box
        assert len(beside)
        side = np.sign(beside[:, 1] - box.cy)
        assert np.all(side == (1 if layout.side == "left" else -1)), layout
        values = np.unique(np.concatenate(moves))
        assert np.all(np.isclose(values[:, None], [-MOVE, 0.0, MOVE]).any(axis=1)), values
        assert not any(moves[-1]) and all(any(m) for m in moves[:-1])  # moves, then one stop
        assert in_goal(layout, result.path[-1])


def test_a_move_executes_like_the_drive_loops_step_mode():
    layout = random_layout(1)
    robot = SimRobot(layout)
    gate = SafetyGate(SIM_SAFETY)
    first, t = execute(robot, gate, np.array([MOVE, 0, 0]), StepTiming(rate=20, duration=0.4), 0.0)
    assert t == pytest.approx(0.4)
    assert first[0] == pytest.approx(0.1)  # from rest, 2 m/s^2 for one 50 ms tick
    moved = robot.pose[0] - layout.start[0]
    assert 0.1 < moved < 0.2  # 0.5 m/s limit with the 2 m/s^2 ramp, for 0.4 s
    assert robot.pose[1] == pytest.approx(layout.start[1])
    stop, _ = execute(robot, gate, np.array([0.05, -0.05, 0]), StepTiming(), t)  # inside the 0.1 dead zone
    assert not any(stop)


def test_heading_is_the_8_way_move_class():
    assert heading([MOVE, 0]) == 0 and heading([MOVE, MOVE]) == 1 and heading([0, MOVE]) == 2
    assert heading([-MOVE, 0]) == 4 and heading([0, -MOVE]) == 6 and heading([MOVE, -MOVE]) == 7
    assert heading([0.05, -0.02]) == -1 and heading([0.3, 0.05]) == 0


def test_instruction_names_the_side():
    assert instruction_for("left").endswith("beverage bottle on the left")
    layout = random_layout(3)
    bx, by, _ = layout.bottle
    assert (by > layout.boxes[0].cy) == (layout.side == "left")
