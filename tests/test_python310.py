"""The robot's code on JetPack 6's Python 3.10, checked without a 3.10 interpreter (none can be had where CI runs).

    python -m pytest -q tests/test_python310.py                 # the static check (a second)
    python -m pytest -q -m slow tests/test_python310.py         # + pip resolves the runtime extra for cp310 aarch64

What goes on the robot (runtime/, and sim/ and benchmarks/ which the Jetson image copies) must parse as Python
3.10 and use nothing of the standard library that 3.11 added; the `runtime` extra must resolve for CPython 3.10
on aarch64 (what `jetson/setup.sh` installs), which pip answers from the registry's metadata without installing.
"""

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ROBOT_PACKAGES = ("runtime", "sim", "benchmarks")
# standard-library names that are new in Python 3.11 (module, or module.attribute)
NEW_IN_311 = {"tomllib", "wsgiref.types", "typing.Self", "typing.LiteralString", "typing.Never", "typing.assert_never",
              "typing.reveal_type", "typing.Required", "typing.NotRequired", "typing.TypeVarTuple", "typing.Unpack",
              "typing.assert_type", "typing.dataclass_transform", "enum.StrEnum", "enum.verify", "enum.ReprEnum",
              "datetime.UTC", "asyncio.TaskGroup", "asyncio.timeout", "asyncio.Runner", "hashlib.file_digest",
              "contextlib.chdir", "operator.call", "ExceptionGroup", "BaseExceptionGroup",
              "logging.getLevelNamesMapping"}


def problems_in(source: str, where: str) -> list[str]:
    try:
        tree = ast.parse(source, feature_version=(3, 10))
    except SyntaxError as e:
        return [f"{where}:{e.lineno}: not Python 3.10 syntax: {e.msg}"]
    found = []
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name
                if a.name in NEW_IN_311:
                    found.append(f"{where}:{node.lineno}: import {a.name} (Python 3.11+)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [f"{where}:{node.lineno}: from {node.module} import {a.name} (Python 3.11+)" for a in node.names
                      if node.module in NEW_IN_311 or f"{node.module}.{a.name}" in NEW_IN_311]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{aliases.get(node.value.id, node.value.id)}.{node.attr}"
            if dotted in NEW_IN_311:
                found.append(f"{where}:{node.lineno}: {dotted} (Python 3.11+)")
        elif isinstance(node, ast.Name) and node.id in NEW_IN_311:
            found.append(f"{where}:{node.lineno}: {node.id} (Python 3.11+)")
    return found


def test_the_robots_code_is_python_310_code():
    problems, files = [], 0
    for package in ROBOT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            files += 1
            problems += problems_in(path.read_text(), str(path.relative_to(ROOT)))
    assert files > 50 and not problems, problems


def test_the_check_sees_311_only_code():
    assert problems_in("import tomllib\n", "a.py") and problems_in("from typing import Self\n", "a.py")
    assert problems_in("import datetime as dt\nx = dt.UTC\n", "a.py")
    assert problems_in("try:\n    pass\nexcept* ValueError:\n    pass\n", "a.py")
    assert not problems_in("import datetime as dt\nx = dt.timezone.utc\n", "a.py")


JETSON = {"platform_machine": "aarch64", "sys_platform": "linux", "platform_system": "Linux", "python_version": "3.10",
          "python_full_version": "3.10.12", "implementation_name": "cpython", "extra": ""}


def on_a_jetson(requirements: list[str]) -> list[str]:
    """The requirements whose markers hold on JetPack 6 (pip evaluates a target's markers on the host's machine)."""
    from packaging.requirements import Requirement

    kept = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(JETSON):
            req.marker = None
            kept.append(str(req))
    return kept


@pytest.mark.slow
def test_the_runtime_extra_resolves_for_cpython_310_on_aarch64(tmp_path):
    """pip's resolver for what jetson/setup.sh installs on JetPack 6 (CPython 3.10, aarch64), from the registry's
    metadata (a dry run; ~30 s with the registry reachable). The robot then runs onnxruntime 1.23 (its last
    release for 3.10), not CI's; docs say so."""
    project = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = on_a_jetson(project["dependencies"] + project["optional-dependencies"]["runtime"])
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--only-binary=:all:", "--python-version", "3.10", "--implementation", "cp", "--abi",
                           "cp310", "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64",
                           "--platform", "manylinux2014_aarch64", "--target", str(tmp_path / "t"), "--report",
                           str(report), *wanted], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    got = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert {"onnxruntime", "numpy", "tokenizers", "h5py", "pyserial"} <= set(got), got
    assert not any(n.startswith("opencv") for n in got)  # JetPack's GStreamer OpenCV stays visible
    assert got["numpy"].startswith("1.")  # JetPack's OpenCV is built against numpy 1.x
    print("cp310 aarch64:", {n: got[n] for n in ("onnxruntime", "numpy", "tokenizers", "h5py")})
