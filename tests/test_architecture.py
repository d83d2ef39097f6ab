"""The import rules of docs/architecture.md, checked over the source's import graph.

Every import statement counts, including those inside functions (a lazy import
is still a dependency: it fails on the robot the moment that code runs).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers.source import PACKAGES, ROOT, imports_of, module_name, source_files

# package -> the project packages it must never import (docs/architecture.md, "Who may import whom")
FORBIDDEN = {
    "runtime": {"train", "export", "sim", "benchmarks", "pipeline", "plotting", "serve"},
    "train": {"export", "sim", "benchmarks", "pipeline", "serve"},
    "sim": {"train", "export", "benchmarks", "pipeline", "serve"},
    "serve": {"train", "export", "sim", "benchmarks", "pipeline", "plotting"},
    "export": {"sim", "benchmarks", "pipeline"},
    "benchmarks": {"pipeline"},
    "plotting": {"runtime", "train", "export", "sim", "benchmarks", "pipeline", "serve"},
}
# runtime/'s rooms (docs/architecture.md, "Inside runtime/"): room -> the rooms it must never import
ROOM_FORBIDDEN = {
    "policy": {"cameras", "motors", "teleop", "control", "recording", "ros2"},
    "cameras": {"policy", "control", "motors", "teleop"},
    "motors": {"policy", "control", "cameras", "teleop", "recording"},
    "teleop": {"policy", "control", "cameras", "motors", "recording"},
    "ros2": {"policy", "control", "cameras", "motors", "teleop", "recording"},
    "control": set(),
    "recording": set(),
}
DEVICE_ROOMS = ("cameras", "motors", "teleop")
# rooms that see the devices only through the seams (runtime.hardware) and each device room's opener
THROUGH_OPENERS = {"control", "recording"}
OPENERS = {f"runtime.{room}.select" for room in DEVICE_ROOMS}
# the commands a user types: entry points, imported by nothing in the project
COMMANDS = {"runtime.drive", "runtime.record", "runtime.preflight", "runtime.motor_stop", "runtime.bundle",
            "runtime.engines", "runtime.jetpack"}
# third-party libraries the robot package must not load (docs/architecture.md: it starts fast, fits beside the engines)
RUNTIME_HEAVY = {"torch", "transformers", "peft", "lightning", "matplotlib"}


def project_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line}."""
    files = source_files(root)
    modules = {module_name(p, root) for p in files}
    graph: dict[str, dict[str, int]] = {}
    for p in files:
        name = module_name(p, root)
        edges: dict[str, int] = {}
        for line, mod in imports_of(p, root):
            # an import of pkg.mod.name resolves to the longest known module prefix
            parts = mod.split(".")
            for n in range(len(parts), 0, -1):
                cand = ".".join(parts[:n])
                if cand in modules:
                    if cand != name:
                        edges.setdefault(cand, line)
                    break
        graph[name] = edges
    return graph


def rule_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for mod, edges in graph.items():
        forbidden = FORBIDDEN.get(mod.split(".")[0], set())
        bad += [f"{mod} imports {dep} (line {line})" for dep, line in edges.items() if dep.split(".")[0] in forbidden]
    return sorted(bad)


def room_of(module: str) -> str | None:
    """'runtime.control.loop' -> 'control'; None for the top level of runtime/ and for other packages."""
    parts = module.split(".")
    return parts[1] if parts[0] == "runtime" and len(parts) > 2 and parts[1] in ROOM_FORBIDDEN else None


def room_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """The rules between runtime/'s rooms, and that no module imports a command."""
    bad = []
    for mod, edges in graph.items():
        room = room_of(mod)
        for dep, line in edges.items():
            if dep in COMMANDS:
                bad.append(f"{mod} imports the command {dep} (line {line})")
            other = room_of(dep)
            if room is None or other is None or other == room:
                continue
            if other in ROOM_FORBIDDEN[room]:
                bad.append(f"{mod} imports {dep} (line {line}): {room}/ never imports {other}/")
            elif room in THROUGH_OPENERS and other in DEVICE_ROOMS and dep not in OPENERS:
                bad.append(f"{mod} imports {dep} (line {line}): {room}/ sees devices only through the seams and "
                           f"runtime.{other}.select")
    return sorted(bad)


