"""The project's Python source read as text: which files, and what each imports (no module is imported).

    from tests.helpers.source import imports_of, module_name, source_files
    for path in source_files():                 # every .py file of the project's packages
        for line, module in imports_of(path):   # absolute names, relative imports resolved
            ...

Shared by the import rules (tests/test_architecture.py) and the defaults walker (tests/test_defaults.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.processes import ROOT

PACKAGES = ("runtime", "train", "export", "sim", "benchmarks", "pipeline", "plotting", "serve")


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
