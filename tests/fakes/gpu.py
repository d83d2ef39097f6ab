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
  call (allocation, copy, stream, event, capture) from a thread with no
  current context raises `LogicError(... invalid device context)`, as
  pycuda does for CUDA_ERROR_INVALID_CONTEXT. `Context.pop()` pops the
  calling thread's stack. `cuda.init()` must come first.
- TensorRT reports failure by return value, never by exception:
  `deserialize_cuda_engine` -> None, `create_execution_context` -> None,
  `set_input_shape` / `set_tensor_address` / `execute_async_v3` -> False.
  `fail(call, after=n)` makes a call fail from its (n+1)-th use on.
- CUDA graphs: capture only on a non-default stream; an `execute_async_v3`
  inside a capture with deferred updates pending (a new shape or address
  since the last plain enqueue) is not capturable and invalidates the
  capture (TensorRT's advice: one enqueue before capturing); an event
  recorded inside a capture cannot time anything (raises); a launched graph
  replays the enqueues with the addresses and shapes it captured.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import types
from pathlib import Path

import numpy as np


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
    def __init__(self, nbytes: int):
        DRIVER.require_context("cuMemAlloc")
        self.address = next(DRIVER.next_address)
        DRIVER.memory[self.address] = np.zeros(nbytes, np.uint8)

    def __int__(self):
        return self.address


class _GraphExec:
    def __init__(self, ops: list):
        self.ops = ops
        self.launches = 0

    def launch(self, stream=None):
        DRIVER.require_context("cuGraphLaunch")
        if stream is not None and stream.capturing is not None:
            raise LogicError("cuGraphLaunch failed: operation not permitted when stream is capturing")
        for op in self.ops:
            op()
        self.launches += 1


class _Graph:
    def __init__(self, ops: list):
        self.ops = ops

    def instantiate(self):  # pycuda's name (test/test_graph.py upstream), not "instance"
        DRIVER.require_context("cuGraphInstantiate")
        return _GraphExec(list(self.ops))


class Stream:
    def __init__(self, flags: int = 0):
        DRIVER.require_context("cuStreamCreate")
        self.handle = next(DRIVER.next_handle)  # never 0: pycuda's Stream() is a new, non-default stream
        self.capturing: list | None = None
        self.invalidated = ""
        self.captures = 0

    def synchronize(self):
        DRIVER.require_context("cuStreamSynchronize")
        if self.capturing is not None:
            raise LogicError("cuStreamSynchronize failed: operation not permitted when stream is capturing")

    def begin_capture(self, capture_mode=None):
        DRIVER.require_context("cuStreamBeginCapture")
        if self.handle == 0:
            raise LogicError("cuStreamBeginCapture failed: operation not supported on the legacy default stream")
        if self.capturing is not None:
            raise LogicError("cuStreamBeginCapture failed: stream is already capturing")
        self.capturing, self.invalidated = [], ""

    def end_capture(self):
        DRIVER.require_context("cuStreamEndCapture")
        if self.capturing is None:
            raise LogicError("cuStreamEndCapture failed: stream is not capturing")
        ops, self.capturing = self.capturing, None
        if self.invalidated:
            raise LogicError(f"cuStreamEndCapture failed: capture invalidated ({self.invalidated})")
        self.captures += 1
        return _Graph(ops)


class Event:
    def __init__(self, flags: int = 0):
        DRIVER.require_context("cuEventCreate")
        self.t = None

    def record(self, stream=None):
        DRIVER.require_context("cuEventRecord")
        if stream is not None and stream.capturing is not None:
            # A captured record becomes a graph node; its time is not a measurement of anything.
            raise LogicError("fake pycuda: a timing event recorded inside a stream capture (record it outside)")
        self.t = time.perf_counter()
        return self

    def synchronize(self):
        DRIVER.require_context("cuEventSynchronize")
        return self

    def time_since(self, other) -> float:
        DRIVER.require_context("cuEventElapsedTime")
        if self.t is None or other.t is None:
            raise LogicError("cuEventElapsedTime failed: invalid resource handle (event never recorded)")
        return (self.t - other.t) * 1e3


class _Context:
    def push(self):
        DRIVER.stack().append(self)

    def pop(self=None):
        stack = DRIVER.stack()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        stack.pop()

    def detach(self):
        pass


class Device:
    def __init__(self, index):
        if not DRIVER.initialised:
            raise LogicError("cuDeviceGet failed: initialization error (call cuda.init() first)")
        self.index = index

    def name(self):
        return FakeTensorRT.gpu

    def retain_primary_context(self):
        return _Context()


def _init(flags: int = 0):
    DRIVER.initialised = True


def _pagelocked_empty(shape, dtype, order="C", mem_flags=0):
    DRIVER.require_context("cuMemHostAlloc")
    return np.zeros(shape, dtype)


def _htod(dst, src, stream=None):
    DRIVER.require_context("cuMemcpyHtoDAsync")
    value = np.array(src, copy=True)  # the copy reads the host buffer when it runs, as the device would
    if stream is not None and stream.capturing is not None:
        stream.capturing.append(lambda: _write(int(dst), value))
    else:
        _write(int(dst), value)


def _dtoh(dst, src, stream=None):
    DRIVER.require_context("cuMemcpyDtoHAsync")

    def copy():
        dst[...] = _read(int(src), dst.shape, dst.dtype)

    if stream is not None and stream.capturing is not None:
        stream.capturing.append(copy)
    else:
        copy()


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
    FakeTensorRT.calls[call] = FakeTensorRT.calls.get(call, 0) + 1
    after = FakeTensorRT.failures.get(call)
    return after is not None and FakeTensorRT.calls[call] > after


class FakeEngine:
    def __init__(self, spec: dict, int32_ids: bool):
        import onnxruntime as ort

        self.spec = spec
        self.session = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
        self.names, self.modes, self.dtypes, self.shapes = [], {}, {}, {}
        for io, mode in ((self.session.get_inputs(), "in"), (self.session.get_outputs(), "out")):
            for t in io:
                self.names.append(t.name)
                self.modes[t.name] = mode
                dtype = np.int64 if t.type == "tensor(int64)" else np.float32
                if dtype == np.int64 and int32_ids:  # TensorRT 8.6 turns int64 inputs into int32
                    dtype = np.int32
                self.dtypes[t.name] = np.dtype(dtype)
                self.shapes[t.name] = tuple(d if isinstance(d, int) else -1 for d in t.shape)

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return FakeTensorRT.TensorIOMode.INPUT if self.modes[name] == "in" else FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.dtypes[name]

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def create_execution_context(self):
        if _failing("create_execution_context"):
            return None
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.input_shapes: dict[str, tuple] = {}
        self.executions = 0
        self.pending = True  # deferred updates: a fresh context has never been enqueued

    def set_tensor_address(self, name, address):
        if name not in self.engine.names or _failing("set_tensor_address"):
            return False
        if self.addresses.get(name) != int(address):
            self.pending = True
        self.addresses[name] = int(address)
        return True

    def set_input_shape(self, name, shape):
        if name not in self.engine.names or self.engine.modes[name] != "in" or _failing("set_input_shape"):
            return False
        declared = self.engine.shapes[name]
        if len(shape) != len(declared) or any(d not in (-1, s) for d, s in zip(declared, shape)):
            return False
        if self.input_shapes.get(name) != tuple(shape):
            self.pending = True
        self.input_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if self.engine.modes[name] == "in":
            return self.input_shapes.get(name, self.engine.shapes[name])
        return self.engine.shapes[name]

    def _run(self, addresses: dict, shapes: dict) -> None:
        feeds = {}
        for name in self.engine.names:
            if self.engine.modes[name] != "in":
                continue
            shape = shapes.get(name, self.engine.shapes[name])
            value = _read(addresses[name], shape, self.engine.dtypes[name])
            feeds[name] = value.astype(np.int64) if value.dtype == np.int32 else value
        outs = self.engine.session.run(None, feeds)
        for o, value in zip(self.engine.session.get_outputs(), outs):
            _write(addresses[o.name], value.astype(self.engine.dtypes[o.name]))
        self.executions += 1

    def execute_async_v3(self, stream_handle):
        if _failing("execute_async_v3"):
            return False
        missing = [n for n in self.engine.names if n not in self.addresses]
        unset = [n for n in self.engine.names if self.engine.modes[n] == "in" and -1 in self.get_tensor_shape(n)]
        if missing or unset:  # TensorRT logs the reason and returns false
            return False
        stream = FakeTensorRT.streams.get(int(stream_handle))
        addresses, shapes = dict(self.addresses), dict(self.input_shapes)
        if stream is not None and stream.capturing is not None:
            if self.pending:  # a deferred update would allocate/synchronise inside the capture
                stream.invalidated = "execute_async_v3 with deferred updates pending: enqueue once before capturing"
                return False
            stream.capturing.append(lambda: self._run(addresses, shapes))
            return True
        self._run(addresses, shapes)
        self.pending = False
        return True


class _Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data: bytes):
        if _failing("deserialize_cuda_engine"):
            return None
        try:
            spec = json.loads(bytes(data))  # any buffer, as TensorRT's binding takes (bytes, mmap, IHostMemory)
        except ValueError:
            return None
        return FakeEngine(spec, FakeTensorRT.int32_ids)


