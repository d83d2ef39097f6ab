"""How good is a bundle? Closed loop in the simulated room, or offline against recorded episodes.

    python -m sim.evaluate --bundle bundle/ --episodes 50 --seed 0          # closed loop, 50 unseen rooms
    python -m sim.evaluate --bundle bundle/ --episodes held_out/            # offline, a folder of .h5 episodes
    python -m sim.evaluate --bundle bundle/ --episodes 20 --rerun eval.rrd  # every episode in Rerun (rerun eval.rrd)

    from sim.evaluate import EvaluationSpec, evaluate
    report = evaluate(EvaluationSpec(bundle=Path("bundle"), episodes="50"))   # the figures main() prints

The bundle's `driving` record (runtime/policy/driving.py: discrete moves or raw
actions, step or continuous, the move's duration) sets the defaults, so the
figures describe the policy `runtime.drive` and `sim.drive` run from the same
bundle; `--discrete` / `--no-discrete` and `--step-duration` override it, and
the first line logged says which is used and why.

Closed loop (`--episodes K`): the bundle's policy drives the simulated robot
(sim/world.py) on K rooms it has never seen (layout seeds 10_000 * seed + i;
`sim.synth` uses 1_000_000 + ...), moving as `runtime.drive --mode step`
does (sim/task.py; a bundle recorded for continuous driving is still
evaluated move by move here, and a warning says so: `sim.drive` drives it
continuously). Printed for the policy, a random policy and the
scripted expert: success rate (stopped in front of the bottle, no collision,
within --max-steps), collisions, mean steps, mean latency per step. A PNG of
the trajectories over the room maps goes to --plot, and beside it two short
MP4s, the best and the worst episode with the action drawn on each frame
(PLOT-best.mp4, PLOT-worst.mp4; PyAV, the datasets extra). `--rerun FILE.rrd`
(or a viewer's rerun+http:// URL) logs every episode: the frames the policy
saw, its actions, the room from above with its path (sim/evaluation_views.py).

Offline (`--episodes DIR`): every recorded episode replayed through the
policy frame by frame, exactly as the drive loop would feed it (reset at each
episode, the file's instruction), for every variant in the bundle (and
TensorRT where it runs): per axis the RMSE of the first action against the
recorded one, the sign agreement, and the agreement in the collector's 8-way
move class (plus stop), per episode and overall, next to a random policy's;
and how often the variants agree with each other. A PNG of predicted vs
recorded actions over time goes to --plot. This is the check to run on your
own held-out recordings before a new bundle touches the robot.

numpy, ONNX Runtime and OpenCV only (no torch); matplotlib for the plots when
installed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plotting import pyplot
from runtime.cli import CommandError, exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.base import BackendError
from runtime.policy.backends.registry import make_backend
from runtime.policy.behaviours import with_behaviours
from runtime.policy.bundle import BundleError, load_bundle
from runtime.policy.driving import driving_settings
from runtime.policy.onboard import Policy
from runtime.recording.episodes import read_episode_arrays
from runtime.recording.rerun_log import RerunUnavailable
from sim.evaluation_views import best_and_worst_mp4s, log_rollouts
from sim.latency import add_latency_arguments, evaluate_latency, latency_requested, latency_spec_from_args
from sim.task import (
    MOVE,
    SIM_SAFETY,
    Rollout,
    ScriptedExpert,
    StepTiming,
    heading,
    instruction_for,
    policy_decider,
    random_decider,
    rollout,
)
from sim.world import random_layout

AXES = ("linear_x", "linear_y", "angular_z")
log = logging.getLogger("sim.evaluate")  # not __main__ under python -m


def eval_layout_seed(seed: int, i: int) -> int:
    return 10_000 * seed + i


# -- closed loop ----------------------------------------------------------------------
@dataclass
class ClosedLoopSummary:
    name: str
    success: float
    collisions: float
    mean_steps: float
    mean_latency_ms: float | None
    rollouts: list

    def row(self) -> dict:
        return {"policy": self.name, "success_rate": round(self.success, 4),
                "collision_rate": round(self.collisions, 4),
                "mean_steps": round(self.mean_steps, 2),
                "mean_latency_ms": None if self.mean_latency_ms is None else round(self.mean_latency_ms, 2)}


def summarize(name: str, rollouts: list[Rollout], latencies: list[float] | None = None) -> ClosedLoopSummary:
    return ClosedLoopSummary(name, float(np.mean([r.success for r in rollouts])),
                             float(np.mean([r.collided for r in rollouts])),
                             float(np.mean([r.steps for r in rollouts])),
                             float(np.mean(latencies) * 1e3) if latencies else None, rollouts)


class PolicyBySide:
    """One runtime Policy per instruction (left/right), made on demand from a factory."""

    def __init__(self, make_policy):
        self.make_policy = make_policy
        self.policies: dict[str, object] = {}
        self.latencies: list[float] = []

    def decider(self, side: str):
        if side not in self.policies:
            self.policies[side] = self.make_policy(instruction_for(side))
        return policy_decider(self.policies[side], self.latencies)


def closed_loop(make_policy, episodes: int, seed: int = 0, max_steps: int = 40, width: int = 256,
                height: int = 144, baselines: bool = True, progress=None,
                timing: StepTiming = StepTiming()) -> list[ClosedLoopSummary]:
    """The policy from `make_policy(instruction)` (and the baselines) on the same unseen layouts."""
    layouts = [random_layout(eval_layout_seed(seed, i)) for i in range(episodes)]
    kw = dict(max_steps=max_steps, width=width, height=height, timing=timing)
    by_side = PolicyBySide(make_policy)
    runs = []
    for i, layout in enumerate(layouts):
        runs.append(rollout(layout, by_side.decider(layout.side), seed=eval_layout_seed(seed, i), **kw))
        if progress:
            progress(i + 1, episodes)
    out = [summarize("policy", runs, by_side.latencies)]
    if baselines:
        out.append(summarize("random", [rollout(room, random_decider(eval_layout_seed(seed, i)), **kw)
                                        for i, room in enumerate(layouts)]))
        out.append(summarize("expert", [rollout(room, ScriptedExpert(room), **kw) for room in layouts]))
    return out


def format_closed_loop(summaries: list[ClosedLoopSummary], episodes: int) -> str:
    lines = [f"closed loop on {episodes} unseen layouts",
             f"{'policy':<8} {'success':>8} {'collisions':>11} {'mean steps':>11} {'latency ms':>11}"]
    for s in summaries:
        lat = "-" if s.mean_latency_ms is None else f"{s.mean_latency_ms:.1f}"
        lines.append(f"{s.name:<8} {s.success:>8.2f} {s.collisions:>11.2f} {s.mean_steps:>11.1f} {lat:>11}")
    return "\n".join(lines)


def plot_trajectories(summaries: list[ClosedLoopSummary], out: Path, max_rooms: int = 12) -> Path | None:
    """Small multiples: each room's map with the policy's, the expert's and the random policy's paths."""
    plt = pyplot()
    if plt is None:
        return None
    from matplotlib.patches import Circle, Rectangle  # noqa: PLC0415  matplotlib: optional; plots only

    by_name = {s.name: s for s in summaries}
    policy = by_name["policy"]
    n = min(max_rooms, len(policy.rollouts))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    styles = {"expert": dict(color="tab:green", ls="--", lw=1.2), "random": dict(color="0.6", lw=0.8),
              "policy": dict(color="tab:blue", lw=1.8)}
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.set_axis_off()
            continue
        r = policy.rollouts[i]
        layout = r.layout
        ax.add_patch(Rectangle((0, 0), layout.size[0], layout.size[1], fill=False, lw=1.5))
        for box in layout.boxes:
            ax.add_patch(Rectangle((box.cx - box.hx, box.cy - box.hy), 2 * box.hx, 2 * box.hy,
                                   color=np.asarray(box.color[::-1]) / 255))
        bx, by, br = layout.bottle
        ax.add_patch(Circle((bx, by), 0.05, color="tab:green"))
        for name in ("random", "expert", "policy"):
            if name in by_name:
                path = np.asarray(by_name[name].rollouts[i].path)
                ax.plot(path[:, 0], path[:, 1], **styles[name], label=name if i == 0 else None)
        end = "ok" if r.success else r.ended_by
        ax.set_title(f"{layout.side}: {end} ({r.steps} steps)", fontsize=8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    rates = ", ".join(f"{s.name} {s.success:.2f}" for s in summaries)
    fig.suptitle(f"closed loop, success rate: {rates}", fontsize=10)
    fig.legend(loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# -- offline --------------------------------------------------------------------------
def _sign(values: np.ndarray, dead_zone: float) -> np.ndarray:
    return np.where(np.abs(values) < dead_zone, 0, np.sign(values)).astype(np.int64)


def replay(policy, images: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Frame by frame through the policy as the drive loop feeds it; the first action of each step."""
    policy.reset()
    frames = images if channel_order == policy.preprocess_config.channel_order else images[..., ::-1]
    return np.stack([policy.infer(np.ascontiguousarray(f)).action for f in frames])