def cycles(graph: dict[str, dict[str, int]]) -> list[tuple[str, ...]]:
    """Every strongly connected group of modules larger than one (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(tuple(sorted(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_packages_import_only_what_the_architecture_allows():
    assert rule_violations(project_graph()) == []


def test_runtimes_rooms_import_only_what_the_architecture_allows():
    assert room_violations(project_graph()) == []


def test_the_room_checker_sees_each_kind_of_violation(tmp_path):
    """The checker itself: a tree that breaks each room rule (and one that keeps them) is judged right."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for room in ROOM_FORBIDDEN:
        (tmp_path / "runtime" / room).mkdir()
        (tmp_path / "runtime" / room / "__init__.py").write_text("")
    files = {
        "runtime/drive.py": "",
        "runtime/record.py": "",
        "runtime/hardware.py": "",
        "runtime/cameras/live.py": "from runtime.hardware import Camera\n",
        "runtime/cameras/select.py": "from runtime.cameras.live import LiveCamera\n",
        "runtime/motors/serial_controller.py": "def f():\n    from runtime.control import safety\n",  # hidden
        "runtime/motors/select.py": "from runtime.motors.serial_controller import f\n",
        "runtime/teleop/select.py": "",
        "runtime/policy/onboard.py": "from runtime.cameras.live import LiveCamera\n",
        "runtime/control/safety.py": "",
        "runtime/control/session.py": "from runtime.cameras.select import x\nfrom runtime.motors.select import y\n",
        "runtime/control/loop.py": "from runtime.cameras.live import LiveCamera\n",
        "runtime/recording/session.py": "import runtime.drive\n",
        "sim/drive.py": "from runtime.control.session import drive\n",
        "sim/record.py": "from runtime.record import main\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert room_violations(project_graph(tmp_path)) == [
        "runtime.control.loop imports runtime.cameras.live (line 1): control/ sees devices only through the seams "
        "and runtime.cameras.select",
        "runtime.motors.serial_controller imports runtime.control.safety (line 2): motors/ never imports control/",
        "runtime.policy.onboard imports runtime.cameras.live (line 1): policy/ never imports cameras/",
        "runtime.recording.session imports the command runtime.drive (line 1)",
        "sim.record imports the command runtime.record (line 1)",
    ]


def test_no_two_modules_import_each_other():
    assert cycles(project_graph()) == []


def test_runtime_imports_no_heavy_library_anywhere_in_its_source():
    bad = [f"{module_name(p)}:{line} imports {mod}"
           for p in (ROOT / "runtime").rglob("*.py") for line, mod in imports_of(p)
           if mod.split(".")[0] in RUNTIME_HEAVY]
    assert bad == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checker itself: a tree that breaks each rule in a hidden way is caught."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "runtime" / "drive.py").write_text("def f():\n    from sim import world\n")
    (tmp_path / "sim" / "world.py").write_text("from . import task\n")
    (tmp_path / "sim" / "task.py").write_text("def g():\n    import sim.world\n")
    (tmp_path / "runtime" / "preflight.py").write_text("import importlib\nimportlib.import_module('export.to_trt')\n")
    (tmp_path / "train" / "fit.py").write_text("import export.to_onnx\n")
    (tmp_path / "export" / "to_onnx.py").write_text("")
    (tmp_path / "export" / "to_trt.py").write_text("")
    graph = project_graph(tmp_path)
    violations = rule_violations(graph)
    assert "runtime.drive imports sim.world (line 2)" in violations  # inside a function
    assert "train.fit imports export.to_onnx (line 1)" in violations
    assert "runtime.preflight imports export.to_trt (line 2)" in violations  # by name, through importlib
    assert all(v.startswith(("runtime.drive ", "runtime.preflight ", "train.fit ")) for v in violations)
    assert cycles(graph) == [("sim.task", "sim.world")]


