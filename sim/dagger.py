"""The correction loop (HG-DAgger) in the simulator, measured: do a person's corrections make the next policy better?

    python -m sim.dagger --out dagger/                       # docs/evaluation.md: 3 seeds, 40 demos, 50 rooms
    python -m sim.dagger --out d/ --seeds 0 --demos 6 --runs 3 --rounds 1 --eval-episodes 6 --epochs 2   # a smoke run

Per seed, with the documented commands only (each one printed and logged under OUT/seed-S/logs/):
1. `sim.record --teleop expert`: `--demos` expert demonstrations, one room each
   (the recorder's units: m/s after the safety gate; `--action-range 0.5`);
2. `train.fit` tiny on them, `train.merge`, `export.to_onnx`, then
   `sim.evaluate --episodes 50`: round 0, the starting policy;
3. each round k: `--runs` drives of round k-1's bundle with
   `sim.drive --teleop expert --record` (the scripted expert takes over when the
   robot leaves its safe set: sim/expert_person.py), `train.data merge` of the
   demonstrations and every round's corrections so far, `train.fit
   --intervention-weight 3 --policy-weight 0` (docs/recording.md section 6),
   and the same evaluation;
4. the control: `--runs` more plain expert demonstrations per round instead
   of the corrections, fitted and evaluated the same way.
Every bundle drives and is evaluated with discrete moves (`--discrete`): the
corrections' labels hold the safety gate's ramp, which would otherwise make
train.fit record raw actions for the corrected rounds only. Reported per
round: success and collisions on the same unseen rooms (`sim.evaluate`'s
layout seeds), interventions per drive; the table goes to
OUT/dagger.md, the figures to OUT/dagger.json, the plot to OUT/dagger.png.
A stage whose output exists is not run again, so an interrupted run continues.
Rooms: demonstrations 2_000_000 + 10_000 * seed + i, drives 3_000_000 + ...,
never `sim.evaluate`'s (10_000 * seed + i) nor `sim.synth`'s (1_000_000 + ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from plotting import pyplot
from runtime.atomic import atomic_write_text
from runtime.logs import add_log_level_argument, setup_logging

log = logging.getLogger("sim.dagger")
DEMO_ROOMS, DRIVE_ROOMS = 2_000_000, 3_000_000


@dataclass(frozen=True)
class DaggerSpec:
    out: Path  # everything goes here, one folder per seed
    seeds: tuple[int, ...] = (0, 1, 2)  # repeats of the whole experiment (rooms, splits, initialisation)
    demos: int = 40  # expert demonstrations to start from
    runs: int = 15  # drives with take-over per round (and extra demonstrations per round for the control)
    rounds: int = 2  # correction rounds
    eval_episodes: int = 50  # unseen rooms per evaluation (sim.evaluate --episodes)
    eval_seed: int = 0  # which unseen rooms (sim.evaluate --seed): the same for every round and seed
    epochs: int = 20  # train.fit --max-epochs (40 demonstrations are ~20 steps an epoch; the val loss flattens by 15)
    intervention_weight: float = 3.0  # train.fit --intervention-weight (docs/recording.md section 6)
    policy_weight: float = 0.0  # train.fit --policy-weight: 0 is HG-DAgger (corrections only)
    mode: str = "step"  # sim.drive --mode of the correction drives: the bundle's and sim.evaluate's (step moves)
    time_limit: float = 25.0  # s per correction drive (sim.drive --time-limit; the expert needs 5-10 s)
    control: bool = True  # also fit on as many extra demonstrations instead of the corrections (the control)
    action_range: float = 0.5  # train.fit --action-range: the recorder's top speed
    fit_args: tuple[str, ...] = ("--preset", "tiny", "--chunk", "4", "--lora-dropout", "0", "--batch-size", "2")


@dataclass
class Round:
    name: str  # r0, r1, ... (corrections) or c1, c2, ... (control: extra demonstrations)
    success: float = float("nan")
    collisions: float = float("nan")
    drives: list = field(default_factory=list)  # sim.drive --json of the drives that made the next round's data

    @property
    def interventions_per_drive(self) -> float:
        return float(np.mean([d["takeovers"] for d in self.drives])) if self.drives else float("nan")


class Seed:
    """One repeat of the experiment: its folder, its commands."""

    def __init__(self, spec: DaggerSpec, seed: int):
        self.spec, self.seed = spec, seed
        self.dir = spec.out / f"seed-{seed}"
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, *args: str, timeout: float = 3600) -> None:
        """One documented command, logged to logs/NAME.log; a failure stops the experiment with its last lines."""
        cmd = [sys.executable, "-m", *args]
        log.info("seed %d: %s", self.seed, " ".join(args))
        path = self.logs / f"{name}.log"
        with open(path, "w") as out:
            out.write(" ".join(["python", "-m", *args]) + "\n")
            out.flush()
            code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if code != 0:
            tail = "".join(path.read_text().splitlines(keepends=True)[-15:])
            raise RuntimeError(f"seed {self.seed}: `python -m {' '.join(args)}` exited {code} ({path}):\n{tail}")

    def demonstrations(self, folder: Path, first: int, count: int) -> Path:
        """Expert demonstrations in rooms first..first+count-1 (sim.record, one room per call)."""
        have = len(list(folder.glob("episode_*.h5"))) if folder.exists() else 0
        for i in range(first + have, first + count):
            room = DEMO_ROOMS + 10_000 * self.seed + i
            self.run(f"record-{folder.name}-{i}", "sim.record", "--out", str(folder), "--teleop", "expert",
                     "--episodes", "1", "--seed", str(room), "--direct", "--quiet",
                     *(["--resume"] if (folder / "episode_0000.h5").exists() else []), timeout=300)
        return folder

    def bundle(self, name: str, data: Path, weights: bool) -> Path:
        """train.fit -> train.merge -> export.to_onnx; the bundle folder."""
        bundle = self.dir / "bundles" / name
        if (bundle / "bundle.json").exists():
            return bundle
        s = self.spec
        weighting = ["--intervention-weight", f"{s.intervention_weight:g}", "--policy-weight",
                     f"{s.policy_weight:g}"] if weights else []
        self.run(f"fit-{name}", "train.fit", "--data", str(data), *s.fit_args, "--max-epochs", str(s.epochs),
                 "--action-range", f"{s.action_range:g}", "--seed", str(self.seed), "--out", str(self.dir / "runs"),
                 "--name", name, "--no-progress", *weighting)
        merged = self.dir / "checkpoints" / name
        self.run(f"merge-{name}", "train.merge", str(self.dir / "runs" / name / "checkpoints" / "best"), "--out",
                 str(merged), "--overwrite")
        self.run(f"export-{name}", "export.to_onnx", str(merged), "--out", str(bundle), "--overwrite")
        return bundle

    def evaluate(self, name: str, bundle: Path) -> dict:
        path = self.dir / "eval" / f"{name}.json"
        if not path.exists():
            self.run(f"evaluate-{name}", "sim.evaluate", "--bundle", str(bundle), "--episodes",
                     str(self.spec.eval_episodes), "--seed", str(self.spec.eval_seed), "--discrete", "--json",
                     str(path))
        results = {r["policy"]: r for r in json.loads(path.read_text())["results"]}
        return results["policy"]

    def drives(self, k: int, bundle: Path) -> list[dict]:
        """Round k's drives of `bundle` with the expert ready to take over; their corrections in corrections/rK."""
        out, results = self.dir / "corrections" / f"r{k}", self.dir / "drives" / f"r{k}"
        results.mkdir(parents=True, exist_ok=True)
        found = []
        for j in range(self.spec.runs):
            room = DRIVE_ROOMS + 10_000 * self.seed + 100 * k + j
            path = results / f"{room}.json"
            if not path.exists():
                self.run(f"drive-r{k}-{j}", "sim.drive", "--bundle", str(bundle), "--seed", str(room), "--direct",
                         "--mode", self.spec.mode, "--discrete", "--dead-zone", "0.1", "--teleop", "expert",
                         "--record", str(out),
                         "--end-at-goal", "--time-limit", f"{self.spec.time_limit:g}", "--json", str(path),
                         "--quiet", timeout=self.spec.time_limit + 120)
            found.append(json.loads(path.read_text()))
        return found

    def merged(self, name: str, *folders: Path) -> Path:
        """train.data merge of `folders` into data/NAME (once: a marker says the merge finished)."""
        data, done = self.dir / "data" / name, self.dir / "data" / f"{name}.done"
        if not done.exists():
            if data.exists():  # an interrupted merge: start it again
                for path in data.glob("*"):
                    path.unlink()
            self.run(f"merge-data-{name}", "train.data", "merge", *map(str, folders), "--out", str(data))
            done.touch()
        return data

    def experiment(self) -> list[Round]:
        s = self.spec
        demos = self.demonstrations(self.dir / "demos", 0, s.demos)
        rounds = [self._scored(Round("r0"), self.bundle("r0", demos, weights=False))]
        bundle, corrections = self.dir / "bundles" / "r0", []
        for k in range(1, s.rounds + 1):
            rounds[-1].drives = self.drives(k, bundle)
            corrections.append(self.dir / "corrections" / f"r{k}")
            bundle = self.bundle(f"r{k}", self.merged(f"r{k}", demos, *corrections), weights=True)
            rounds.append(self._scored(Round(f"r{k}"), bundle))
        rounds[-1].drives = self.drives(s.rounds + 1, bundle)  # the last policy's interventions (not trained on)
        for k in range(1, s.rounds + 1 if s.control else 1):  # the control: as many extra demonstrations instead
            extra = self.demonstrations(self.dir / "extra", s.demos, s.runs * k)
            picked = self.dir / "data" / f"extra-{k}"  # the first k rounds' worth of them
            if not picked.exists():
                picked.mkdir(parents=True)
                for path in sorted(extra.glob("episode_*.h5"))[: s.runs * k]:
                    (picked / path.name).symlink_to(path.resolve())
            bundle_c = self.bundle(f"c{k}", self.merged(f"c{k}", demos, picked), weights=False)
            rounds.append(self._scored(Round(f"c{k}"), bundle_c))
        return rounds

    def _scored(self, round_: Round, bundle: Path) -> Round:
        result = self.evaluate(round_.name, bundle)
        round_.success, round_.collisions = result["success_rate"], result["collision_rate"]
        return round_


