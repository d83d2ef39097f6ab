"""Closed loop with inference latency injected on simulated time: synchronous steps vs asynchronous chunks.

    python -m sim.evaluate --bundle bundle/ --episodes 20 --inject-latency-ms 200 --latency-jitter-ms 50
    python -m sim.evaluate --bundle bundle/ --episodes 20 --inject-latency-ms 200 --async
    python -m sim.evaluate --bundle bundle/ --episodes 20 --inject-latency-ms 200 --policy ws://127.0.0.1:8000

The robot has a task time (`budget`, by default what the zero-latency
synchronous robot gets: --max-steps x 0.4 s). Every inference costs
`latency` + uniform [0, `jitter`) seconds of simulated time (seeded), while
the policy itself runs at full speed in real time, so the figures do not
depend on this machine.

- synchronous (`runtime.drive --mode step`, the demonstrations' way): take a
  frame, wait for the inference with the motors at zero, move for 0.4 s,
  stop, repeat. Each step costs 0.4 s + latency, so fewer moves fit the
  budget as latency grows.
- asynchronous (`--async`, runtime/policy/async_chunks.py, the drive's own
  schedule): the control loop ticks at 20 Hz and plays the newest chunk on
  the capture-time axis while the next one is inferred; a frame is taken
  once an action period (0.4 s) has passed and an inference is free; the
  actions whose time passed during the inference are skipped, the switch is
  cross-faded; no chunk covering the present means zero.

A run ends with a collision, when the played action is a stop (both axes
zero after the dead zone), or when the budget is spent. Success: stopped in
front of the bottle. `--policy ws://...` makes every inference a real
round trip to a policy server over loopback (runtime.policy.remote), with
the same latency added on simulated time.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np

from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.policy.async_chunks import AsyncConfig, ChunkSchedule
from runtime.policy.backends.registry import make_backend
from runtime.policy.behaviours import with_behaviours
from runtime.policy.onboard import Policy
from runtime.policy.remote import RemotePolicy
from runtime.policy.remote_encoder import RemoteConfig, RemoteEncoder
from runtime.policy.wire import model_identity
from sim.task import SIM_SAFETY, Rollout, ScriptedExpert, StepTiming, execute, in_goal, instruction_for
from sim.world import Layout, SimRobot, random_layout, render


@dataclass(frozen=True)
class LatencySpec:
    latency: float = 0.0  # s of simulated time each inference takes
    jitter: float = 0.0  # s: uniform [0, jitter) more per inference
    asynchronous: bool = False  # play chunks while inferring (runtime.drive --async)
    budget: float | None = None  # s of simulated task time; None: max_steps x the step duration
    blend: float = AsyncConfig.blend  # s of cross-fade between chunks (async)
    moves_from_rest: bool = True  # async: each action starts from rest, as the recorded 0.4 s key presses did


@dataclass
class TimedRollout(Rollout):
    sim_time: float = 0.0  # s of simulated time at the end
    inferences: int = 0
    control_gaps: int = 0  # control ticks with no chunk covering the present (async), waiting ticks (sync)


def _ended(success, collided, steps, ended_by, path, frames, layout, sim_time, inferences,
           control_gaps) -> TimedRollout:
    """A TimedRollout by position (Rollout's own later fields stay at their defaults)."""
    return TimedRollout(success, collided, steps, ended_by, path, frames, layout, sim_time=sim_time,
                        inferences=inferences, control_gaps=control_gaps)


def _latency(spec: LatencySpec, rng: np.random.Generator) -> float:
    return spec.latency + (float(rng.uniform(0.0, spec.jitter)) if spec.jitter > 0 else 0.0)


def policy_planner(policy):
    """A runtime policy as a planner: plan(image, pose) -> (chunk (N, A), action to send in synchronous mode)."""
    def plan(image, pose):
        out = policy.infer(image)
        if not out.finite:  # NaN: the robot stops (the drive loop zeroes)
            return np.zeros_like(out.chunk), np.zeros(3, np.float32)
        return out.chunk, out.action

    plan.reset, plan.chunk_len = policy.reset, policy.bundle.chunk
    return plan


def expert_planner(layout: Layout, chunk_len: int, timing: StepTiming = StepTiming(),
                   safety: SafetyConfig = SIM_SAFETY):
    """The scripted expert as a chunk predictor: from the pose (it sees no frame) it plays its own next
    `chunk_len` moves forward on a copy of the robot, the plan a perfect chunk head would predict."""
    expert = ScriptedExpert(layout)

    def plan(image, pose):
        ghost, gate, t = SimRobot(layout, pose=tuple(pose)), SafetyGate(safety), 0.0
        moves = []
        for _ in range(chunk_len):
            move = expert(None, ghost.pose)
            moves.append(move[:2])
            if not any(move) or ghost.collided:
                break
            _, t = execute(ghost, gate, move, timing, t)
        moves += [np.zeros(2, np.float32)] * (chunk_len - len(moves))  # after a stop: stay stopped
        return np.stack(moves).astype(np.float32), expert(None, pose)

    plan.reset, plan.chunk_len, plan.blind = expert.reset, chunk_len, True
    return plan


def _stopped(action, dead_zone: float) -> bool:
    return not np.any(np.abs(np.asarray(action, np.float64)[:2]) >= dead_zone)


def _see(layout, plan, robot, width, height, seed):
    return None if getattr(plan, "blind", False) else render(layout, robot.pose, width, height, seed=seed)


def synchronous_rollout(layout: Layout, plan, spec: LatencySpec, budget: float, width: int, height: int,
                        seed: int, timing: StepTiming = StepTiming(),
                        safety: SafetyConfig = SIM_SAFETY) -> TimedRollout:
    robot, gate, rng = SimRobot(layout), SafetyGate(safety), np.random.default_rng(seed)
    plan.reset()
    t, step, waited = 0.0, 0, 0
    while True:
        _, action = plan(_see(layout, plan, robot, width, height, seed * 1000 + step), robot.pose)
        step += 1
        lat = _latency(spec, rng)
        waited += int(round(lat * timing.rate))
        t += lat  # the motors wait at zero for the answer
        if t >= budget:
            return _ended(False, False, step, "time", list(robot.path), [], layout, t, step, waited)
        first, t = execute(robot, gate, action, timing, t)
        if robot.collided:
            return _ended(False, True, step, "collision", list(robot.path), [], layout, t, step, waited)
        if not any(first):
            return _ended(in_goal(layout, robot.pose), False, step, "stop", list(robot.path), [], layout, t,
                                step, waited)


def asynchronous_rollout(layout: Layout, plan, spec: LatencySpec, budget: float, width: int, height: int,
                         seed: int, timing: StepTiming = StepTiming(), safety: SafetyConfig = SIM_SAFETY,
                         discrete_move: float | None = None) -> TimedRollout:
    robot, gate, rng = SimRobot(layout), SafetyGate(safety), np.random.default_rng(seed)
    plan.reset()
    schedule = ChunkSchedule(AsyncConfig(action_period=timing.duration, blend=spec.blend), plan.chunk_len,
                             discrete_move)
    dt = 1.0 / timing.rate
    pending = None  # (lands at, chunk, captured at)
    t, frames, gaps, tick, last_slot, first_capture = 0.0, 0, 0, 0, None, None
    while t < budget:
        if pending is None and schedule.needs_inference(t):
            chunk, _ = plan(_see(layout, plan, robot, width, height, seed * 1000 + frames), robot.pose)
            frames += 1
            first_capture = t if first_capture is None else first_capture
            schedule.started(t)
            pending = (t + _latency(spec, rng), chunk, t)
        if pending is not None and t >= pending[0] - 1e-9:  # lands on the first tick at or after its time
            skipped = schedule.land(pending[1], pending[2], t)
            own = pending[1][min(skipped, len(pending[1]) - 1)]
            pending = None
            # The run ends as a synchronous one does: when a fresh frame's own plan for now is a stop. A stop
            # planned further ahead only halts the robot until the next plan (the loop sends zero meanwhile).
            if _stopped(own if discrete_move is None else np.round(own / discrete_move) * discrete_move,
                        safety.dead_zone):
                return _ended(in_goal(layout, robot.pose), False, frames, "stop", list(robot.path), [],
                                    layout, t, frames, gaps)
        action = schedule.action_at(t)
        if action is None or _stopped(action, safety.dead_zone):
            gate.zero(t)
            gaps += action is None and schedule.landings > 0  # a tick after the first chunk with nothing to play
        else:
            # each action period a move from rest, as the demonstrations' key presses were; a plan landing
            # inside a period changes the command, not the clock (the periods start at the capture times)
            slot = int(np.floor((t - first_capture) / timing.duration + 1e-9))
            if spec.moves_from_rest and slot != last_slot:
                gate.zero(t - dt)
            last_slot = slot
            cmd = gate.filter(action, t)
            if not robot.step(*cmd, dt) and robot.collided:
                return _ended(False, True, frames, "collision", list(robot.path), [], layout, t, frames, gaps)
        tick += 1
        t = tick * dt
    return _ended(False, False, frames, "time", list(robot.path), [], layout, t, frames, gaps)


def timed_rollout(layout: Layout, plan, spec: LatencySpec, max_steps: int = 40, width: int = 256,
                  height: int = 144, seed: int = 0, timing: StepTiming = StepTiming(),
                  discrete_move: float | None = None) -> TimedRollout:
    budget = spec.budget if spec.budget is not None else max_steps * timing.duration
    if spec.asynchronous:
        return asynchronous_rollout(layout, plan, spec, budget, width, height, seed, timing,
                                    discrete_move=discrete_move)
    return synchronous_rollout(layout, plan, spec, budget, width, height, seed, timing)


def closed_loop_latency(make_plan, layouts: list, seeds: list[int], spec: LatencySpec, max_steps: int = 40,
                        width: int = 256, height: int = 144, discrete_move: float | None = None,
                        progress=None) -> dict:
    """Success, collisions, inferences and simulated time on `layouts` under `spec`; `make_plan(layout)` gives
    each room's planner (`policy_planner` of the room's instruction's policy, or `expert_planner`)."""
    runs = []
    for i, (layout, seed) in enumerate(zip(layouts, seeds)):
        runs.append(timed_rollout(layout, make_plan(layout), spec, max_steps, width, height, seed,
                                  discrete_move=discrete_move))
        if progress:
            progress(i + 1, len(layouts))
    done = [r for r in runs if r.success]
    return {"latency_ms": round(spec.latency * 1e3, 1), "jitter_ms": round(spec.jitter * 1e3, 1),
            "mode": "async" if spec.asynchronous else "sync",
            "success_rate": round(float(np.mean([r.success for r in runs])), 4),
            "collision_rate": round(float(np.mean([r.collided for r in runs])), 4),
            "timeouts": int(sum(r.ended_by == "time" for r in runs)),
            "mean_inferences": round(float(np.mean([r.inferences for r in runs])), 2),
            "mean_time_to_success_s": round(float(np.mean([r.sim_time for r in done])), 2) if done else None,
            "inferences_per_s": round(sum(r.inferences for r in runs) / max(sum(r.sim_time for r in runs), 1e-9),
                                      2),
            "rollouts": runs}


def format_latency(row: dict) -> str:
    t = row["mean_time_to_success_s"]
    return (f"{row['mode']:<5} latency {row['latency_ms']:5.0f} ms (+{row['jitter_ms']:.0f} jitter): success "
            f"{row['success_rate']:.2f}, collisions {row['collision_rate']:.2f}, out of time {row['timeouts']}, "
            f"time to success {'-' if t is None else f'{t:.1f} s'}, {row['inferences_per_s']:.2f} inferences/s")


# -- sim.evaluate's options ------------------------------------------------------------------
def add_latency_arguments(ap) -> None:
    ap.add_argument("--policy", metavar="ws://HOST:PORT",
                    help="closed loop: vision and language on this policy server (python -m serve), over the wire")
    ap.add_argument("--inject-latency-ms", type=float, default=LatencySpec.latency * 1e3,
                    help="closed loop: simulated seconds each inference takes, in ms (synchronous vs --async)")
    ap.add_argument("--latency-jitter-ms", type=float, default=LatencySpec.jitter * 1e3,
                    help="closed loop: uniform extra latency per inference, in ms")
    ap.add_argument("--async", dest="async_chunks", action="store_true",
                    help="closed loop: play chunks while the next is inferred (runtime.drive --async)")
    ap.add_argument("--time-budget-s", type=float, default=LatencySpec.budget,
                    help="closed loop with latency: simulated seconds a run may take (default: --max-steps x 0.4 s)")


def latency_requested(args) -> bool:
    return bool(args.policy or args.inject_latency_ms or args.latency_jitter_ms or args.async_chunks
                or args.time_budget_s is not None)


def latency_spec_from_args(args) -> LatencySpec:
    return LatencySpec(args.inject_latency_ms / 1e3, args.latency_jitter_ms / 1e3, args.async_chunks,
                       args.time_budget_s)


class _Closing:
    """Something sim.evaluate releases at the end (its `opened` list calls deactivate())."""

    def __init__(self, close):
        self.deactivate = close


def latency_policy_factory(bundle, backend: str, variant: str, discrete: bool, url: str | None, opened: list):
    """make_policy(instruction): onboard, or a RemotePolicy on `url` with this bundle's engines as its head."""
    engines = make_backend(bundle, backend, variant=variant).activate()
    opened.append(engines)
    if url is None:
        return lambda instruction: with_behaviours(Policy(bundle, engines, instruction=instruction), discrete=discrete)

    encoder = RemoteEncoder(RemoteConfig(url, timeout=5.0), expected_model=model_identity(bundle.manifest)).start()
    opened.append(_Closing(encoder.close))
    if not encoder.connected:
        why = f": {encoder.refused}" if encoder.refused else ""
        raise ValueError(f"--policy {url}: no policy server answers there{why}")

    def make(instruction):
        return with_behaviours(RemotePolicy(bundle, engines, encoder, instruction=instruction), discrete=discrete)

    return make


def evaluate_latency(bundle, spec: LatencySpec, seeds: list[int], max_steps: int, width: int, height: int,
                     backend: str, variant: str, discrete: bool, url: str | None, opened: list, json_out=None) -> int:
    """sim.evaluate's closed loop under injected latency: prints one line, writes the figures to `json_out`."""
    make = latency_policy_factory(bundle, backend, variant, discrete, url, opened)
    planners: dict = {}

    def make_plan(layout):
        if layout.side not in planners:
            planners[layout.side] = policy_planner(make(instruction_for(layout.side)))
        return planners[layout.side]

    row = closed_loop_latency(make_plan, [random_layout(s) for s in seeds], seeds, spec, max_steps, width, height,
                              bundle.action_range if discrete else None,
                              progress=lambda i, n: print(f"\r  layout {i}/{n}", end="", file=sys.stderr))
    print(file=sys.stderr)
    row.pop("rollouts")
    row.update(policy="remote" if url else "onboard", episodes=len(seeds), layout_seeds=[seeds[0], seeds[-1]],
               time_budget_s=spec.budget if spec.budget is not None else max_steps * StepTiming().duration)
    print(format_latency(row))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(row, indent=2) + "\n")
    return 0
