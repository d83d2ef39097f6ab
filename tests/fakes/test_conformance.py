"""The fake GPU is no richer than the real packages, and the project calls nothing they lack.

Read against the published files of TensorRT 10.3 and 11.4 and pycuda 2026.1 (tests/fakes/reference_packages.py;
make test downloads them first). Methods the project calls on TensorRT/pycuda objects (engine.get_tensor_name,
stream.synchronize, ...) are covered in two steps: the suite runs that code against the fakes, so the fakes must
offer them with the real call shapes, and this test holds every name the fakes offer to the real packages, and
every fake function, method and constructor to the real one's parameters (tests/fakes/reference_signatures.py).
"""

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

from tests.fakes import gpu
from tests.fakes.reference_packages import TENSORRT_VERSIONS, pycuda_names, tensorrt_names
from tests.fakes.reference_signatures import Member, fake_signature, mismatch, pycuda_api, tensorrt_api

ROOT = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("runtime", "export", "benchmarks", "train", "sim", "pipeline", "plotting")

# every class of tests/fakes/gpu.py and the package it stands in for; None: the fake's own machinery
FAKE_CLASSES = {
    "FakeTensorRT": "tensorrt", "FakeEngine": "tensorrt", "FakeContext": "tensorrt", "_Runtime": "tensorrt",
    "_HostMemory": "tensorrt", "_TimingCache": "tensorrt", "_Profile": "tensorrt", "_Config": "tensorrt",
    "_Network": "tensorrt", "_Parser": "tensorrt", "_Builder": "tensorrt",
    "Stream": "pycuda", "Event": "pycuda", "_Context": "pycuda", "Device": "pycuda", "DeviceAllocation": "pycuda",
    "LogicError": "pycuda",
    "_Machine": None, "MACHINE": None, "_Driver": None, "_Enum": None,
}


def public_members(cls) -> set[str]:
    """What the fake class offers: its own public attributes (methods, properties, class values)."""
    own = set()
    for klass in cls.__mro__:
        if klass.__module__ == gpu.__name__:
            own |= {n for n in vars(klass) if not n.startswith("_")}
    return own


def fake_classes() -> dict:
    return {n: c for n, c in inspect.getmembers(gpu, inspect.isclass) if c.__module__ == gpu.__name__}


def test_every_class_of_the_fake_gpu_says_which_package_it_stands_in_for():
    unclassified = set(fake_classes()) - set(FAKE_CLASSES)
    assert not unclassified, f"classes in tests/fakes/gpu.py not classified in FAKE_CLASSES: {unclassified}"


def offered_names() -> dict[str, set[tuple[str, str]]]:
    """{package: {(where, name)}} for everything the fakes offer."""
    offered: dict[str, set] = {"tensorrt": set(), "pycuda": set()}
    for name, cls in fake_classes().items():
        package = FAKE_CLASSES.get(name)
        if package:
            offered[package] |= {(name, member) for member in public_members(cls)}
    # the module namespaces themselves: tensorrt.X and its enums' members, pycuda.driver.X
    trt = gpu.FakeTensorRT
    offered["tensorrt"].add(("tensorrt", "__version__"))
    for name in public_members(trt):
        value = getattr(trt, name)
        if isinstance(value, gpu._Enum):
            offered["tensorrt"] |= {(f"tensorrt.{name}", member) for member in vars(value)}
        if isinstance(value, type):
            offered["tensorrt"] |= {(f"tensorrt.{name}", m) for m in vars(value) if not m.startswith("_")}
    offered["pycuda"] |= {("pycuda.driver", name) for name in vars(gpu.make_pycuda_driver())}
    return offered


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_every_name_the_fake_tensorrt_offers_exists_in_the_real_one(version):
    real = tensorrt_names(version)
    missing = sorted(f"{where}.{name}" for where, name in offered_names()["tensorrt"] if name not in real)
    assert not missing, f"the fake tensorrt offers what {real.label} does not define: {missing}"


