"""What the real tensorrt and pycuda accept: the parameters of each function, method and constructor.

    python -m tests.fakes.reference_signatures tensorrt 11.4.0.106 IExecutionContext.execute_async_v3
    python -m tests.fakes.reference_signatures pycuda Event.record
    from tests.fakes.reference_signatures import tensorrt_api, pycuda_api, mismatch

Read from the same published files as tests/fakes/reference_packages.py (no GPU, nothing installed):

TensorRT: the real `tensorrt.so` of each `tensorrt-cu12-bindings` wheel is imported in a subprocess.
Its pybind11 functions state their signatures in their docstrings
(`execute_async_v3(self: tensorrt.IExecutionContext, stream_handle: int) -> bool`, one line per
overload). The module needs libnvinfer, libnvinfer_plugin and libnvonnxparser only for the nine entry
points it calls (createInferRuntime_INTERNAL, ...; everything else goes through the returned objects'
vtables), and nothing calls them while the module loads, so stand-ins built here with `cc` (each entry
point returns NULL) let it load. The wheel is CPython 3.11's: the subprocess runs this interpreter when
it is 3.11, else `python3.11` from PATH. Python-level functions (`nptype`) come from the wheel's
`__init__.py`.

pycuda: the boost.python declarations of the 2026.1 sdist's `src/wrapper/wrap_cudadrv.cpp`
(`.def("record", &cl::record, py::arg("stream")=py::object())`, `py::init<unsigned int>(py::arg("flags")=0)`).
boost.python gives keywords to the trailing arguments; the arguments before them, and all of a
declaration without keywords (`DEF_SIMPLE_METHOD(synchronize)`), are positional-only, counted from the
C++ function they bind (`float time_since(event const &start)` in `src/cpp/cuda.hpp`; when every
definition of that name agrees on its count). Where neither states it, the callable is "unstated".

A fake callable conforms when its parameters equal one overload's: the same count, the same names where
the real one names them, the same ones optional, positional-only where the real one is, and no
*args/**kwargs the real one lacks (`mismatch`).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from tests.fakes.reference_packages import (
    CACHE,
    TENSORRT_WHEELS,
    MissingReference,
    _checked,
    pycuda_sources,
)

# the libraries tensorrt.so links against and the entry points it imports from them (nm -D --undefined-only)
TENSORRT_LIBRARIES = ("nvinfer", "nvinfer_plugin", "nvonnxparser")
TENSORRT_ENTRY_POINTS = ("createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
                         "createNvOnnxParserRefitter_INTERNAL", "createNvOnnxParser_INTERNAL",
                         "getBuilderPluginRegistry", "getNvOnnxParserVersion", "getPluginRegistry",
                         "initLibNvInferPlugins")


@dataclass(frozen=True)
class Param:
    name: str | None  # None: the real one gives no name (positional-only, any name in a fake)
    optional: bool  # has a default
    kind: str = "positional_or_keyword"  # or positional_only, keyword_only, var_positional, var_keyword

    def __str__(self):
        text = {"var_positional": "*", "var_keyword": "**"}.get(self.kind, "") + (self.name or "_")
        return text + ("=..." if self.optional else "")


Signature = tuple[Param, ...]


@dataclass(frozen=True)
class Member:
    kind: str  # function (module level), method, static, property, constructor, none (a class nobody constructs),
    #            value (an enum member)
    overloads: tuple[Signature, ...] = ()  # empty: the real package does not state it
    returns: str | None = None  # the class of the package a call returns, where the package states it


def render(signature: Signature) -> str:
    parts, marked = [], False
    for i, p in enumerate(signature):
        parts.append(str(p))
        nxt = signature[i + 1] if i + 1 < len(signature) else None
        if p.kind == "positional_only" and (nxt is None or nxt.kind != "positional_only"):
            parts.append("/")
        if not marked and nxt is not None and nxt.kind == "keyword_only" and p.kind != "var_positional":
            parts.append("*")
            marked = True
    return "(" + ", ".join(parts) + ")"


# ------------------------------------------------------------------------------------------- comparing
def fake_signature(function, drop_self: bool) -> Signature:
    """A fake's parameters as Params (the bound `self` dropped for methods and constructors)."""
    params = list(inspect.signature(function).parameters.values())
    if drop_self:
        params = params[1:]
    return tuple(Param(p.name, p.default is not inspect.Parameter.empty, p.kind.name.lower()) for p in params)