def agreement(pred: np.ndarray, recorded: np.ndarray, dead_zone: float) -> dict:
    """RMSE per axis, sign agreement per axis and 8-way move agreement of predictions vs recordings."""
    axes = min(pred.shape[1], recorded.shape[1])
    out = {}
    for i in range(axes):
        out[f"rmse_{AXES[i]}"] = float(np.sqrt(np.mean((pred[:, i] - recorded[:, i]) ** 2)))
        out[f"sign_{AXES[i]}"] = float(np.mean(_sign(pred[:, i], dead_zone) == _sign(recorded[:, i], dead_zone)))
    out["move_8way"] = float(np.mean([heading(p, dead_zone) == heading(r, dead_zone)
                                      for p, r in zip(pred, recorded)]))
    return out


def offline(folder: Path, make_policies: dict, dead_zone: float = 0.1, seed: int = 0,
            default_instruction: str | None = None) -> dict:
    """{variant: {"episodes": [...], "overall": {...}}, "random": ..., "cross": {...}} over the folder."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".h5", ".hdf5"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no .h5 episodes")
    rng = np.random.default_rng(seed)
    results: dict = {name: {"episodes": []} for name in [*make_policies, "random"]}
    preds: dict[str, list[np.ndarray]] = {name: [] for name in results}
    recorded_all = []
    policies: dict[tuple[str, str], object] = {}
    for path in paths:
        images, actions, instruction = read_episode_arrays(path)
        instruction = instruction or default_instruction
        recorded_all.append(actions)
        for name, make in make_policies.items():
            key = (name, instruction)
            if key not in policies:
                policies[key] = make(instruction)
            pred = replay(policies[key], images)
            preds[name].append(pred)
            results[name]["episodes"].append({"file": path.name, **agreement(pred, actions, dead_zone)})
        random_pred = rng.choice([-MOVE, 0.0, MOVE], size=actions.shape).astype(np.float32)
        random_pred[:, 2:] = 0
        preds["random"].append(random_pred)
        results["random"]["episodes"].append({"file": path.name, **agreement(random_pred, actions, dead_zone)})
    recorded = np.concatenate(recorded_all)
    for name in results:
        results[name]["overall"] = agreement(np.concatenate(preds[name]), recorded, dead_zone)
    cross = {}
    for a, b in itertools.combinations(make_policies, 2):
        pa, pb = np.concatenate(preds[a]), np.concatenate(preds[b])
        cross[f"{a} vs {b}"] = float(np.mean([heading(x, dead_zone) == heading(y, dead_zone) for x, y in zip(pa, pb)]))
    return {"files": len(paths), "frames": int(len(recorded)), "variants": results, "cross_agreement": cross,
            "predictions": preds, "recorded": recorded_all}  # arrays for the plot; main() leaves them out of the JSON


def format_offline(report: dict) -> str:
    lines = [f"offline on {report['files']} episodes, {report['frames']} frames: first action vs recorded"]
    keys = [k for k in next(iter(report["variants"].values()))["overall"]]
    lines.append(f"{'variant':<12} " + " ".join(f"{k:>16}" for k in keys))
    for name, r in report["variants"].items():
        lines.append(f"{name:<12} " + " ".join(f"{r['overall'][k]:>16.3f}" for k in keys))
    for pair, value in report["cross_agreement"].items():
        lines.append(f"8-way agreement {pair}: {value:.3f}")
    return "\n".join(lines)


def plot_offline(report: dict, out: Path, max_frames: int = 300) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    recorded = np.concatenate(report["recorded"])[:max_frames]
    bounds = np.cumsum([len(r) for r in report["recorded"]])
    fig, axes = plt.subplots(2, 1, figsize=(12, 5), sharex=True)
    for i, ax in enumerate(axes):
        ax.step(np.arange(len(recorded)), recorded[:, i], where="post", color="k", lw=1.5, label="recorded")
        for name, preds in report["predictions"].items():
            if name == "random":
                continue
            pred = np.concatenate(preds)[:max_frames]
            ax.plot(pred[:, i], lw=1, label=name)
        for b in bounds[bounds < len(recorded)]:
            ax.axvline(b, color="0.8", lw=0.8)
        ax.set_ylabel(AXES[i])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=4)
    axes[-1].set_xlabel("frame (episodes separated by grey lines)")
    fig.suptitle("first action of each step: bundle vs recording")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


# -- the job and its command line ---------------------------------------------------------
def policy_factories(bundle, backend: str, variants: list[str], discrete: bool, stack: contextlib.ExitStack) -> dict:
    """{name: make_policy(instruction)} for each variant. Each activated backend is deactivated when `stack`
    closes (a TensorRT backend holds a CUDA context on its own thread until then)."""
    def factory(variant):
        backend_obj = make_backend(bundle, backend, variant=variant).activate()
        stack.callback(backend_obj.deactivate)
        return lambda instruction: with_behaviours(Policy(bundle, backend_obj, instruction=instruction),
                                                   discrete=discrete)

    return {variant: factory(variant) for variant in variants}


@dataclass(frozen=True)
class EvaluationSpec:
    """One evaluation: what `python -m sim.evaluate`'s options set (its defaults are these)."""

    bundle: Path  # the bundle folder
    episodes: str  # "K": closed loop on K unseen rooms; a folder: offline on its .h5 episodes
    seed: int = 0  # closed loop: which unseen rooms (0..99)
    max_steps: int = 40  # closed loop: moves before a rollout is cut
    width: int = 256  # closed loop: camera width (the demonstrations' size)
    height: int = 144
    backend: str = "ort-cpu"  # auto, trt, ort-trt, ort-cuda, ort-cpu
    variant: str = "fp32"  # closed loop: the variant to drive with
    variants: tuple[str, ...] | None = None  # offline: variants to compare; None = all in the bundle
    dead_zone: float = SIM_SAFETY.dead_zone  # offline: |v| below this counts as no move (the sim's gate's)
    discrete: bool | None = None  # snap to the demonstrated moves; None = the bundle's driving record
    step_duration: float | None = None  # closed loop: s per move; None = the bundle's frame spacing
    plot: Path | None = None  # PNG path; None = next to json, or evaluation.png
    json: Path | None = None  # where the figures go
    progress: bool = True  # the closed loop's layout counter on stderr
    rerun: str | None = None  # closed loop: every episode to this .rrd or rerun+http:// viewer; None: no Rerun
    mp4: bool = True  # closed loop: the best and the worst episode as MP4s beside the plot