class _TimingCache:
    def __init__(self, data: bytes):
        self.data = data or b"fake-timing-cache"

    def serialize(self):
        return self.data


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class _Config:
    def __init__(self):
        self.flags, self.pools, self.profiles, self.cache = set(), {}, [], None

    def set_flag(self, flag):
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def create_timing_cache(self, data):
        return _TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache

    def get_timing_cache(self):
        return self.cache

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


class _Network:
    onnx = None


class _Parser:
    def __init__(self, network, logger):
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path):
        if not Path(path).is_file():
            self.num_errors = 1
            return False
        self.network.onnx = str(path)
        return True

    def get_error(self, i):
        return "file not found"


class _Builder:
    def __init__(self, logger):
        pass

    def create_network(self, flags):
        return _Network()

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        if _failing("build_serialized_network"):  # out of memory, unsupported layer, ...: None, as TensorRT
            return None
        spec = {"onnx": network.onnx, "fp16": "FP16" in config.flags, "workspace": config.pools.get("WORKSPACE"),
                "profiles": [p.shapes for p in config.profiles]}
        FakeTensorRT.builds.append(spec)
        return json.dumps(spec).encode()


class FakeTensorRT(types.SimpleNamespace):
    """Class-level state so tests can set the version/GPU the 'machine' reports."""

    __version__ = "10.3.0"
    gpu = "Fake Orin"
    int32_ids = False
    builds: list = []
    failures: dict = {}  # call name -> uses that still succeed before it starts failing
    calls: dict = {}  # call name -> uses so far
    streams: dict = {}  # handle -> Stream, so an enqueue knows whether its stream is capturing
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None})
    TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")
    BuilderFlag = _Enum(FP16="FP16")
    MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")
    NetworkDefinitionCreationFlag = _Enum()  # TensorRT 10: explicit batch is implicit
    Runtime = _Runtime
    Builder = _Builder
    OnnxParser = _Parser

    @staticmethod
    def nptype(dtype):
        return dtype


def fail(call: str, after: int = 0) -> None:
    """Make a TensorRT call return its failure value from its (after+1)-th use on."""
    FakeTensorRT.failures[call] = FakeTensorRT.calls.get(call, 0) + after


def install(monkeypatch, version="10.3.0", gpu="Fake Orin", int32_ids=False):
    """Make `import tensorrt` and `import pycuda.driver` resolve to the fakes for one test."""
    import sys

    # through monkeypatch, so the next test (or a subprocess's fake, tests/fakes/gpu_modules) sees the defaults
    for name, value in (("__version__", version), ("gpu", gpu), ("int32_ids", int32_ids), ("builds", []),
                        ("failures", {}), ("calls", {})):
        monkeypatch.setattr(FakeTensorRT, name, value)
    global DRIVER
    DRIVER = _Driver()
    trt = FakeTensorRT
    driver = make_pycuda_driver()
    real_stream = driver.Stream

    def stream(flags=0):  # register streams so the fake enqueue can see a capture in progress
        s = real_stream(flags)
        FakeTensorRT.streams[s.handle] = s
        return s

    FakeTensorRT.streams = {}
    driver.Stream = stream
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

