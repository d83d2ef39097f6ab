"""The scripted expert as the person who takes over (HG-DAgger): its own path never leaves its safe set, it takes
over when the robot heads into the box, goes the wrong way or stops short, and hands back once on track."""

import numpy as np
import pytest

from sim.expert_person import ExpertPerson, SafeSet, Supervisor
from sim.task import ScriptedExpert
from sim.world import SimRobot, SimWorld, random_layout

TOP = (0.5, 0.5, 1.0)


@pytest.mark.parametrize("rooms", [range(0, 100)])
def test_the_experts_own_path_never_leaves_the_safe_set(rooms):
    worst = {}
    for seed in rooms:
        layout = random_layout(seed)
        robot, supervisor, expert = SimRobot(layout), Supervisor(layout), ScriptedExpert(layout)
        for k in range(400):  # driven continuously at the top speed, checked every 50 ms
            velocity = tuple(0.5 * np.sign(expert(None, robot.pose)))
            supervisor.watch(velocity, robot.pose, k * 0.05)
            for name, value in supervisor.deviations(robot.pose, velocity, k * 0.05).items():
                worst[name] = max(worst.get(name, 0.0), value)
            if not any(velocity):
                break
            robot.step(*velocity, 0.05)
        assert not robot.collided
    assert max(worst.values()) < 0.5, worst  # inside the set with margin: the expert never takes over from itself


def test_it_takes_over_when_the_robot_heads_into_the_box_and_hands_back_on_track():
    layout = random_layout(3)
    world = SimWorld(layout)
    person = ExpertPerson(world).open(TOP)
    box = layout.boxes[0]
    # the policy drives straight at the box, 12 cm from its face
    world.robot.pose = (box.cx - box.hx - 0.18 - 0.12, box.cy, 0.0)
    world.velocity = (0.5, 0.0, 0.0)
    cmd = person.command(10.0)
    assert cmd.held and person.takeovers == ["heading into"]
    assert cmd.velocity[0] == 0.0 and cmd.velocity[1] != 0.0  # it steps aside, as the expert does there
    assert person.command(10.0 + SafeSet.hold_s / 2).held  # it keeps control for hold_s at least
    world.robot.pose = (box.cx + box.hx + 0.4, layout.bottle[1], 0.0)  # past the box, on the bottle's line
    world.velocity = (0.0, 0.0, 0.0)
    assert not person.command(10.0 + SafeSet.hold_s + 0.1).held  # back on track: the policy drives again


def test_standing_still_short_of_the_bottle_is_taken_over():
    layout = random_layout(4)
    world = SimWorld(layout)
    person = ExpertPerson(world).open(TOP)
    world.velocity = (0.0, 0.0, 0.0)  # the policy stops at the start
    assert not person.command(0.0).held
    assert not person.command(SafeSet.stalled_s - 0.1).held
    assert person.command(SafeSet.stalled_s + 0.1).held and person.takeovers == ["stopped short"]