def _same(fake: Param, real: Param) -> bool:
    if fake.kind != real.kind or fake.optional != real.optional:
        return False
    return real.name is None or fake.name == real.name


def mismatch(fake: Signature, real: Member) -> str | None:
    """None when `fake` takes exactly what one of the real overloads takes; else what differs."""
    if not real.overloads:
        return None
    for overload in real.overloads:
        if len(fake) == len(overload) and all(_same(f, r) for f, r in zip(fake, overload)):
            return None
    return f"fake {render(fake)}, real " + " or ".join(render(o) for o in real.overloads)


# -------------------------------------------------------------------------------------- python source
def _python_functions(source: str) -> dict[str, Member]:
    """Module-level functions of a Python source file, as Members."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            positional = a.posonlyargs + a.args
            first_default = len(positional) - len(a.defaults)
            params = [Param(p.arg, i >= first_default,
                            "positional_only" if i < len(a.posonlyargs) else "positional_or_keyword")
                      for i, p in enumerate(positional)]
            if a.vararg:
                params.append(Param(a.vararg.arg, False, "var_positional"))
            params += [Param(p.arg, d is not None, "keyword_only") for p, d in zip(a.kwonlyargs, a.kw_defaults)]
            if a.kwarg:
                params.append(Param(a.kwarg.arg, False, "var_keyword"))
            found[node.name] = Member("function", (tuple(params),))
    return found


# ------------------------------------------------------------------------------------------- tensorrt
def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split at `sep` outside brackets and quotes (types like dict[str, int], defaults like <Severity.WARNING: 2>)."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>" and not (ch == ">" and text[i - 1] == "-"):
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _pybind_params(inside: str, drop_self: bool) -> Signature:
    params, kind = [], "positional_or_keyword"
    raw = _split_top(inside)
    if drop_self and raw and raw[0].split(":")[0].strip() == "self":
        raw = raw[1:]
    before_slash = []
    for text in raw:
        if text == "/":  # py::pos_only: what came before is positional-only
            before_slash = [Param(p.name, p.optional, "positional_only") for p in params]
            params = []
            continue
        if text == "*":  # py::kw_only
            kind = "keyword_only"
            continue
        name = text.split(":", 1)[0].strip()
        optional = len(_split_top(text, "=")) > 1
        if name.startswith("**"):
            params.append(Param(name[2:], False, "var_keyword"))
        elif name.startswith("*"):
            params.append(Param(name[1:], False, "var_positional"))
            kind = "keyword_only"
        elif re.fullmatch(r"arg\d+", name):  # pybind11's name for an argument given no py::arg
            params.append(Param(None, optional, "positional_only"))
        else:
            params.append(Param(name, optional, kind))
    return tuple(before_slash + params)


def _pybind_returns(name: str, doc: str | None) -> str | None:
    """The tensorrt class a pybind11 function returns (`-> tensorrt.ICudaEngine`), when every overload agrees."""
    found = {m.group(1) for m in re.finditer(rf"(?:^|\n)(?:\d+\. )?{re.escape(name)}\(.*\) -> tensorrt\.(\w+)",
                                             doc or "")}
    return found.pop() if len(found) == 1 else None


def _pybind_overloads(name: str, doc: str | None, drop_self: bool) -> tuple[Signature, ...]:
    """Every `name(...) -> ...` line of a pybind11 docstring (one, or one per numbered overload)."""
    found = []
    for line in (doc or "").splitlines():
        match = re.match(rf"(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", line)
        if match and not match.group(1).startswith("*args, **kwargs"):
            found.append(_pybind_params(match.group(1), drop_self))
    return tuple(found)


# Runs in the subprocess: load the stand-in libraries, import the real tensorrt.so, print every callable's
# kind and docstring as JSON.
_DUMP = r"""
import ctypes, importlib.machinery, importlib.util, inspect, json, sys
so, *stubs = sys.argv[1:]
for stub in stubs:
    ctypes.CDLL(stub, mode=ctypes.RTLD_GLOBAL)
loader = importlib.machinery.ExtensionFileLoader("tensorrt", so)
module = importlib.util.module_from_spec(importlib.util.spec_from_loader("tensorrt", loader))
loader.exec_module(module)