def evaluate(spec: EvaluationSpec) -> dict:
    """Closed loop or offline, as `spec.episodes` says; the report main() prints (and writes to spec.json)."""
    bundle = load_bundle(spec.bundle)
    settings = driving_settings(bundle.driving, discrete=spec.discrete, step_duration=spec.step_duration)
    log.info("evaluating %s: %s", spec.bundle, settings.describe())
    plot = spec.plot or (spec.json.with_suffix(".png") if spec.json else Path("evaluation.png"))
    with contextlib.ExitStack() as stack:
        if spec.episodes.isdigit():
            if settings.mode != "step":
                log.warning("the bundle drives in %s mode; the closed loop here moves step by step (sim/task.py): "
                            "python -m sim.drive drives it as recorded", settings.mode)
            report, saved = _closed_loop(spec, bundle, settings, plot, stack)
        else:
            report, saved = _offline(spec, bundle, settings, plot, stack)
    report["driving"] = {"mode": settings.mode, "discrete": settings.discrete, "step_duration": settings.step_duration,
                         "overridden": list(settings.overridden), "source": settings.source}
    if saved:
        report["plot"] = str(saved)
    if spec.json:
        spec.json.parent.mkdir(parents=True, exist_ok=True)
        spec.json.write_text(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=2) + "\n")
    return report


