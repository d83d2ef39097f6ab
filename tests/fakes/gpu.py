"""A fake GPU at the lowest level: `tensorrt` and `pycuda.driver` stand-ins, as strict as the device.

Device memory is a dict of byte arrays keyed by integer addresses; an
"engine" is a JSON file naming the ONNX graph it was "built" from, and
executing it runs that graph with ONNX Runtime on whatever bytes sit at the
bound addresses. So everything above the device (builder configuration,
optimisation profiles, tensor names, addresses, the vision -> language
chain, dynamic shapes, dtype casts, copies) is our real code, checked by
real numbers.

Where the real stack fails, this fails the same way:
- pycuda: a context is current only on the thread that pushed it. A driver
  call (allocation, copy, stream, event) from a thread with no current
  context raises `LogicError(... invalid device context)`, as pycuda does
  for CUDA_ERROR_INVALID_CONTEXT. `Context.pop()` pops the calling thread's
  stack. `cuda.init()` must come first.
- TensorRT reports failure by return value, never by exception:
  `deserialize_cuda_engine` -> None, `create_execution_context` -> None,
  `set_input_shape` / `set_tensor_address` / `execute_async_v3` -> False.
  `fail(call, after=n)` makes a call fail from its (n+1)-th use on.
- A timing cache from another GPU or TensorRT version is refused by
  `set_timing_cache(cache, ignore_mismatch=False)` (it returns False).
- The builder is strongly typed or nothing: a network created without
  `NetworkDefinitionCreationFlag.STRONGLY_TYPED` is refused at build (it
  would build weakly typed on 10.3 and ignore the graph's fp32 islands), and
  there is no `BuilderFlag` at all (its precision flags are gone in 11.x).

No richer than the real packages: every public name the fakes give
`tensorrt` and `pycuda.driver` exists in TensorRT 10.3 and 11.4 and in
pycuda 2026.1, and every fake callable takes exactly the arguments the real
one takes (names, defaults, positional-only where boost.python gives no
name: `time_since(other, /)`) (tests/fakes/test_conformance.py reads the real packages;
what each fake was checked against is in tests/fakes/README.md). What the
tests control or inspect (the GPU's name, recorded builds, injected
failures) lives on `MACHINE`, never on the fake modules.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import types
from pathlib import Path

import numpy as np


class _Machine:
    """What the tests set and read about the fake machine; not part of any fake module."""

    gpu = "Fake Orin"  # the CUDA device name pycuda reports
    int32_ids = False  # TensorRT 8.6 turned int64 inputs into int32
    builds: list = []  # what build_serialized_network was asked to build
    failures: dict = {}  # call name -> uses that still succeed before it starts failing
    calls: dict = {}  # call name -> uses so far


MACHINE = _Machine


class LogicError(RuntimeError):
    """pycuda._driver.LogicError: what pycuda raises for CUDA_ERROR_INVALID_CONTEXT and friends."""


# ---------------------------------------------------------------- pycuda.driver
class _Driver:
    """Process-wide device state: memory, init flag, per-thread context stacks."""

    def __init__(self):
        self.memory: dict[int, np.ndarray] = {}
        self.next_address = itertools.count(0x10000, 0x10000)
        self.next_handle = itertools.count(1)
        self.initialised = False
        self.local = threading.local()
        self.calls: dict[str, int] = {}  # driver calls by name (tests read them)

    def stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def require_context(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        if not self.initialised:
            raise LogicError(f"{call} failed: initialization error (call cuda.init() first)")
        if not self.stack():
            raise LogicError(f"{call} failed: invalid device context "
                             f"(no context is current on thread {threading.current_thread().name!r})")


DRIVER = _Driver()


def _read(address: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = DRIVER.memory[int(address)]
    if n > buf.size:
        raise RuntimeError(f"fake GPU: read of {n} bytes past a {buf.size}-byte allocation")
    return buf[:n].view(dtype).reshape(shape).copy()


def _write(address: int, value: np.ndarray) -> None:
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    buf = DRIVER.memory[int(address)]
    if raw.size > buf.size:
        raise RuntimeError(f"fake GPU: write of {raw.size} bytes past a {buf.size}-byte allocation")
    buf[: raw.size] = raw


class DeviceAllocation:
    def __init__(self, nbytes: int, /):  # pycuda.driver.mem_alloc(bytes): positional-only, as boost.python binds it
        DRIVER.require_context("cuMemAlloc")
        self._address = next(DRIVER.next_address)
        DRIVER.memory[self._address] = np.zeros(nbytes, np.uint8)

    def __int__(self):
        return self._address


class Stream:
    def __init__(self, flags: int = 0):
        DRIVER.require_context("cuStreamCreate")
        self.handle = next(DRIVER.next_handle)  # never 0: pycuda's Stream() is a new, non-default stream

    def synchronize(self):
        DRIVER.require_context("cuStreamSynchronize")


class Event:
    def __init__(self, flags: int = 0):
        DRIVER.require_context("cuEventCreate")
        self._t = None

    def record(self, stream=None):
        DRIVER.require_context("cuEventRecord")
        self._t = time.perf_counter()
        return self

    def synchronize(self):
        DRIVER.require_context("cuEventSynchronize")
        return self

    def time_since(self, other, /) -> float:
        DRIVER.require_context("cuEventElapsedTime")
        if self._t is None or other._t is None:
            raise LogicError("cuEventElapsedTime failed: invalid resource handle (event never recorded)")
        return (self._t - other._t) * 1e3


class _Context:
    def __init__(self, *args, **kwargs):
        raise TypeError("pycuda._driver.Context has no constructor: Device.retain_primary_context() makes one")

    def push(self):
        DRIVER.stack().append(self)

    @staticmethod
    def pop():  # a static method in pycuda: Context.pop() and ctx.pop() both pop the calling thread's context
        stack = DRIVER.stack()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        stack.pop()

    def detach(self):
        pass


class Device:
    def __init__(self, index, /):
        if not DRIVER.initialised:
            raise LogicError("cuDeviceGet failed: initialization error (call cuda.init() first)")
        self._index = index

    def name(self):
        return MACHINE.gpu

    def retain_primary_context(self):
        return object.__new__(_Context)


def _init(flags: int = 0):
    DRIVER.initialised = True


def _pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    DRIVER.require_context("cuMemHostAlloc")
    return np.zeros(shape, dtype)


def _htod(dest, src, stream=None):
    DRIVER.require_context("cuMemcpyHtoDAsync")
    _write(int(dest), np.asarray(src))


def _dtoh(dest, src, stream=None):
    DRIVER.require_context("cuMemcpyDtoHAsync")
    dest[...] = _read(int(src), dest.shape, dest.dtype)


def make_pycuda_driver():
    return types.SimpleNamespace(
        init=_init, Device=Device, Stream=Stream, Event=Event, Context=_Context, LogicError=LogicError,
        mem_alloc=DeviceAllocation, pagelocked_empty=_pagelocked_empty,
        memcpy_htod_async=_htod, memcpy_dtoh_async=_dtoh,
        mem_get_info=lambda: (DRIVER.require_context("cuMemGetInfo") or (6 << 30, 8 << 30)),
    )


# -------------------------------------------------------------------- tensorrt
class _Enum:
    def __init__(self, **values):
        self.__dict__.update(values)


def _failing(call: str) -> bool:
    """Count a use of `call`; True when the test asked it to fail from this use on."""
    MACHINE.calls[call] = MACHINE.calls.get(call, 0) + 1
    after = MACHINE.failures.get(call)
    return after is not None and MACHINE.calls[call] > after


class FakeEngine:
    """ICudaEngine. Its bookkeeping is underscored: public names are the real class's."""

    def __init__(self, spec: dict, int32_ids: bool):
        import onnxruntime as ort

        self._spec = spec
        self._session = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
        self._names, self._modes, self._dtypes, self._shapes = [], {}, {}, {}
        for io, mode in ((self._session.get_inputs(), "in"), (self._session.get_outputs(), "out")):
            for t in io:
                self._names.append(t.name)
                self._modes[t.name] = mode
                dtype = np.int64 if t.type == "tensor(int64)" else np.float32
                if dtype == np.int64 and int32_ids:  # TensorRT 8.6 turns int64 inputs into int32
                    dtype = np.int32
                self._dtypes[t.name] = np.dtype(dtype)
                self._shapes[t.name] = tuple(d if isinstance(d, int) else -1 for d in t.shape)

    @property
    def num_io_tensors(self):
        return len(self._names)

    def get_tensor_name(self, index):
        return self._names[index]

    def get_tensor_mode(self, name):
        return FakeTensorRT.TensorIOMode.INPUT if self._modes[name] == "in" else FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self._dtypes[name]

    def get_tensor_shape(self, name):
        return self._shapes[name]

    def create_execution_context(self, strategy=None):  # TensorRT's default: STATIC; the fake allocates nothing
        if _failing("create_execution_context"):
            return None
        return FakeContext(self)