def imports_of_test_modules(root: Path = ROOT) -> list[str]:
    """'tests/PATH:LINE imports tests.X.test_Y' for each file of tests/ that imports another test module
    (or a name from one): builders and helpers shared between test modules live in tests/fixtures/ and
    tests/helpers/, so that a test module can be moved, split or deleted on its own."""
    found = []
    for path in sorted((root / "tests").rglob("*.py")):
        me = module_name(path, root)
        for line, mod in imports_of(path, root):
            parts = mod.split(".")
            owner = ".".join(parts[: next((i + 1 for i, p in enumerate(parts) if p.startswith("test_")), 0)])
            if parts[0] == "tests" and owner and owner != me:
                found.append(f"{path.relative_to(root)}:{line} imports {owner}")
    return sorted(set(found))


def test_no_test_module_imports_another():
    assert imports_of_test_modules() == []


def test_the_test_import_checker_sees_each_way_of_importing_a_test_module(tmp_path):
    """The checker itself: from-imports, plain and relative imports and imports inside functions of a test
    module are caught; a module importing itself, helpers, fixtures and conftest are not."""
    for folder in ("tests", "tests/runtime", "tests/helpers"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "tests" / "runtime" / "test_a.py").write_text(
        "from tests.runtime.test_b import Peer\nimport tests.runtime.test_a as me\n"
        "def f():\n    from . import test_b\n")
    (tmp_path / "tests" / "runtime" / "test_b.py").write_text(
        "from tests.helpers.drive import run_drive\nfrom tests.conftest import ROOT\n")
    (tmp_path / "tests" / "test_c.py").write_text("import tests.runtime.test_b\n")
    (tmp_path / "tests" / "helpers" / "drive.py").write_text("from tests.runtime.test_a import f\n")
    assert imports_of_test_modules(tmp_path) == [
        "tests/helpers/drive.py:1 imports tests.runtime.test_a",
        "tests/runtime/test_a.py:1 imports tests.runtime.test_b",
        "tests/runtime/test_a.py:4 imports tests.runtime.test_b",
        "tests/test_c.py:1 imports tests.runtime.test_b",
    ]


def test_documented_room_rules_match_the_checked_ones():
    """docs/architecture.md's table of runtime/'s rooms: one row per room, its "never imports" cell naming exactly
    the checked rooms (and, for control/ and recording/, the openers), every room's __init__ saying the three
    things a newcomer needs."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for room, forbidden in ROOM_FORBIDDEN.items():
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| `runtime/{room}/`")), None)
        assert line is not None, f"docs/architecture.md has no row for runtime/{room}/"
        never = set(re.findall(r"`(\w+)/`", line.split("|")[-2]))
        assert never == forbidden, f"runtime/{room}/: documented {sorted(never)}, checked {sorted(forbidden)}"
        if room in THROUGH_OPENERS:
            assert "only through" in line and all(f"`{o}`" in line for o in sorted(OPENERS)), line
        text = (ROOT / "runtime" / room / "__init__.py").read_text()
        for heading in ("What lives here", "What it may import", "How to add one more"):
            assert heading in text, f"runtime/{room}/__init__.py does not say {heading!r}"
    for room in (p.name for p in (ROOT / "runtime").iterdir() if (p / "__init__.py").exists()):
        assert room in ROOM_FORBIDDEN or room == "__pycache__", f"runtime/{room}/ has no rule in ROOM_FORBIDDEN"


def test_runtimes_top_level_holds_the_commands_and_few_shared_modules():
    top = sorted(p.name for p in (ROOT / "runtime").glob("*.py"))
    assert len(top) <= 12, top
    assert {f"{c.split('.')[1]}.py" for c in COMMANDS} <= set(top)


def test_documented_rules_match_the_checked_ones():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for pkg, forbidden in FORBIDDEN.items():
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{pkg}/`")), None)
        assert line is not None, f"docs/architecture.md has no row for {pkg}/"
        for dep in forbidden:
            assert f"`{dep}`" in line.split("|")[-2], f"docs/architecture.md: {pkg}/ row does not forbid {dep}/"


@pytest.mark.parametrize("module", ["runtime.drive, runtime.recording.rerun_log, runtime.recording.rerun_episode"])
def test_importing_the_drive_loads_no_plotting_hdf5_or_simulator(module):
    """... nor Rerun: rerun-sdk (an extra) is loaded only when a log or a view is opened."""
    import subprocess
    import sys

    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'h5py', 'sim', 'torch', 'transformers', 'train', 'export', 'rerun', 'av')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