def test_every_name_the_fake_pycuda_offers_exists_in_the_real_one():
    real = pycuda_names()
    missing = sorted(f"{where}.{name}" for where, name in offered_names()["pycuda"] if name not in real)
    assert not missing, f"the fake pycuda offers what {real.label} does not define: {missing}"


GPU_MODULES = {"tensorrt": "tensorrt", "pycuda": "pycuda"}
INJECTED = {"trt": "tensorrt", "cuda": "pycuda"}  # parameters / backend attributes that hold the modules


def _bindings(scope) -> dict[str, str]:
    """Names bound to the GPU modules in one function (or module): imports, `trt`/`cuda` parameters, and
    `trt, cuda = self._trt, self._cuda`."""
    names = {}
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        names |= {a.arg: INJECTED[a.arg] for a in scope.args.args + scope.args.kwonlyargs if a.arg in INJECTED}
    for node in ast.walk(scope):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in GPU_MODULES:
                    names[a.asname or top] = GPU_MODULES[top]
        elif isinstance(node, ast.Assign):
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for target, value in zip(targets, values):
                if (isinstance(target, ast.Name) and isinstance(value, ast.Attribute)
                        and isinstance(value.value, ast.Name) and value.value.id == "self"
                        and value.attr.lstrip("_") in INJECTED):
                    names[target.id] = INJECTED[value.attr.lstrip("_")]
    return names


def used_names() -> dict[str, set[tuple[str, str]]]:
    """{package: {(file:line, name)}}: every attribute read through tensorrt / pycuda in the project's source."""
    used: dict[str, set] = {"tensorrt": set(), "pycuda": set()}
    for package in SOURCE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if "tensorrt" not in text and "pycuda" not in text:
                continue
            tree = ast.parse(text)
            for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
                bound = _bindings(scope)
                for node in ast.walk(scope):
                    if not isinstance(node, ast.Attribute):
                        continue
                    chain, root = [node.attr], node.value
                    while isinstance(root, ast.Attribute):
                        chain.append(root.attr)
                        root = root.value
                    base = root.id if isinstance(root, ast.Name) else None
                    if base == "self" and chain[-1].lstrip("_") in INJECTED:  # self._trt.X, self._cuda.X
                        package_of = INJECTED[chain.pop().lstrip("_")]
                    elif base in bound:
                        package_of = bound[base]
                    else:
                        continue
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    used[package_of] |= {(where, name) for name in chain if name != "driver"}
    return used


def test_the_source_reads_through_the_gpu_modules_only_what_they_define():
    used = used_names()
    assert used["tensorrt"] and used["pycuda"]  # the scan sees the backend and the builder
    missing = [f"{where} {name} (not in {tensorrt_names(v).label})" for v in TENSORRT_VERSIONS
               for where, name in sorted(used["tensorrt"]) if name not in tensorrt_names(v)]
    missing += [f"{where} {name} (not in {pycuda_names().label})" for where, name in sorted(used["pycuda"])
                if name not in pycuda_names()]
    assert not missing, missing


def test_the_reference_tells_removed_names_from_present_ones():
    """The check can fail: what 11.x removed and what pycuda never had are absent; what both have is present."""
    old, new = tensorrt_names("10.3.0"), tensorrt_names("11.4.0.106")
    assert "FP16" in old and "FP16" not in new and "EXPLICIT_BATCH" in old and "EXPLICIT_BATCH" not in new
    assert all(n in old and n in new for n in ("STRONGLY_TYPED", "execute_async_v3", "Runtime", "nptype"))
    cuda = pycuda_names()
    assert all(n not in cuda for n in ("begin_capture", "end_capture", "instantiate", "GraphExec"))
    assert all(n in cuda for n in ("Stream", "handle", "retain_primary_context", "pagelocked_empty", "time_since"))


FORBIDDEN = ("BuilderFlag", "int8_calibrator", "IInt8", "EXPLICIT_BATCH", "begin_capture", "end_capture",
             "cuda_graph", "--cuda-graph")