class FakeContext:
    """IExecutionContext."""

    def __init__(self, engine: FakeEngine):
        self._engine = engine
        self._addresses: dict[str, int] = {}
        self._input_shapes: dict[str, tuple] = {}
        self._executions = 0

    def set_tensor_address(self, name, memory):
        if name not in self._engine._names or _failing("set_tensor_address"):
            return False
        self._addresses[name] = int(memory)
        return True

    def set_input_shape(self, name, shape):
        engine = self._engine
        if name not in engine._names or engine._modes[name] != "in" or _failing("set_input_shape"):
            return False
        declared = engine._shapes[name]
        if len(shape) != len(declared) or any(d not in (-1, s) for d, s in zip(declared, shape)):
            return False
        self._input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if self._engine._modes[name] == "in":
            return self._input_shapes.get(name, self._engine._shapes[name])
        return self._engine._shapes[name]

    def execute_async_v3(self, stream_handle):
        engine = self._engine
        if _failing("execute_async_v3"):
            return False
        missing = [n for n in engine._names if n not in self._addresses]
        unset = [n for n in engine._names if engine._modes[n] == "in" and -1 in self.get_tensor_shape(n)]
        if missing or unset:  # TensorRT logs the reason and returns false
            return False
        feeds = {}
        for name in engine._names:
            if engine._modes[name] == "in":
                value = _read(self._addresses[name], self.get_tensor_shape(name), engine._dtypes[name])
                feeds[name] = value.astype(np.int64) if value.dtype == np.int32 else value
        for o, value in zip(engine._session.get_outputs(), engine._session.run(None, feeds)):
            _write(self._addresses[o.name], value.astype(engine._dtypes[o.name]))
        self._executions += 1
        return True


