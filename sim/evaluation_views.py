"""Closed-loop evaluations to look at: every episode in Rerun, the best and the worst as MP4s.

    python -m sim.evaluate --bundle bundle/ --episodes 20 --rerun eval.rrd      # then: rerun eval.rrd
    python -m sim.evaluate --bundle bundle/ --episodes 50 --plot eval.png       # + eval-best.mp4, eval-worst.mp4

In Rerun (runtime/recording/rerun_episode.py's timeline, one episode after the other on
`frame` and `time`): the frame the policy saw at each step with its action
as an arrow and as time series, the instruction, and the room seen from
above (`map/room`: walls, boxes, the bottle and the goal zone; `map/expert`:
the scripted expert's path; `map/policy`: the policy's path up to the step;
`map/robot`: where it is), so a failure can be scrubbed to the frame where it
went wrong. Frames are rendered again from the recorded poses with the
rollout's own noise seed: the pixels the policy saw.

The MP4s (plotting/video.py) play one frame per move at 2.5 frames a second
with the action drawn on it: the best episode (a success in the fewest
moves) and the worst (a collision, else a failure, else the slowest success).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from plotting.video import VideoUnavailable, annotate, write_mp4
from runtime.recording.rerun_episode import EpisodeTimeline
from runtime.recording.rerun_log import RerunRecording
from sim.task import GOAL_AHEAD, GOAL_Y, MOVE, Rollout, instruction_for, rollout_frame

log = logging.getLogger(__name__)


def outcome(r: Rollout) -> str:
    return "success" if r.success else r.ended_by if r.ended_by != "stop" else "stopped outside the goal"


def best_and_worst(rollouts: list[Rollout]) -> tuple[int, int]:
    """Indices of the best (a success in the fewest moves) and the worst (a collision, else a failure, else the
    slowest success; the earliest on ties) rollout."""
    def score(i):
        r = rollouts[i]
        return (r.success, not r.collided, -r.steps)

    order = sorted(range(len(rollouts)), key=lambda i: (score(i), -i))
    return order[-1], order[0]


def _flip(layout, points) -> np.ndarray:
    """Room coordinates (x forward, y left, y up on the PNG) -> Rerun's 2D view (y down)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return np.stack([pts[:, 0], layout.size[1] - pts[:, 1]], axis=1)


def log_room(timeline: EpisodeTimeline, layout, expert_path) -> None:
    rr, stream = timeline.rr, timeline.stream
    lx, ly = layout.size
    centers = [[lx / 2, ly / 2]] + [_flip(layout, [(b.cx, b.cy)])[0].tolist() for b in layout.boxes]
    halves = [[lx / 2, ly / 2]] + [[b.hx, b.hy] for b in layout.boxes]
    colors = [[60, 60, 60]] + [list(np.asarray(b.color[::-1], int)) for b in layout.boxes]
    stream.log("map/room", rr.Boxes2D(centers=centers, half_sizes=halves, colors=colors))
    bx, by, br = layout.bottle
    stream.log("map/bottle", rr.Points2D(_flip(layout, [(bx, by)]), radii=[max(br, 0.04)], colors=[[40, 160, 40]]))
    goal_x = (bx - GOAL_AHEAD[1] + bx - GOAL_AHEAD[0]) / 2
    half_x = (GOAL_AHEAD[1] - GOAL_AHEAD[0]) / 2
    stream.log("map/goal", rr.Boxes2D(centers=_flip(layout, [(goal_x, by)]), half_sizes=[[half_x, GOAL_Y]],
                                      colors=[[40, 160, 40]]))
    if expert_path is not None and len(expert_path) > 1:
        stream.log("map/expert", rr.LineStrips2D([_flip(layout, np.asarray(expert_path)[:, :2])],
                                                 colors=[[0, 150, 0]]))


def log_rollouts(target: str, policy: list[Rollout], expert: list[Rollout] | None, width: int, height: int,
                 spacing: float) -> str | None:
    """Every policy rollout on one timeline in an .rrd (or a viewer's URL); returns the file written or None."""
    timeline = EpisodeTimeline(RerunRecording(target, "mobile_vla_evaluation"), jpeg_quality=85, top_speed=MOVE)
    rr, stream = timeline.rr, timeline.stream
    for i, r in enumerate(policy):
        layout = r.layout
        timeline.begin(f"room {i} ({layout.side})", instruction_for(layout.side), r.steps, MOVE, spacing)
        log_room(timeline, layout, expert[i].path if expert else None)
        poses = np.asarray(r.poses)[:, :2]
        for k in range(len(poses)):
            timeline.frame(rollout_frame(r, k, width, height), r.actions[k])
            stream.log("map/robot", rr.Points2D(_flip(layout, poses[k]), radii=[0.18], colors=[[30, 100, 220]]))
            stream.log("map/policy", rr.LineStrips2D([_flip(layout, poses[: k + 1])], colors=[[30, 100, 220]]))
        stream.log("map/policy", rr.LineStrips2D([_flip(layout, np.asarray(r.path)[:, :2])], colors=[[30, 100, 220]]))
        timeline.end(f"room {i}: {outcome(r)} after {r.steps} moves")
    saved = timeline.close()
    return str(saved) if saved else None


def write_rollout_mp4(out: Path, r: Rollout, width: int, height: int, label: str, fps: float = 2.5) -> Path:
    frames = []
    for k in range(len(r.poses)):
        lines = [f"{label}: {r.layout.side}, move {k + 1}/{r.steps} ({outcome(r)})"]
        frames.append(annotate(rollout_frame(r, k, width, height), r.actions[k], MOVE, lines))
    return write_mp4(out, frames, fps)


def best_and_worst_mp4s(plot: Path, policy: list[Rollout], width: int, height: int) -> dict:
    """PLOT-best.mp4 and PLOT-worst.mp4 beside the trajectory PNG; {} (with a warning) without PyAV."""
    if not policy:
        return {}
    best, worst = best_and_worst(policy)
    out = {}
    try:
        for name, i in (("best", best), ("worst", worst)):
            path = plot.with_name(f"{plot.stem}-{name}.mp4")
            write_rollout_mp4(path, policy[i], width, height, f"{name} (room {i})")
            out[f"mp4_{name}"] = {"file": str(path), "room": i, "outcome": outcome(policy[i]),
                                  "steps": policy[i].steps}
    except VideoUnavailable as e:
        log.warning("no MP4s of the best and worst episode: %s", e)
    return out