def test_no_weakly_typed_builds_calibrators_or_cuda_graphs_anywhere_in_the_source():
    """TensorRT 11 removed the precision builder flags, trtexec --fp16 and the int8 calibrators; pycuda has no
    stream capture. None of it may come back in code, scripts or the docs' commands. (`export.to_onnx --fp16`,
    the ONNX Runtime variant, is not TensorRT's: --fp16 is refused only next to trtexec and in jetson/'s scripts.)"""
    hits = []
    files = [p for package in SOURCE_PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += [*(ROOT / "jetson").iterdir(), ROOT / "README.md", ROOT / "Makefile", *(ROOT / "docs").glob("*.md")]
    for path in files:
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            words = [w for w in FORBIDDEN if w in line]
            if "--fp16" in line and ((path.parent.name == "jetson" and path.suffix != ".md") or "trtexec" in line):
                words.append("--fp16")
            hits += [f"{path.relative_to(ROOT)}:{number}: {word}" for word in words]
    assert not hits, hits


# ------------------------------------------------------------------------------------------ call shapes
# the real class each fake class stands in for (the fake's own machinery and exceptions have none)
REAL_CLASSES = {
    "FakeEngine": "ICudaEngine", "FakeContext": "IExecutionContext", "_Runtime": "Runtime",
    "_HostMemory": "IHostMemory", "_TimingCache": "ITimingCache", "_Profile": "IOptimizationProfile",
    "_Config": "IBuilderConfig", "_Network": "INetworkDefinition", "_Parser": "OnnxParser", "_Builder": "Builder",
    "Stream": "Stream", "Event": "Event", "_Context": "Context", "Device": "Device",
    "DeviceAllocation": "DeviceAllocation",
}


def _fake_kind(value) -> str | None:
    if isinstance(value, staticmethod):
        return "static"
    if isinstance(value, property):
        return "property"
    if inspect.isfunction(value):
        return "method"
    return None  # values: enum members, constants, nested classes (checked as classes)


def member_problems(where: str, members: dict, real_prefix: str, api: dict[str, Member]) -> list[str]:
    """What differs between the fake members {name: raw attribute} and the real ones named real_prefix + name."""
    problems = []
    for name, value in sorted(members.items()):
        kind = _fake_kind(value)
        if kind is None:
            continue
        real = api.get(real_prefix + name)
        label = f"{where}.{name}"
        if real is None:
            problems.append(f"{label}: the real {real_prefix}{name} does not exist")
            continue
        real_kind = "static" if real.kind == "function" else real.kind
        if kind != real_kind:
            problems.append(f"{label}: the fake's is a {kind}, the real one a {real.kind}")
        elif kind != "property":
            function = value.__func__ if kind == "static" else value
            found = mismatch(fake_signature(function, drop_self=kind == "method"), real)
            if found:
                problems.append(f"{label}: {found}")
    return problems


def constructor_problems(where: str, fake, real: Member | None) -> list[str]:
    """A class (or function) the fake module offers against the real constructor (or function)."""
    if real is None:
        return [f"{where}: the real one does not exist"]
    if real.kind == "none":  # the real class has no constructor: the fake's must refuse, as it does
        try:
            fake()
        except TypeError:
            return []
        return [f"{where}: the real class has no constructor, the fake's accepts ()"]
    if isinstance(fake, type):
        found = mismatch(fake_signature(fake.__init__, drop_self=True), real) if "__init__" in vars(fake) \
            else mismatch((), real)
    else:
        found = mismatch(fake_signature(fake, drop_self=False), real)
    return [f"{where}: {found}"] if found else []


def class_problems(cls, real_name: str, api: dict[str, Member]) -> list[str]:
    members = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ == cls.__module__:
            members.update({n: v for n, v in vars(klass).items() if not n.startswith("_")})
    return member_problems(cls.__name__, members, f"{real_name}.", api)


def tensorrt_problems(fake_module, classes: dict[str, str], api: dict[str, Member]) -> list[str]:
    """Every fake TensorRT class's members, and the module's own functions and constructors."""
    problems = []
    for name, real_name in classes.items():
        problems += class_problems(getattr(gpu, name), real_name, api)
    for name, value in vars(fake_module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, type):  # Runtime, Builder, OnnxParser, Logger: what users construct
            problems += constructor_problems(f"tensorrt.{name}", value, api.get(name))
            if not any(getattr(gpu, c, None) is value for c in classes):
                problems += member_problems(f"tensorrt.{name}", {n: v for n, v in vars(value).items()
                                                                 if not n.startswith("_")}, f"{name}.", api)
    problems += member_problems("tensorrt", {n: v for n, v in vars(fake_module).items() if not n.startswith("_")},
                                "", api)
    return problems


def pycuda_problems(driver, classes: dict[str, str], api: dict[str, Member]) -> list[str]:
    problems = []
    for name, real_name in classes.items():
        problems += class_problems(getattr(gpu, name), real_name, api)
    for name, value in vars(driver).items():
        if isinstance(value, type) and issubclass(value, Exception):
            continue
        if isinstance(value, type) or callable(value):
            problems += constructor_problems(f"pycuda.driver.{name}", value, api.get(name))
    return problems


TENSORRT_CLASSES = {k: v for k, v in REAL_CLASSES.items() if FAKE_CLASSES[k] == "tensorrt"}
PYCUDA_CLASSES = {k: v for k, v in REAL_CLASSES.items() if FAKE_CLASSES[k] == "pycuda"}


def test_every_fake_class_names_the_real_class_it_stands_in_for():
    assert set(REAL_CLASSES) == {n for n, p in FAKE_CLASSES.items() if p and n not in ("FakeTensorRT", "LogicError")}


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_the_fake_tensorrt_takes_exactly_the_arguments_the_real_one_takes(version):
    problems = tensorrt_problems(gpu.FakeTensorRT, TENSORRT_CLASSES, tensorrt_api(version))
    assert not problems, f"the fake tensorrt's call shapes differ from tensorrt {version}'s: {problems}"


def test_the_fake_pycuda_takes_exactly_the_arguments_the_real_one_takes():
    problems = pycuda_problems(gpu.make_pycuda_driver(), PYCUDA_CLASSES, pycuda_api())
    assert not problems, f"the fake pycuda's call shapes differ from pycuda 2026.1's: {problems}"


def test_the_real_signatures_are_read_as_published():
    """The readers see what the packages' own sources and docstrings say (so the comparisons above can fail)."""
    for version in TENSORRT_VERSIONS:
        api = tensorrt_api(version)
        assert str(api["IExecutionContext.execute_async_v3"].overloads) == str(((_p("stream_handle"),),))
        assert [str(p) for p in api["IOptimizationProfile.set_shape"].overloads[0]] == ["input", "min", "opt", "max"]
        assert [str(p) for p in api["Builder.create_network"].overloads[0]] == ["flags=..."]
        assert api["ICudaEngine"].kind == "none" and api["ICudaEngine.num_io_tensors"].kind == "property"
        assert api["nptype"].kind == "function"
    cuda = pycuda_api()
    assert [str(p) for p in cuda["memcpy_htod_async"].overloads[0]] == ["dest", "src", "stream=..."]
    assert [str(p) for p in cuda["pagelocked_empty"].overloads[0]] == ["shape", "dtype", "order=...", "mem_flags=..."]
    assert cuda["Event.time_since"].overloads == (((_p(None, kind="positional_only")),),)
    assert cuda["Context.pop"].kind == "static" and cuda["Context.pop"].overloads == ((),)
    assert cuda["Context"].kind == "none" and [str(p) for p in cuda["Stream"].overloads[0]] == ["flags=..."]
    assert cuda["Stream.synchronize"].overloads == ((),) and cuda["mem_get_info"].overloads == ((),)


def _p(name, optional=False, kind="positional_or_keyword"):
    from tests.fakes.reference_signatures import Param

    return Param(name, optional, kind)


def test_a_fake_with_wrong_call_shapes_is_reported():
    """A deliberately wrong fake: each kind of difference is named, and a right member is not."""

    class BadContext:
        def execute_async_v3(self, stream_handle, extra):  # one argument too many
            return True

        def set_input_shape(self, name):  # one too few
            return True

        def set_tensor_address(self, tensor, memory):  # the real first argument is `name`
            return True

        def get_tensor_shape(self, name, *args):  # accepts what the real one rejects
            return ()

        def infer_shapes(self):  # right
            return []

    class BadEngine:
        def num_io_tensors(self):  # a property in the real one
            return 0

    class BadEvent:
        def time_since(self, other):  # the real argument is positional-only (boost.python gives it no name)
            return 0.0

        def record(self, stream):  # the real one has a default
            return self

    api = tensorrt_api(TENSORRT_VERSIONS[-1])
    problems = class_problems(BadContext, "IExecutionContext", api) + class_problems(BadEngine, "ICudaEngine", api)
    problems += class_problems(BadEvent, "Event", pycuda_api())
    reported = {p.split(":")[0] for p in problems}
    assert reported == {"BadContext.execute_async_v3", "BadContext.set_input_shape", "BadContext.set_tensor_address",
                        "BadContext.get_tensor_shape", "BadEngine.num_io_tensors", "BadEvent.time_since",
                        "BadEvent.record"}, problems
    # a fake module function and constructor: pycuda's memcpy takes `dest`; Context has no constructor
    bad_driver = type("Driver", (), {})()
    vars(bad_driver).update(memcpy_htod_async=lambda dst, src, stream=None: None, Context=type("Context", (), {}))
    assert [p.split(":")[0] for p in pycuda_problems(bad_driver, {}, pycuda_api())] == \
        ["pycuda.driver.memcpy_htod_async", "pycuda.driver.Context"]


# ------------------------------------------------------------------------------ the project's own calls
def accepts(signature, positional: int, keywords: list[str]) -> bool:
    """Would a callable with these real parameters accept a call with `positional` arguments and these keywords?"""
    slots = [p for p in signature if p.kind in ("positional_only", "positional_or_keyword")]
    if positional > len(slots) and not any(p.kind == "var_positional" for p in signature):
        return False
    filled = {id(p) for p in slots[:positional]}
    for word in keywords:
        target = [p for p in signature if p.name == word and p.kind in ("positional_or_keyword", "keyword_only")]
        if not target:
            if not any(p.kind == "var_keyword" for p in signature):
                return False
            continue
        if id(target[0]) in filled:
            return False
        filled.add(id(target[0]))
    return all(p.optional or id(p) in filled for p in signature if p.kind not in ("var_positional", "var_keyword"))


BUILTIN_METHODS = {n for t in (dict, list, set, str, bytes, tuple) for n in dir(t)}  # d.pop(k) is not Context.pop


def call_problems(tree: ast.AST, where: str, apis: dict[str, dict[str, Member]], classes: dict[str, str]) -> list[str]:
    """Calls in `tree` that no real overload accepts: module calls (trt.Runtime(logger), cuda.memcpy_htod_async(...))
    by their binding, method calls (ctx.execute_async_v3(h)) by the name of a method of the classes the fakes
    stand in for (every class that has it must accept the call's shape; names of built-in types' methods and of
    the module's own functions are not checked)."""
    problems = []
    # the module's own methods of the same name (the backend's _Engine.set_shape) are not TensorRT's
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    bound = _bindings(tree)
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        bound |= _bindings(scope)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        positional, keywords = len(node.args), [k.arg for k in node.keywords]
        func = node.func
        base = func.value
        if isinstance(base, ast.Attribute) and base.attr == "driver":  # pycuda.driver.X
            base = base.value
        package = None
        if isinstance(base, ast.Name) and base.id in bound:
            package, dotted = bound[base.id], [func.attr]
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "self" \
                and base.attr.lstrip("_") in INJECTED:
            package, dotted = INJECTED[base.attr.lstrip("_")], [func.attr]
        elif (isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in bound):
            package, dotted = bound[base.value.id], [f"{base.attr}.{func.attr}"]  # trt.Logger.X(...)
        if package:
            for label, api in apis.items():
                if label.startswith(package) and dotted[0] in api and api[dotted[0]].overloads and not any(
                        accepts(o, positional, keywords) for o in api[dotted[0]].overloads):
                    problems.append(f"{where}:{node.lineno} {dotted[0]}: no overload of {label}'s takes "
                                    f"{positional} positional + {keywords}")
            continue
        if func.attr in BUILTIN_METHODS or func.attr in own:
            continue
        for label, api in apis.items():
            for real_class in classes.get(label.split()[0], ()):
                member = api.get(f"{real_class}.{func.attr}")
                if member and member.overloads and not any(accepts(o, positional, keywords)
                                                           for o in member.overloads):
                    problems.append(f"{where}:{node.lineno} .{func.attr}: {label}'s {real_class}.{func.attr} does "
                                    f"not take {positional} positional + {keywords}")
    return problems


def _apis() -> dict[str, dict[str, Member]]:
    apis = {f"tensorrt {v}": tensorrt_api(v) for v in TENSORRT_VERSIONS}
    apis[f"pycuda {pycuda_names().label.split()[-1]}"] = pycuda_api()
    return apis


CLASSES_BY_PACKAGE = {"tensorrt": [*TENSORRT_CLASSES.values(), "Logger"], "pycuda": list(PYCUDA_CLASSES.values())}


def test_the_source_calls_the_gpu_packages_with_arguments_they_accept():
    problems, checked = [], 0
    for package in SOURCE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if "tensorrt" in text or "pycuda" in text:
                checked += 1
                problems += call_problems(ast.parse(text), str(path.relative_to(ROOT)), _apis(), CLASSES_BY_PACKAGE)
    assert checked >= 3 and not problems, problems


def test_a_wrong_call_in_the_source_is_reported():
    source = '''
import tensorrt as trt
import pycuda.driver as cuda

def build(path, logger):
    builder = trt.Builder(logger, 1)                       # Builder(logger) only
    network = builder.create_network(flag=0)               # the keyword is flags
    config = builder.create_builder_config()
    config.set_timing_cache(cache)                         # ignore_mismatch is required
    cuda.memcpy_htod_async(dst=1, src=2)                   # the keyword is dest
    ok = context.execute_async_v3(stream_handle=3)         # right
    cuda.memcpy_dtoh_async(host, device, stream)           # right
    values.pop(0)                                          # a list's, not Context.pop
    return event.time_since(other=start)                   # positional-only in pycuda
'''
    problems = call_problems(ast.parse(source), "bad.py", _apis(), CLASSES_BY_PACKAGE)
    lines = sorted({int(p.split(":")[1].split()[0]) for p in problems})
    assert lines == [6, 7, 9, 10, 14], problems


# ------------------------------------------------------- instance attributes, enum members, typed chains
def instance_attributes(cls) -> set[str]:
    """Public attributes a fake class (and its fake bases) sets on its instances (`self.handle = ...` in a method):
    names the fake offers that no class-level scan sees."""
    found = set()
    for klass in cls.__mro__:
        if klass.__module__ != cls.__module__ or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AnnAssign, ast.AugAssign)) else []
            for target in targets:
                for sub in ast.walk(target):
                    if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self"
                            and not sub.attr.startswith("_")):
                        found.add(sub.attr)
    return found