def _closed_loop(spec, bundle, settings, plot: Path, stack) -> tuple[dict, Path | None]:
    k = int(spec.episodes)
    if k < 1:
        raise CommandError("--episodes: need at least 1 layout")
    make = policy_factories(bundle, spec.backend, [spec.variant], settings.discrete, stack)[spec.variant]
    progress = (lambda i, n: print(f"\r  layout {i}/{n}", end="" if i < n else "\n", file=sys.stderr)) \
        if spec.progress else None
    summaries = closed_loop(make, k, spec.seed, spec.max_steps, spec.width, spec.height, progress=progress,
                            timing=StepTiming(duration=settings.step_duration))
    report = {"mode": "closed-loop", "bundle": str(spec.bundle), "episodes": k, "seed": spec.seed,
              "backend": spec.backend, "variant": spec.variant, "max_steps": spec.max_steps,
              "discrete": settings.discrete, "results": [s.row() for s in summaries],
              "table": format_closed_loop(summaries, k)}
    by_name = {s.name: s for s in summaries}
    policy, expert = by_name["policy"].rollouts, by_name["expert"].rollouts if "expert" in by_name else None
    if spec.mp4:
        report.update(best_and_worst_mp4s(plot, policy, spec.width, spec.height))
    if spec.rerun:
        report["rerun"] = log_rollouts(spec.rerun, policy, expert, spec.width, spec.height,
                                       settings.step_duration) or spec.rerun
    return report, plot_trajectories(summaries, plot)