class _Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, serialized_engine):
        if _failing("deserialize_cuda_engine"):
            return None
        try:
            # any buffer, as TensorRT's binding takes (bytes, mmap, IHostMemory)
            spec = json.loads(bytes(serialized_engine))
        except ValueError:
            return None
        return FakeEngine(spec, MACHINE.int32_ids)


class _HostMemory(bytes):
    """IHostMemory: a buffer (memoryview works on it, as on the real one) with its size."""

    @property
    def nbytes(self):
        return len(self)


def _timing_key() -> bytes:
    """What a timing cache is valid for: the GPU and the TensorRT version that measured it."""
    return f"fake-timing-cache {MACHINE.gpu} {FakeTensorRT.__version__}".encode()


class _TimingCache:
    def __init__(self, data: bytes):
        self._data = bytes(data) or _timing_key()

    def serialize(self):
        return _HostMemory(self._data)


class _Profile:
    def __init__(self):
        self._shapes = {}

    def set_shape(self, input, min, opt, max):  # noqa: A002  (TensorRT's keyword names)
        self._shapes[input] = [list(min), list(opt), list(max)]


class _Config:
    def __init__(self):
        self._pools, self._profiles, self._cache = {}, [], None

    def set_memory_pool_limit(self, pool, pool_size):
        self._pools[pool] = pool_size

    def create_timing_cache(self, serialized_timing_cache):
        return _TimingCache(serialized_timing_cache)

    def set_timing_cache(self, cache, ignore_mismatch):
        # TensorRT refuses (returns False) a cache measured on another GPU or version unless told to ignore it
        if cache._data != _timing_key() and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache

    def add_optimization_profile(self, profile):
        self._profiles.append(profile)
        return len(self._profiles) - 1


class _Network:
    def __init__(self, flags: int):
        self._flags = flags
        self._onnx = None


class _Parser:
    def __init__(self, network, logger):
        self._network = network
        self._errors = []

    @property
    def num_errors(self):
        return len(self._errors)

    def parse_from_file(self, model):
        if not Path(model).is_file():
            self._errors.append(f"{model}: file not found")
            return False
        self._network._onnx = str(model)
        return True

    def get_error(self, index):
        return self._errors[index]


class _Builder:
    def __init__(self, logger):
        pass

    def create_network(self, flags=0):
        return _Network(flags)

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        if _failing("build_serialized_network"):  # out of memory, unsupported layer, ...: None, as TensorRT
            return None
        strongly_typed = bool(network._flags & (1 << FakeTensorRT.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        if not strongly_typed:  # 11.x has no other mode; on 10.3 it would silently build in fp32
            return None
        spec = {"onnx": network._onnx, "strongly_typed": strongly_typed, "workspace": config._pools.get("WORKSPACE"),
                "profiles": [p._shapes for p in config._profiles]}
        MACHINE.builds.append(spec)
        return _HostMemory(json.dumps(spec).encode())


class FakeTensorRT(types.SimpleNamespace):
    """The `tensorrt` module: only names TensorRT 10.3 and 11.x both define."""

    __version__ = "10.3.0"
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, min_severity=2: None})
    TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")
    MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
    NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=1)  # the bit's position, as int() of the real enum
    Runtime = _Runtime
    Builder = _Builder
    OnnxParser = _Parser

    @staticmethod
    def nptype(trt_type):
        return trt_type


def fail(call: str, after: int = 0) -> None:
    """Make a TensorRT call return its failure value from its (after+1)-th use on."""
    MACHINE.failures[call] = MACHINE.calls.get(call, 0) + after


def install(monkeypatch, version="10.3.0", gpu="Fake Orin", int32_ids=False):
    """Make `import tensorrt` and `import pycuda.driver` resolve to the fakes for one test."""
    import sys

    # through monkeypatch, so the next test (or a subprocess's fake, tests/fakes/gpu_modules) sees the defaults
    monkeypatch.setattr(FakeTensorRT, "__version__", version)
    for name, value in (("gpu", gpu), ("int32_ids", int32_ids), ("builds", []), ("failures", {}), ("calls", {})):
        monkeypatch.setattr(MACHINE, name, value)
    global DRIVER
    DRIVER = _Driver()
    trt = FakeTensorRT
    driver = make_pycuda_driver()
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return trt, driver


def subprocess_pythonpath() -> str:
    """PYTHONPATH for a subprocess that must import these fakes as `tensorrt` and `pycuda` (tests/fakes/gpu_modules)."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return f"{root / 'tests' / 'fakes' / 'gpu_modules'}{os.pathsep}{root}"