def instance_attribute_problems(classes: dict[str, type], real: dict[str, str], api: dict[str, Member]) -> list[str]:
    """Each fake class's instance attributes against the members of the real class it stands in for."""
    return [f"{name}.{attr}: the real {real[name]}.{attr} does not exist" for name, cls in sorted(classes.items())
            for attr in sorted(instance_attributes(cls)) if f"{real[name]}.{attr}" not in api]


def enum_problems(fake_module, api: dict[str, Member]) -> list[str]:
    """Every member of every fake enum is exactly a member of the real enum of that name."""
    problems = []
    for name, value in sorted(vars(fake_module).items()):
        if isinstance(value, gpu._Enum):
            problems += [f"tensorrt.{name}.{member}: the real {name} has no member {member}" for member in
                         sorted(vars(value)) if getattr(api.get(f"{name}.{member}"), "kind", None) != "value"]
    return problems


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_every_attribute_a_fake_sets_on_its_instances_is_a_member_of_the_real_class(version):
    classes = {n: getattr(gpu, n) for n in TENSORRT_CLASSES}
    problems = instance_attribute_problems(classes, TENSORRT_CLASSES, tensorrt_api(version))
    problems += instance_attribute_problems({n: getattr(gpu, n) for n in PYCUDA_CLASSES}, PYCUDA_CLASSES,
                                            pycuda_api())
    assert instance_attributes(gpu.Stream) == {"handle"}  # the scan sees what __init__ sets
    assert not problems, problems


