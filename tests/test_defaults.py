"""Every default is written once: in the dataclass (or constant) that owns it, read everywhere else.

A setting is known by its name: the `--step-duration` flag, the `step_duration`
field and a `DEFAULT_STEP_DURATION` constant are one setting. The test walks the
source of every package and collects each place that writes a setting's value as
a literal:
- a dataclass field with a literal default (`window: int = 8`);
- a parser option with a literal default (`add_argument("--window", default=8)`);
- a module constant named DEFAULT_<SETTING> (`DEFAULT_WINDOW = 8`);
- a fallback after `or` on an option (`args.window or 8`).
A setting written as a literal in two places fails, naming both: one of them
must read the other (`default=DriveConfig.rate`). Names that mean different
things in different places are listed in DISTINCT with the reason.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.helpers.source import ROOT, source_files

# setting name -> why two literals of that name are two different settings
DISTINCT = {
    "steps": "benchmarks measure N steps; sim.synth and sim.evaluate cap an episode: different counts",
    "seed": "each command's own random seed",
    "jpeg_quality": "the drive's live Rerun frames (small, many: 75) and a recording's view (90): two uses",
    "out": "each command's own output folder",
    "name": "each command's own run name",
    "episodes": "how many episodes a command makes or evaluates, each its own",
    "workers": "each command's own worker processes",
    "timeout": "each wait's own limit",
    "width": "each renderer's or camera's own image width",
    "height": "each renderer's or camera's own image height",
    "port": "each server's or controller's own port",
    "host": "each server's own bind address",
    "json": "each command's own output file",
    "variant": "each command's ONNX variant choice",
    "preset": "each command's model preset choice",
    "verify": "runtime.drive checks quickly at every start, runtime.preflight fully: two choices on purpose",
    "seconds": "each benchmark's own duration: a load test's seconds per robot, the soak's run",
    "robots": "each serving benchmark's own number of simulated robots",
    "frames": "frames per episode (sim.synth) and frames per robot (benchmarks.serve_batching): different counts",
    "backend": "runtime.drive takes the fastest backend that loads here (auto); evaluation, verification and "
               "benchmarks name one (ort-cpu) so that their figures reproduce on any machine",
    "fps": "a camera's requested rate (int) and pre-flight's expected rate (0 = one frame): two settings",
    "frame_spacing_s": "the driving record's when a bundle has none (the collector's 0.4 s moves) and a take-over "
                       "spec's (0: not given; TakeoverSpec.from_args reads the bundle's)",
    "action_range": "the model's (the collector's +-1.15 moves) and sim.dagger's recordings' top speed (0.5 m/s)",
    "epochs": "each experiment's recipe: the demo's 8 epochs on 200 demonstrations, sim.dagger's 20 on 40",
    "eval_episodes": "each experiment's own evaluation size (pipeline's closed loop, sim.dagger's rounds)",
    "intervention_weight": "train.data's default weighs every frame alike (1); sim.dagger runs HG-DAgger (3, "
                           "docs/recording.md section 6)",
    "policy_weight": "train.data's default keeps the policy's own frames (1); sim.dagger runs HG-DAgger (0)",
    "source": "a camera's source (csi, /dev/video0, ...) and the driving record's provenance text",
    "mode": "runtime.drive takes the bundle's driving record (spec_from_args; DriveConfig's continuous for a library "
            "caller that builds a DriveSpec itself); runtime.record records the original collector's step moves by "
            "default; Driving.mode is what a bundle without a record was made for (step): each its own choice",
    "give_up_after": "the drive's --give-up-after (5 s) and the soak's (1 s, so that its outage past it fits "
                     "between two faults of the compressed schedule)",
    "rate": "runtime.drive's control loop Hz, runtime.record's frames per second (its control loop Hz is "
            "--control-rate, read from DriveConfig.rate)",
}


def _literal(node) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is not None and not isinstance(node.value, bool) and node.value != ""
    if isinstance(node, (ast.Tuple, ast.List)):
        return bool(node.elts) and all(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _literal(node.operand)
    return False


def _is_dataclass(cls: ast.ClassDef) -> bool:
    for d in cls.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if getattr(target, "id", getattr(target, "attr", "")) == "dataclass":
            return True
    return False


def literal_defaults(path: Path) -> list[tuple[str, str, str]]:
    """(setting, 'file:line', literal source) for each literal default written in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _is_dataclass(node):
            for item in node.body:
                if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None
                        and _literal(item.value)):
                    found.append((item.target.id, f"{rel}:{item.lineno}", ast.unparse(item.value)))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
            default = next((k.value for k in node.keywords if k.arg == "default"), None)
            if flags and default is not None and _literal(default):
                found.append((flags[0][2:].replace("-", "_"), f"{rel}:{node.lineno}", ast.unparse(default)))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("DEFAULT_") and _literal(node.value):
                found.append((name[len("DEFAULT_"):].lower(), f"{rel}:{node.lineno}", ast.unparse(node.value)))
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) == 2:
            left, right = node.values
            if isinstance(left, ast.Attribute) and _literal(right):
                found.append((left.attr, f"{rel}:{node.lineno}", ast.unparse(right)))
    return found


def written_twice(files) -> dict[str, list[str]]:
    where = defaultdict(list)
    for path in files:
        for setting, place, value in literal_defaults(path):
            where[setting].append(f"{place} ({value})")
    return {s: places for s, places in sorted(where.items()) if len(places) > 1 and s not in DISTINCT}


def test_each_default_is_written_once():
    twice = written_twice(source_files())
    assert twice == {}, "settings whose default is written in more than one place (read it from the owner):\n" + \
        "\n".join(f"  {s}: {', '.join(p)}" for s, p in twice.items())


def test_the_walker_finds_each_kind_of_second_literal(tmp_path, monkeypatch):
    """The checker itself: each way of writing a default twice is caught, a read default is not."""
    import tests.test_defaults as me

    pkg = tmp_path / "runtime"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\nclass Config:\n    window: int = 8\n    max_accel: float = 2.0\n"
        "    step_duration: float = 0.4\n    cmd_timeout: float = 0.5\n")
    (pkg / "b.py").write_text(
        "DEFAULT_WINDOW = 8\n"
        "def parser(ap, args):\n"
        "    ap.add_argument('--max-accel', type=float, default=2.0)\n"
        "    ap.add_argument('--step-duration', type=float, default=Config.step_duration)\n"
        "    return args.cmd_timeout or 0.5\n")
    monkeypatch.setattr(me, "ROOT", tmp_path)
    twice = written_twice([pkg / "a.py", pkg / "b.py"])
    assert set(twice) == {"window", "max_accel", "cmd_timeout"}
    assert twice["window"] == ["runtime/a.py:4 (8)", "runtime/b.py:1 (8)"]