def _offline(spec, bundle, settings, plot: Path, stack) -> tuple[dict, Path | None]:
    folder = Path(spec.episodes)
    if not folder.is_dir():
        raise CommandError(f"--episodes {folder}: neither a number of layouts nor a folder of episodes")
    variants = list(spec.variants or bundle.variants)
    factories = policy_factories(bundle, spec.backend, variants, settings.discrete, stack)
    if spec.backend in ("auto", "ort-cpu") and bundle.manifest.get("engines"):
        try:
            factories["trt"] = policy_factories(bundle, "trt", ["fp32"], settings.discrete, stack)["fp32"]
        except (BackendError, ImportError) as e:
            log.warning("TensorRT engines not run here: %s", e)
    report = offline(folder, factories, spec.dead_zone,
                     default_instruction=bundle.manifest["prompt"]["default_instruction"])
    table = format_offline(report)
    saved = plot_offline(report, plot)
    report = {k: v for k, v in report.items() if k not in ("predictions", "recorded")}
    report.update(mode="offline", bundle=str(spec.bundle), discrete=settings.discrete, table=table)
    return report, saved


def build_parser() -> argparse.ArgumentParser:
    d = EvaluationSpec
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--episodes", required=True, help="K (closed loop on K unseen rooms) or a folder of .h5 episodes")
    ap.add_argument("--seed", type=int, default=d.seed, help="closed loop: which unseen rooms (0..99)")
    ap.add_argument("--max-steps", type=int, default=d.max_steps)
    ap.add_argument("--width", type=int, default=d.width, help="closed loop: camera width (the demonstrations' size)")
    ap.add_argument("--height", type=int, default=d.height)
    ap.add_argument("--backend", default=d.backend, choices=("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu"))
    ap.add_argument("--variant", default=d.variant, help="closed loop: the variant to drive with")
    ap.add_argument("--variants", nargs="*", help="offline: variants to compare (default: all in the bundle)")
    ap.add_argument("--dead-zone", type=float, default=d.dead_zone,
                    help="offline: |v| below this counts as no move (the sim's safety dead zone)")
    ap.add_argument("--discrete", action="store_const", const=True, dest="discrete",
                    help="snap each axis to the demonstrated moves (default: as the bundle's driving record says)")
    ap.add_argument("--no-discrete", "--continuous", action="store_const", const=False, dest="discrete",
                    help="the head's raw actions (default: as the bundle's driving record says)")
    ap.add_argument("--step-duration", type=float,
                    help="closed loop: seconds per move (default: the bundle's frame spacing)")
    ap.add_argument("--plot", type=Path, help="PNG path (default: next to --json, or evaluation.png)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--rerun", metavar="FILE.rrd|URL",
                    help="closed loop: every episode's frames, actions and path to this .rrd (or a rerun+http://"
                         "HOST:PORT/proxy viewer); needs the rerun extra")
    ap.add_argument("--no-mp4", action="store_false", dest="mp4",
                    help="closed loop: no MP4s of the best and the worst episode")
    add_latency_arguments(ap)  # --policy ws://..., --inject-latency-ms, --latency-jitter-ms, --async (sim/latency.py)
    add_log_level_argument(ap)
    return ap