@pytest.mark.parametrize("version", TENSORRT_VERSIONS)
def test_every_enum_member_the_fake_offers_is_exactly_a_member_of_the_real_enum(version):
    assert not enum_problems(gpu.FakeTensorRT, tensorrt_api(version))


def _type_of(expr, env: dict, bound: dict, api: dict[str, Member]) -> str | None:
    """The real class an expression evaluates to, where the real signatures say it: a constructor of the package,
    a method whose declared return type is one of its classes, a name or self.attr assigned one of those."""
    if isinstance(expr, ast.Name):
        return env.get(expr.id)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
        return env.get(f"self.{expr.attr}")
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)):
        return None
    func = expr.func
    base = func.value
    if isinstance(base, ast.Attribute) and base.attr == "driver" and isinstance(base.value, ast.Name):
        base = base.value  # pycuda.driver.X(...)
    if isinstance(base, ast.Name) and base.id in bound:
        member = api.get(func.attr)
        return member.returns if member else None
    owner = _type_of(base, env, bound, api)
    member = api.get(f"{owner}.{func.attr}") if owner else None
    return member.returns if member else None


def typed_attribute_problems(tree: ast.AST, where: str, package: str, api: dict[str, Member], label: str) -> list[str]:
    """Attributes read or called on objects the package returned (`stream = cuda.Stream(); stream.capture_graph()`,
    `engine = runtime.deserialize_cuda_engine(b); engine.X`) and members of its enums (`trt.TensorIOMode.PUT`) that
    the real package's class does not have. Types flow through assignments (names, self.X across a class's methods)
    and into the parameters of the module's own functions and classes at their call sites (`_Engine(trt, cuda,
    runtime, ...)`), flow-insensitively, to a fixpoint."""
    module_bound = {k: v for k, v in _bindings(tree).items() if v == package}
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    owner = {f: c.name for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body
             if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    callees = {f.name: (f, False) for f in functions if f not in owner}
    callees |= {c.name: (f, True) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body
                if isinstance(f, ast.FunctionDef) and f.name == "__init__"}
    seeds: dict = {f: {} for f in functions}  # parameter -> the real class the callers pass
    shared: dict[str, dict] = {}  # class -> {"self.X": real class}

    def environment(function):
        bound = {**module_bound, **{k: v for k, v in _bindings(function).items() if v == package}}
        env = {**shared.get(owner.get(function), {}), **seeds[function]}
        for _ in range(2):
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    kind, target = _type_of(node.value, env, bound, api), node.targets[0]
                    if kind and isinstance(target, ast.Name):
                        env[target.id] = kind
                    elif kind and isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                            and target.value.id == "self" and function in owner:
                        env[f"self.{target.attr}"] = kind
                        shared.setdefault(owner[function], {})[f"self.{target.attr}"] = kind
        return env, bound

    for _ in range(4):
        for function in functions:
            env, bound = environment(function)
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)):
                if call.func.id not in callees:
                    continue
                callee, is_init = callees[call.func.id]
                params = [a.arg for a in callee.args.args][1 if is_init else 0:]
                for param, arg in zip(params, call.args):
                    kind = _type_of(arg, env, bound, api)
                    if kind:
                        seeds[callee][param] = kind
    problems = []
    for function in functions:
        env, bound = environment(function)
        for node in ast.walk(function):
            if not isinstance(node, ast.Attribute) or node.attr.startswith("__"):
                continue
            value = node.value
            if (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id in bound
                    and getattr(api.get(value.attr), "kind", None) in ("constructor", "none")):
                cls = value.attr  # trt.TensorIOMode.INPUT: a class of the package, then its member
            else:
                cls = _type_of(value, env, bound, api)
            if cls and f"{cls}.{node.attr}" not in api:
                problems.append(f"{where}:{node.lineno} {cls}.{node.attr}: not in {label}'s {cls}")
    return sorted(set(problems))


