"""sim.evaluate's views: every closed-loop episode in Rerun (frames the policy saw, actions, the room from above),
the best and the worst episode as MP4s beside the trajectory PNG."""

import numpy as np
import pytest

from tests.helpers.rrd import column, rrd_entities

SIZE = dict(width=128, height=72)


@pytest.fixture(scope="module")
def rollouts():
    from sim.task import ScriptedExpert, random_decider, rollout
    from sim.world import random_layout

    rooms = [random_layout(10_000 + i) for i in range(3)]
    # "policies" without a bundle: the expert (succeeds), a random walk (collides or stops short)
    policy = [rollout(rooms[0], ScriptedExpert(rooms[0]), seed=1, **SIZE),
              rollout(rooms[1], random_decider(7), seed=2, max_steps=6, **SIZE),
              rollout(rooms[2], ScriptedExpert(rooms[2]), seed=3, **SIZE)]
    expert = [rollout(room, ScriptedExpert(room), **SIZE) for room in rooms]
    return policy, expert


def test_best_is_the_quickest_success_and_worst_the_failure(rollouts):
    from sim.evaluation_views import best_and_worst

    policy, _ = rollouts
    assert policy[0].success and policy[2].success and not policy[1].success
    best, worst = best_and_worst(policy)
    assert worst == 1
    assert best == min((0, 2), key=lambda i: policy[i].steps)


def test_every_episode_is_on_the_timeline_with_the_frames_the_policy_saw_and_the_room_from_above(rollouts, tmp_path,
                                                                                                  figure_dir):
    pytest.importorskip("rerun")
    import cv2

    from sim.evaluation_views import log_rollouts
    from sim.world import render

    policy, expert = rollouts
    out = log_rollouts(str(tmp_path / "eval.rrd"), policy, expert, spacing=0.4, **SIZE)
    entities = rrd_entities(out)
    steps = [r.steps for r in policy]
    images = column(entities["/camera/image"], "EncodedImage:blob", by="frame")
    assert len(images) == sum(steps)
    k = steps[0] + 2  # room 1, its third move: the frame rendered at that pose with the rollout's noise seed
    seen = render(policy[1].layout, policy[1].poses[2], seed=policy[1].seed * 1000 + 2, **SIZE)
    logged = cv2.imdecode(np.frombuffer(bytes(images[k][0]), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(logged.astype(int) - seen).mean() < 4
    actions = [v[0] for v in column(entities["/action/linear_x"], "Scalars:scalars", by="frame")]
    assert actions == pytest.approx([float(a[0]) for r in policy for a in r.actions])
    robot = column(entities["/map/robot"], "Points2D:positions", by="frame")
    assert len(robot) == sum(steps)
    x, y = robot[k][0]
    assert (x, policy[1].layout.size[1] - y) == pytest.approx(policy[1].poses[2][:2], abs=1e-5)  # y flipped for 2D
    assert len(column(entities["/map/room"], "Boxes2D:centers", by="frame")) == 3  # one room per episode
    assert len(column(entities["/map/expert"], "LineStrips2D:strips", by="frame")) == 3
    ends = [t[0] for t in column(entities["/events"], "TextLog:text", by="frame") if ": " in t[0] and "after" in t[0]]
    assert ends == [f"room {i}: {'success' if r.success else 'collision' if r.collided else r.ended_by} after "
                    f"{r.steps} moves" if r.ended_by != "stop" or r.success else
                    f"room {i}: stopped outside the goal after {r.steps} moves" for i, r in enumerate(policy)]
    from plotting.rrd_figure import draw  # the view as a picture, from this file (docs/evaluation.md shows it)

    picture = draw(out, 5, figure_dir / "evaluation-view.png",
                   "python -m sim.evaluate ... --rerun eval.rrd: room 0 at its sixth move")
    assert picture.stat().st_size > 20_000


def test_the_best_and_worst_episode_mp4s_sit_beside_the_plot(rollouts, tmp_path):
    pytest.importorskip("av")
    from plotting.video import read_mp4
    from sim.evaluation_views import best_and_worst_mp4s

    policy, _ = rollouts
    out = best_and_worst_mp4s(tmp_path / "eval.png", policy, **SIZE)
    assert out["mp4_worst"]["file"] == str(tmp_path / "eval-worst.mp4") and out["mp4_worst"]["room"] == 1
    assert read_mp4(tmp_path / "eval-worst.mp4").shape == (policy[1].steps, 72, 128, 3)
    assert read_mp4(tmp_path / "eval-best.mp4").shape[0] == policy[out["mp4_best"]["room"]].steps


def test_sim_evaluate_rerun_on_a_bundle(tiny_bundle_dir, tmp_path):
    pytest.importorskip("rerun")
    pytest.importorskip("av")
    from sim.evaluate import EvaluationSpec, evaluate

    report = evaluate(EvaluationSpec(bundle=tiny_bundle_dir, episodes="2", max_steps=3, plot=tmp_path / "e.png",
                                     rerun=str(tmp_path / "e.rrd"), progress=False, **SIZE))
    assert report["rerun"] == str(tmp_path / "e.rrd")
    assert (tmp_path / "e-best.mp4").is_file() and (tmp_path / "e-worst.mp4").is_file()
    steps = [r["mean_steps"] for r in report["results"] if r["policy"] == "policy"][0] * 2
    images = column(rrd_entities(tmp_path / "e.rrd")["/camera/image"], "EncodedImage:blob", by="frame")
    assert len(images) == round(steps)
