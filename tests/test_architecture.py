"""The import rules of docs/architecture.md, checked over the source's import graph.

Every import statement counts, including those inside functions (a lazy import
is still a dependency: it fails on the robot the moment that code runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "train", "export", "sim", "benchmarks", "pipeline", "plotting", "serve")

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
# third-party libraries the robot package must not load (docs/architecture.md: it starts fast, fits beside the engines)
RUNTIME_HEAVY = {"torch", "transformers", "peft", "lightning", "matplotlib"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            # `from pkg import module` imports the submodule too
            found += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", ""))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            found.append((node.lineno, str(node.args[0].value)))  # importlib.import_module("export.to_trt")
    return found


def source_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))


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


def test_documented_rules_match_the_checked_ones():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for pkg, forbidden in FORBIDDEN.items():
        line = next((ln for ln in doc.splitlines() if ln.startswith(f"| `{pkg}/`")), None)
        assert line is not None, f"docs/architecture.md has no row for {pkg}/"
        for dep in forbidden:
            assert f"`{dep}`" in line.split("|")[-2], f"docs/architecture.md: {pkg}/ row does not forbid {dep}/"


@pytest.mark.parametrize("module", ["runtime.drive"])
def test_importing_the_drive_loads_no_plotting_hdf5_or_simulator(module):
    import subprocess
    import sys

    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'h5py', 'sim', 'torch', 'transformers', 'train', 'export')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