def kind(value):
    name = type(value).__name__
    if isinstance(value, staticmethod):
        return "static", value.__func__.__doc__
    if isinstance(value, property):
        return "property", None
    if name == "instancemethod":
        return "method", value.__func__.__doc__
    if name == "builtin_function_or_method":
        return "function", value.__doc__
    return None, None

out = {}
def walk(prefix, namespace, depth=0):
    for name in dir(namespace):  # a class's members with its bases' (Logger's come partly from ILogger)
        value = inspect.getattr_static(namespace, name)
        if isinstance(value, type) and value.__module__ == "tensorrt" and name != "__class__":
            init = inspect.getattr_static(value, "__init__")
            out[prefix + name] = ["constructor", init.__func__.__doc__] if type(init).__name__ == "instancemethod" \
                else ["none", None]
            if depth < 3:
                walk(prefix + name + ".", value, depth + 1)
        elif isinstance(namespace, type) and type(value) is namespace:  # a member of a pybind11 enum
            out[prefix + name] = ["value", None]
        elif not name.startswith("__") or name == "__call__":
            k, doc = kind(value)
            if k:
                out[prefix + name] = [k, doc]
            elif isinstance(namespace, type) and not name.startswith("_"):  # a class constant (Logger.WARNING)
                out[prefix + name] = ["value", None]
walk("", module)
print(json.dumps(out))
"""


def _python311() -> str:
    if sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        raise MissingReference("reading TensorRT's signatures imports its CPython 3.11 wheel: run the tests with "
                               "Python 3.11 or put python3.11 on PATH")
    return found


def stand_in_libraries(directory: Path, major: str) -> list[str]:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise MissingReference("reading TensorRT's signatures builds stand-ins for libnvinfer with a C compiler: "
                               "install gcc (or set CC)")
    source = directory / "entry_points.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in TENSORRT_ENTRY_POINTS))
    paths = []
    for library in TENSORRT_LIBRARIES:
        soname = f"lib{library}.so.{major}"
        subprocess.run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(directory / soname),
                        str(source)], check=True, capture_output=True)
        paths.append(str(directory / soname))
    return paths


@cache
def tensorrt_api(version: str) -> dict[str, Member]:
    """{"IExecutionContext.execute_async_v3": Member, "Runtime": Member (its constructor), "nptype": ...}."""
    wheel, sha256 = TENSORRT_WHEELS[version]
    with tempfile.TemporaryDirectory(prefix="tensorrt-signatures-") as tmp:
        directory = Path(tmp)
        with zipfile.ZipFile(_checked(CACHE / wheel, sha256)) as z:
            (directory / "tensorrt.so").write_bytes(z.read("tensorrt_bindings/tensorrt.so"))
            init = z.read("tensorrt_bindings/__init__.py").decode()
        stubs = stand_in_libraries(directory, version.split(".")[0])
        done = subprocess.run([_python311(), "-c", _DUMP, str(directory / "tensorrt.so"), *stubs],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise MissingReference(f"importing tensorrt.so of {wheel} with stand-in libraries failed: "
                                   f"{done.stderr[-2000:]}")
    api = _python_functions(init)
    for dotted, (kind, doc) in json.loads(done.stdout).items():
        name = "__init__" if kind == "constructor" else dotted.rsplit(".", 1)[-1]
        api[dotted] = Member(kind, _pybind_overloads(name, doc, drop_self=kind in ("method", "constructor")),
                             returns=dotted if kind in ("constructor", "none") else _pybind_returns(name, doc))
    return api


# --------------------------------------------------------------------------------------------- pycuda
def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at text[start]."""
    pairs = {"(": ")", "<": ">"}
    opening, closing, depth, quote = text[start], pairs[text[start]], 0, None
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            quote = None if ch == quote and text[i - 1] != "\\" else quote
        elif ch == '"':
            quote = ch
        elif ch == opening:
            depth += 1
        elif ch == closing:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {opening} at {start}")


def _calls(chain: str) -> list[tuple[str, str]]:
    """[(method, argument text)] of a boost.python chain `.def(...).staticmethod(...)...` at its top level."""
    calls, i = [], 0
    while True:
        match = re.compile(r"\.\s*(\w+)\s*\(").search(chain, i)
        if not match:
            return calls
        end = _balanced(chain, match.end() - 1)
        calls.append((match.group(1), chain[match.end():end - 1]))
        i = end


