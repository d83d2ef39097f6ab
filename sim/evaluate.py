"""How good is a bundle? Closed loop in the simulated room, or offline against recorded episodes.

    python -m sim.evaluate --bundle bundle/ --episodes 50 --seed 0          # closed loop, 50 unseen rooms
    python -m sim.evaluate --bundle bundle/ --episodes held_out/            # offline, a folder of .h5 episodes

Closed loop (`--episodes K`): the bundle's policy drives the simulated robot
(sim/world.py) on K rooms it has never seen (layout seeds 10_000 * seed + i;
`sim.synth` uses 1_000_000 + ...), moving as `runtime.drive --mode step`
does (sim/task.py). Printed for the policy, a random policy and the
scripted expert: success rate (stopped in front of the bottle, no collision,
within --max-steps), collisions, mean steps, mean latency per step. A PNG of
the trajectories over the room maps goes to --plot.

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
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.backends.base import BackendError
from runtime.bundle import BundleError, load_bundle
from runtime.cli import CommandError, exits_on
from sim.task import (
    MOVE,
    SIM_SAFETY,
    Rollout,
    ScriptedExpert,
    heading,
    instruction_for,
    policy_decider,
    random_decider,
    rollout,
)
from plotting import pyplot
from sim.world import random_layout

AXES = ("linear_x", "linear_y", "angular_z")


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
        return {"policy": self.name, "success_rate": round(self.success, 4), "collision_rate": round(self.collisions, 4),
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
                height: int = 144, baselines: bool = True, progress=None) -> list[ClosedLoopSummary]:
    """The policy from `make_policy(instruction)` (and the baselines) on the same unseen layouts."""
    layouts = [random_layout(eval_layout_seed(seed, i)) for i in range(episodes)]
    kw = dict(max_steps=max_steps, width=width, height=height)
    by_side = PolicyBySide(make_policy)
    runs = []
    for i, layout in enumerate(layouts):
        runs.append(rollout(layout, by_side.decider(layout.side), seed=eval_layout_seed(seed, i), **kw))
        if progress:
            progress(i + 1, episodes)
    out = [summarize("policy", runs, by_side.latencies)]
    if baselines:
        out.append(summarize("random", [rollout(l, random_decider(eval_layout_seed(seed, i)), **kw)
                                        for i, l in enumerate(layouts)]))
        out.append(summarize("expert", [rollout(l, ScriptedExpert(l), **kw) for l in layouts]))
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
    from matplotlib.patches import Circle, Rectangle

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
    from runtime.episodes import read_episode_arrays

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


# -- command line -----------------------------------------------------------------------
def policy_factories(bundle, backend: str, variants: list[str], discrete: bool = True,
                     opened: list | None = None) -> dict:
    """{name: make_policy(instruction)} for each variant (and native TensorRT when engines run here).
    The activated backends are appended to `opened`, for the caller to deactivate (a TensorRT backend
    holds a CUDA context on its own thread until then)."""
    from runtime.backends.registry import make_backend
    from runtime.behaviours import with_behaviours
    from runtime.policy import Policy

    def factory(backend_obj):
        if opened is not None:
            opened.append(backend_obj)
        return lambda instruction: with_behaviours(Policy(bundle, backend_obj, instruction=instruction),
                                                   discrete=discrete)

    return {variant: factory(make_backend(bundle, backend, variant=variant).activate()) for variant in variants}


@exits_on(BackendError, BundleError, FileNotFoundError, ValueError)
def main(argv=None) -> int:
    opened: list = []
    try:
        return evaluate(argv, opened)
    finally:
        for backend in opened:
            backend.deactivate()


def evaluate(argv, opened: list) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--episodes", required=True, help="K (closed loop on K unseen rooms) or a folder of .h5 episodes")
    ap.add_argument("--seed", type=int, default=0, help="closed loop: which unseen rooms (0..99)")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--width", type=int, default=256, help="closed loop: camera width (the demonstrations' size)")
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--backend", default="ort-cpu", choices=("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu"))
    ap.add_argument("--variant", default="fp32", help="closed loop: the variant to drive with")
    ap.add_argument("--variants", nargs="*", help="offline: variants to compare (default: all in the bundle)")
    ap.add_argument("--dead-zone", type=float, default=SIM_SAFETY.dead_zone,
                    help="offline: |v| below this counts as no move (the sim's safety dead zone)")
    ap.add_argument("--continuous", action="store_true",
                    help="use the head's raw actions instead of snapping them to the demonstrated moves "
                         "(runtime.drive --discrete, the default here)")
    ap.add_argument("--plot", type=Path, help="PNG path (default: next to --json, or evaluation.png)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    bundle = load_bundle(args.bundle)
    plot = args.plot or (args.json.with_suffix(".png") if args.json else Path("evaluation.png"))
    if args.episodes.isdigit():
        if int(args.episodes) < 1:
            raise CommandError("--episodes: need at least 1 layout")
        make = policy_factories(bundle, args.backend, [args.variant], not args.continuous, opened)[args.variant]
        k = int(args.episodes)
        summaries = closed_loop(make, k, args.seed, args.max_steps, args.width, args.height,
                                progress=lambda i, n: print(f"\r  layout {i}/{n}", end="", file=sys.stderr))
        print(file=sys.stderr)
        print(format_closed_loop(summaries, k))
        report = {"mode": "closed-loop", "bundle": str(args.bundle), "episodes": k, "seed": args.seed,
                  "backend": args.backend, "variant": args.variant, "max_steps": args.max_steps,
                  "discrete": not args.continuous,
                  "results": [s.row() for s in summaries]}
        saved = plot_trajectories(summaries, plot)
    else:
        folder = Path(args.episodes)
        if not folder.is_dir():
            raise CommandError(f"--episodes {folder}: neither a number of layouts nor a folder of episodes")
        variants = args.variants or bundle.variants
        factories = policy_factories(bundle, args.backend, variants, not args.continuous, opened)
        if args.backend in ("auto", "ort-cpu") and bundle.manifest.get("engines"):
            try:
                factories["trt"] = policy_factories(bundle, "trt", ["fp32"], not args.continuous, opened)["fp32"]
            except (BackendError, ImportError) as e:
                print(f"TensorRT engines not run here: {e}", file=sys.stderr)
        report = offline(folder, factories, args.dead_zone,
                         default_instruction=bundle.manifest["prompt"]["default_instruction"])
        print(format_offline(report))
        saved = plot_offline(report, plot)
        report = {k: v for k, v in report.items() if k not in ("predictions", "recorded")}
        report.update(mode="offline", bundle=str(args.bundle), discrete=not args.continuous)
    if saved:
        print(f"plot: {saved}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
