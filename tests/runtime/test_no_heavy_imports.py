"""runtime/ must never pull in torch, transformers, peft or lightning (docs/architecture.md)."""

import pkgutil

import pytest

import runtime
from tests.conftest import run_python

HEAVY = ("torch", "transformers", "peft", "lightning")
CHECK = "import sys, {mod}; heavy = [m for m in {heavy!r} if m in sys.modules]; print('HEAVY=' + ','.join(heavy))"


def _modules():
    return ["runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]


@pytest.mark.parametrize("mod", _modules())
def test_runtime_module_imports_nothing_heavy(mod):
    proc = run_python("-c", CHECK.format(mod=mod, heavy=HEAVY), timeout=60)
    if proc.returncode != 0 and "No module named 'tensorrt'" in proc.stderr:
        pytest.skip(f"{mod} needs TensorRT, absent here")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("HEAVY="), f"{mod} imported {proc.stdout.strip()}"