def _keywords(spec: str) -> list[tuple[str, bool]]:
    """[(name, has default)] of the py::arg / py::args in a declaration's keyword part, in order."""
    found = []
    for match in re.finditer(r"py::args?\s*\(([^()]*)\)(\s*=)?", spec):
        names = re.findall(r'"(\w+)"', match.group(1))
        found += [(n, bool(match.group(2)) and i == len(names) - 1) for i, n in enumerate(names)]
    return found


# `type name(params) {` / `type cls::name(params) const {`: a definition (params may hold one level of parentheses)
_CPP_DEFINITION = re.compile(r"[\w>&*]\s+[&*]?(?:\w+::)*(\w+)\s*\(([^;{}()]*(?:\([^;{}()]*\)[^;{}()]*)*)\)"
                             r"\s*(?:const\s*)?\{")


def _cpp_arities(sources: str) -> dict[str, set[int]]:
    """{function name: {parameter counts of its definitions}} in C++ source (declarations with a body)."""
    arities: dict[str, set[int]] = {}
    for match in _CPP_DEFINITION.finditer(sources):
        params = match.group(2).strip()
        count = 0 if params in ("", "void") else len(_split_top(params))
        arities.setdefault(match.group(1), set()).add(count)
    return arities


def _pycuda_member(kind: str, target: str, spec: str, arities: dict[str, set[int]]) -> Member:
    """A boost.python def: its keyword part `spec` names trailing arguments; the rest are positional-only."""
    keywords = _keywords(spec)
    if keywords and keywords[0][0] == "self":
        keywords = keywords[1:]
    function = re.findall(r"(\w+)\s*\)*\s*$", target.split(",")[0])
    counts = arities.get(function[0], set()) if function else set()
    self_in_cpp = kind == "method" and "::" not in target  # a free function bound as a method takes self first
    if len(counts) == 1:
        total = next(iter(counts)) - self_in_cpp
    elif keywords:
        total = len(keywords)
    else:
        return Member(kind)  # unstated
    unnamed = total - len(keywords)
    if unnamed < 0:
        return Member(kind)
    params = [Param(None, False, "positional_only") for _ in range(unnamed)]
    params += [Param(name, default) for name, default in keywords]
    return Member(kind, (tuple(params),))


def _constructor(init: str) -> Signature:
    """`py::init<unsigned int>(py::arg("flags")=0)` / `py::init<py::optional<unsigned int> >(py::arg("flags"))`."""
    types = init[init.index("<") + 1:_balanced(init, init.index("<")) - 1]
    optional_from = len(_split_top(types.split("py::optional<")[0])) if "py::optional<" in types else None
    count = len(_split_top(types.replace("py::optional<", "").rstrip(">")))
    keywords = _keywords(init[_balanced(init, init.index("<")):])
    params = []
    for i in range(count):
        offset = i - (count - len(keywords))
        name, default = keywords[offset] if offset >= 0 else (None, False)
        optional = default or (optional_from is not None and i >= optional_from)
        params.append(Param(name, optional) if name else Param(None, optional, "positional_only"))
    return tuple(params)


def _cpp_classes(wrapper: str) -> dict[str, str]:
    """{C++ class: the Python class pycuda wraps it as}, from each `typedef X cl; py::class_<cl ...>("Name"`."""
    found = {}
    for match in re.finditer(r"typedef\s+([\w:]+)\s+cl\s*;\s*py::class_\s*<[^\"]*?\"(\w+)\"", wrapper):
        found[match.group(1)] = match.group(2)
    return found


def _cpp_returns(sources: str, classes: dict[str, str]) -> dict[str, str]:
    """{C++ function name: the Python class it returns} where every definition of that name returns the same
    wrapped class (`boost::shared_ptr<context> retain_primary_context()` -> Context)."""
    seen: dict[str, set] = {}
    pattern = r"(?:^|[;{}\n])\s*(?:(?:static|inline|virtual)\s+)*((?:boost::)?(?:shared_ptr<\s*(\w+)\s*>|(\w+)))" \
              r"\s*[&*]?\s+(?:\w+::)?(\w+)\s*\("
    for match in re.finditer(pattern, sources):
        cpp = match.group(2) or match.group(3)
        seen.setdefault(match.group(4), set()).add(classes.get(cpp))
    return {name: found.pop() for name, found in seen.items() if len(found) == 1 and None not in found}