def table(results: dict[int, list[Round]], spec: DaggerSpec) -> str:
    """Markdown: per round, success and collisions (mean, sd, each seed) and interventions per drive."""
    names = [r.name for r in next(iter(results.values()))]
    lines = ["| round | data | success (mean ± sd) | per seed | collisions | interventions per drive |",
             "|---|---|---|---|---|---|"]
    for i, name in enumerate(names):
        rounds = [results[s][i] for s in results]
        k = int(name[1:])
        data = (f"{spec.demos} demos" if k == 0 else
                f"{spec.demos} demos + corrections of {k * spec.runs} drives" if name[0] == "r" else
                f"{spec.demos + k * spec.runs} demos")
        success = np.array([r.success for r in rounds])
        drives = [r.interventions_per_drive for r in rounds if r.drives]
        lines.append(f"| {name} | {data} | {success.mean():.2f} ± {success.std():.2f} | "
                     f"{' '.join(f'{v:.2f}' for v in success)} | "
                     f"{np.mean([r.collisions for r in rounds]):.2f} | "
                     f"{f'{np.mean(drives):.1f}' if drives else '-'} |")
    return "\n".join(lines)


def plot(results: dict[int, list[Round]], spec: DaggerSpec, out: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    extra = [0] + [k * spec.runs for k in range(1, spec.rounds + 1)]
    for prefix, label, color in (("r", "corrections (HG-DAgger)", "tab:blue"), ("c", "extra demonstrations",
                                                                               "tab:orange")):
        if prefix == "c" and not spec.control:
            continue
        per_seed = [[r.success for r in rounds if r.name == "r0" or r.name[0] == prefix] for rounds in
                    results.values()]
        values = np.array(per_seed)
        for row in values:
            ax.plot(extra, row, color=color, alpha=0.25, lw=1)
        ax.errorbar(extra, values.mean(0), yerr=values.std(0), color=color, lw=2, capsize=4, label=label)
    ax.set_xlabel(f"drives corrected / extra demonstrations (after {spec.demos} demonstrations)")
    ax.set_ylabel(f"success on {spec.eval_episodes} unseen rooms")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"success, {len(results)} seeds (thin: each seed)", fontsize=10)
    takeovers = np.array([[r.interventions_per_drive for r in rounds if r.drives] for rounds in results.values()])
    bx.bar([f"r{k}" for k in range(takeovers.shape[1])], takeovers.mean(0), yerr=takeovers.std(0), capsize=4,
           color="tab:blue")
    bx.set_xlabel("bundle driven")
    bx.set_ylabel("expert take-overs per drive")
    bx.set_title("interventions per drive", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def run_experiment(spec: DaggerSpec) -> dict:
    spec.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = {seed: Seed(spec, seed).experiment() for seed in spec.seeds}
    report = {"spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
              "minutes": round((time.monotonic() - started) / 60, 1),
              "seeds": {str(s): [{"name": r.name, "success": r.success, "collisions": r.collisions,
                                  "interventions_per_drive": r.interventions_per_drive, "drives": r.drives}
                                 for r in rounds] for s, rounds in results.items()},
              "table": table(results, spec)}
    atomic_write_text(spec.out / "dagger.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(spec.out / "dagger.md", report["table"] + "\n")
    report["plot"] = plot(results, spec, spec.out / "dagger.png")
    return report


def main(argv=None) -> int:
    d = DaggerSpec(out=Path("dagger"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    ap.add_argument("--demos", type=int, default=d.demos, help="expert demonstrations to start from")
    ap.add_argument("--runs", type=int, default=d.runs, help="drives with take-over per round")
    ap.add_argument("--rounds", type=int, default=d.rounds)
    ap.add_argument("--eval-episodes", type=int, default=d.eval_episodes, help="unseen rooms per evaluation")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="train.fit --max-epochs")
    ap.add_argument("--intervention-weight", type=float, default=d.intervention_weight)
    ap.add_argument("--policy-weight", type=float, default=d.policy_weight)
    ap.add_argument("--mode", choices=("continuous", "step"), default=d.mode, help="of the correction drives")
    ap.add_argument("--time-limit", type=float, default=d.time_limit, help="s per correction drive")
    ap.add_argument("--no-control", action="store_true", help="skip the control (extra demonstrations instead)")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    spec = DaggerSpec(out=args.out, seeds=tuple(args.seeds), demos=args.demos, runs=args.runs, rounds=args.rounds,
                      eval_episodes=args.eval_episodes, epochs=args.epochs,
                      intervention_weight=args.intervention_weight, policy_weight=args.policy_weight,
                      mode=args.mode, time_limit=args.time_limit, control=not args.no_control)
    report = run_experiment(spec)
    print(report["table"])
    print(f"{spec.out / 'dagger.json'}, {report['plot']} ({report['minutes']} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
