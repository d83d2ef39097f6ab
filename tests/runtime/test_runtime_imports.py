"""runtime/ imports nothing from export/, train/, benchmarks/, sim/ or pipeline/: checked on the import
statements of every file (module level and inside functions), not on what one import happens to load."""

import ast

import pytest

from tests.conftest import ROOT

FORBIDDEN = ("export", "train", "benchmarks", "sim", "pipeline")
FILES = sorted((ROOT / "runtime").rglob("*.py"))


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            yield str(node.args[0].value)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_file_imports_nothing_outside_runtime(path):
    bad = [m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def gpu():\n    from export.to_trt import gpu_name\n    return gpu_name()\n")
    assert list(imported_modules(f)) == ["export.to_trt"]