@cache
def pycuda_api() -> dict[str, Member]:
    """{"Event.record": Member, "Stream": Member (its constructor), "memcpy_htod_async": Member, ...}."""
    sources = pycuda_sources()
    wrapper, cpp, driver = (sources[p] for p in ("src/wrapper/wrap_cudadrv.cpp", "src/cpp/cuda.hpp",
                                                 "pycuda/driver.py"))
    wrapper = re.sub(r"^\s*#.*$", "", wrapper, flags=re.M)  # every #if branch counts (the newest CUDA)
    wrapper = re.sub(r"//[^\n]*", "", wrapper)
    arities = _cpp_arities(cpp + wrapper)
    returns = _cpp_returns(cpp + wrapper, _cpp_classes(wrapper))
    api = _python_functions(driver)
    # classes: py::class_<...>("Name", init or py::no_init) followed by its chain up to the `;`
    for match in re.finditer(r"py::class_\s*<", wrapper):
        args_start = _balanced(wrapper, match.end() - 1)
        head = re.match(r'\s*\(\s*"(\w+)"\s*,?', wrapper[args_start:])
        if not head:
            continue
        cls = head.group(1)
        head_end = _balanced(wrapper, args_start + wrapper[args_start:].index("("))
        init = wrapper[args_start:head_end]
        chain = wrapper[head_end:wrapper.index(";", head_end)]
        constructors = [_constructor(init[init.index("py::init"):])] if "py::init" in init else []
        if "py::no_init" not in init and not constructors:
            constructors = [()]  # boost.python's default constructor
        for method, args in _calls(chain):
            parts = _split_top(args)
            if method == "def" and parts and parts[0] == '"__init__"':
                constructor = _pycuda_member("function", parts[1].replace("py::make_constructor(", ""),
                                             ",".join(parts[2:]), arities)
                constructors += constructor.overloads
            elif method == "def" and parts and parts[0].startswith('"'):
                member = _pycuda_member("method", parts[1], ",".join(parts[2:]), arities)
                target = re.findall(r"(\w+)\s*\)*\s*$", parts[1].split(",")[0])
                api[f"{cls}.{parts[0][1:-1]}"] = replace(member, returns=returns.get(target[0]) if target else None)
            elif method in ("DEF_SIMPLE_METHOD", "DEF_SIMPLE_METHOD_WITH_ARGS"):
                api[f"{cls}.{parts[0]}"] = _pycuda_member("method", f"&cl::{parts[0]}",
                                                          "py::args" + "".join(parts[1:]), arities)
            elif method == "staticmethod":
                static = api.get(f"{cls}.{parts[0][1:-1]}", Member("method"))
                api[f"{cls}.{parts[0][1:-1]}"] = Member("static", static.overloads)
            elif method in ("add_property", "def_readonly", "def_readwrite", "DEF_SIMPLE_RO_MEMBER",
                            "DEF_SIMPLE_RW_MEMBER"):
                api[f"{cls}.{parts[0].strip(chr(34))}"] = Member("property")
        api[cls] = Member("constructor", tuple(constructors), returns=cls) if constructors else \
            Member("none", returns=cls)
    # module-level functions
    for match in re.finditer(r"(?:py::def|DEF_SIMPLE_FUNCTION(?:_WITH_ARGS)?)\s*\(", wrapper):
        end = _balanced(wrapper, match.end() - 1)
        parts = _split_top(wrapper[match.end():end - 1])
        if match.group(0).startswith("py::def"):
            api[parts[0].strip('"')] = _pycuda_member("function", parts[1], ",".join(parts[2:]), arities)
        else:
            api[parts[0]] = _pycuda_member("function", parts[0], "py::args" + "".join(parts[1:]), arities)
    return api


if __name__ == "__main__":
    package, *rest = sys.argv[1:]
    api = tensorrt_api(rest.pop(0)) if package == "tensorrt" else pycuda_api()
    for dotted in rest or sorted(api):
        member = api.get(dotted)
        shown = " | ".join(render(o) for o in member.overloads) if member and member.overloads else "unstated"
        print(f"{dotted}: {member.kind if member else 'absent'} {shown}")