def _closed_loop_with_latency(args) -> int:
    """The closed loop under injected latency or against a policy server (sim/latency.py), snapping as the
    bundle's driving record says unless told otherwise."""
    bundle = load_bundle(args.bundle)
    settings = driving_settings(bundle.driving, discrete=args.discrete, step_duration=args.step_duration)
    log.info("evaluating %s: %s", args.bundle, settings.describe())
    opened: list = []
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [backend.deactivate() for backend in opened])
        seeds = [eval_layout_seed(args.seed, i) for i in range(int(args.episodes))]
        return evaluate_latency(bundle, latency_spec_from_args(args), seeds, args.max_steps, args.width, args.height,
                                args.backend, args.variant, settings.discrete, args.policy, opened, args.json)


@exits_on(BackendError, BundleError, FileNotFoundError, ValueError, RerunUnavailable)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.episodes.isdigit() and int(args.episodes) >= 1 and latency_requested(args):
        return _closed_loop_with_latency(args)
    report = evaluate(EvaluationSpec(
        bundle=args.bundle, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps, width=args.width,
        height=args.height, backend=args.backend, variant=args.variant,
        variants=tuple(args.variants) if args.variants else None, dead_zone=args.dead_zone, discrete=args.discrete,
        step_duration=args.step_duration, plot=args.plot, json=args.json, rerun=args.rerun, mp4=args.mp4))
    print(report["table"])
    if report.get("plot"):
        print(f"plot: {report['plot']}")
    for name in ("mp4_best", "mp4_worst"):
        if name in report:
            shown = report[name]
            print(f"{name[4:]} episode: {shown['file']} (room {shown['room']}, {shown['outcome']})")
    if report.get("rerun"):
        print(f"rerun: {report['rerun']}")
    if args.json:
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