def source_chain_problems(source: str, where: str) -> list[str]:
    tree = ast.parse(source)
    problems = []
    for version in TENSORRT_VERSIONS:
        problems += typed_attribute_problems(tree, where, "tensorrt", tensorrt_api(version), f"tensorrt {version}")
    problems += typed_attribute_problems(tree, where, "pycuda", pycuda_api(), pycuda_names().label)
    return problems


def test_the_source_uses_only_members_the_real_classes_have_on_what_the_packages_return():
    problems, checked = [], 0
    for package in SOURCE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            if "tensorrt" in text or "pycuda" in text:
                checked += 1
                problems += source_chain_problems(text, str(path.relative_to(ROOT)))
    assert checked >= 3 and not problems, problems


def test_a_made_up_instance_method_and_enum_member_are_reported():
    """The bug class the name scan let through: a method a fake adds in __init__ (and the backend calls), and an
    enum member that is only the tail of some string in the binary."""

    class MadeUpStream(gpu.Stream):
        def __init__(self, flags: int = 0):
            super().__init__(flags)
            self.capture_graph = lambda: None  # pycuda's Stream has no graph capture

    made_up = type("FakeTensorRT", (), {"TensorIOMode": gpu._Enum(INPUT="INPUT", OUTPUT="OUTPUT", PUT="PUT")})
    assert instance_attribute_problems({"MadeUpStream": MadeUpStream}, {"MadeUpStream": "Stream"}, pycuda_api()) == \
        ["MadeUpStream.capture_graph: the real Stream.capture_graph does not exist"]
    assert enum_problems(made_up, tensorrt_api(TENSORRT_VERSIONS[-1])) == \
        ["tensorrt.TensorIOMode.PUT: the real TensorIOMode has no member PUT"]
    assert "PUT" in tensorrt_names(TENSORRT_VERSIONS[-1])  # the old check: the tail of some string, so "present"
    source = '''
import pycuda.driver as cuda
import tensorrt as trt

class Backend:
    def __init__(self, logger, blob):
        self._stream = cuda.Stream()
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(blob)

    def run(self):
        self._stream.capture_graph()                                          # made up
        ctx = cuda.Device(0).retain_primary_context()
        ctx.push()                                                            # right
        mode = self._engine.get_tensor_mode("x") == trt.TensorIOMode.PUT      # made up
        context = self._engine.create_execution_context()
        context.execute_async_v3(self._stream.handle)                        # right
        context.enqueue_graph()                                               # made up
        return mode, trt.TensorIOMode.INPUT                                   # right
'''
    problems = source_chain_problems(source, "bad.py")
    assert {p.split(" ")[1].rstrip(":") for p in problems} == {"Stream.capture_graph", "TensorIOMode.PUT",
                                                   "IExecutionContext.enqueue_graph"}, problems
