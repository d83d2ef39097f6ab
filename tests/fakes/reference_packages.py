"""What the real tensorrt and pycuda define, read from their published files: no GPU, nothing installed.

    python -m tests.fakes.reference_packages            # download what is missing into .cache/reference-packages
    from tests.fakes.reference_packages import tensorrt_names, pycuda_names
    "execute_async_v3" in tensorrt_names("11.4.0.106")  # True

TensorRT: the `tensorrt-cu12-bindings` wheel of each version (about 1 MB)
holds `tensorrt.so`, the pybind11 module, whose string table names every
class, method, property and enum member it registers, and `__init__.py`,
which adds the Python-level ones (`nptype`, `__version__`). The linker
merges a string that ends another one into its tail ("Runtime" is stored as
the end of "IPluginV3OneRuntime"), so a name counts as present when a
string of identifier characters ends with it; strings with spaces (the
docstrings, which still say "FP16" in 11.x) do not count. pycuda: the
2026.1 sdist's `src/wrapper/wrap_cudadrv.cpp` (every name the C++ module
registers, as string literals or through its DEF_SIMPLE_* / DECLARE_EXC
macros) and `pycuda/driver.py` (the Python-level ones). `make test` runs
this module first (the `reference-packages` target), so CI has the files.
The parameters each name takes are read from the same files by
tests/fakes/reference_signatures.py.
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from functools import cache
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "reference-packages"
# version -> (wheel file, sha256); the oldest TensorRT the project supports (JetPack 6.1/6.2) and the newest 11.x
TENSORRT_WHEELS = {
    "10.3.0": ("tensorrt_cu12_bindings-10.3.0-cp311-none-manylinux_2_17_x86_64.whl",
               "59ace22d7f2ca1e9dcde2cb0cb5916912cb3cd5a9d72dd7852be0160d9b3a0ee"),
    "11.4.0.106": ("tensorrt_cu12_bindings-11.4.0.106-cp311-none-manylinux_2_28_x86_64.whl",
                   "e2ab48f316bbff6a7a44a30e94a9ceb0d2cf6645ff39feadecfa68d7cb7a94bf"),
}
TENSORRT_VERSIONS = tuple(TENSORRT_WHEELS)
PYCUDA_VERSION = "2026.1"
PYCUDA_SDIST = ("pycuda-2026.1.tar.gz", "759516160628ba06f32ce7e563e3f5b9214691dc9528a03ea99ea1073f4e14ba",
                "https://files.pythonhosted.org/packages/75/93/36ffd54430924dcb03a88c97519d56589e573d0dcc999c77a4c4d8a90306/"
                "pycuda-2026.1.tar.gz")
_IDENTIFIER_STRING = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


class MissingReference(RuntimeError):
    pass


def _checked(path: Path, sha256: str) -> Path:
    if not path.is_file():
        raise MissingReference(f"{path} is missing: run make reference-packages (or python -m "
                               f"tests.fakes.reference_packages) with PyPI reachable")
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != sha256:
        raise MissingReference(f"{path}: sha256 {found}, expected {sha256}; delete it and run make reference-packages")
    return path


class NameSet:
    """Names a package defines; `name in names` as described in the module docstring."""

    def __init__(self, strings: set[bytes], python_names: set[str], label: str):
        self.strings, self.python_names, self.label = strings, python_names, label
        self._tails: dict[str, bool] = {}

    def __contains__(self, name: str) -> bool:
        if name in self.python_names:
            return True
        if name not in self._tails:
            encoded = name.encode()
            self._tails[name] = encoded in self.strings or any(s.endswith(encoded) for s in self.strings)
        return self._tails[name]


def _python_names(source: str) -> set[str]:
    """Every name a Python module defines: functions, classes (and their members), assigned names/attributes."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
                    elif isinstance(sub, ast.Attribute):
                        names.add(sub.attr)
    return names


@cache
def tensorrt_names(version: str) -> NameSet:
    wheel, sha256 = TENSORRT_WHEELS[version]
    with zipfile.ZipFile(_checked(CACHE / wheel, sha256)) as z:
        binary = z.read("tensorrt_bindings/tensorrt.so")
        init = z.read("tensorrt_bindings/__init__.py").decode()
    # the string table: NUL-separated runs of printable bytes; only identifier-shaped ones are names
    strings = {s for s in binary.split(b"\0") if _IDENTIFIER_STRING.fullmatch(s)}
    return NameSet(strings, _python_names(init), f"tensorrt {version}")


PYCUDA_SOURCES = ("src/wrapper/wrap_cudadrv.cpp", "src/cpp/cuda.hpp", "pycuda/driver.py", "pycuda/__init__.py")


@cache
def pycuda_sources() -> dict[str, str]:
    """The pycuda sdist's files the checks read (PYCUDA_SOURCES), by their path inside the package folder."""
    name, sha256, _ = PYCUDA_SDIST
    root = f"pycuda-{PYCUDA_VERSION}"
    with tarfile.open(_checked(CACHE / name, sha256)) as tar:
        return {path: tar.extractfile(f"{root}/{path}").read().decode() for path in PYCUDA_SOURCES}


@cache
def pycuda_names() -> NameSet:
    sources = pycuda_sources()
    wrapper, driver, init = (sources[p] for p in ("src/wrapper/wrap_cudadrv.cpp", "pycuda/driver.py",
                                                   "pycuda/__init__.py"))
    registered = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', wrapper))
    registered |= set(re.findall(r"\b(?:DEF_SIMPLE_\w+|DECLARE_EXC)\(\s*(\w+)", wrapper))
    return NameSet({n.encode() for n in registered}, _python_names(driver) | _python_names(init),
                   f"pycuda {PYCUDA_VERSION}")


def download(cache: Path = CACHE) -> None:
    """Fetch what is missing: the wheels with pip (any host Python: the platform is given), the sdist directly
    (pip would try to build pycuda's metadata, which needs CUDA)."""
    cache.mkdir(parents=True, exist_ok=True)
    for version, (wheel, sha256) in TENSORRT_WHEELS.items():
        if not (cache / wheel).is_file():
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                            "--platform", "manylinux_2_17_x86_64", "--dest", str(cache),
                            f"tensorrt-cu12-bindings=={version}"], check=True)
        _checked(cache / wheel, sha256)
    name, sha256, url = PYCUDA_SDIST
    if not (cache / name).is_file():
        tmp = cache / f".{name}.part"
        with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as f:
            f.write(response.read())
        tmp.replace(cache / name)
    _checked(cache / name, sha256)


if __name__ == "__main__":
    download()
    print(f"reference packages in {CACHE}")
