"""A fake GPU at the lowest level: `tensorrt` and `pycuda.driver` stand-ins.

Device memory is a dict of byte arrays keyed by integer addresses; an
"engine" is a JSON file naming the ONNX graph it was "built" from, and
executing it runs that graph with ONNX Runtime on whatever bytes sit at the
bound addresses. So everything above the device (builder configuration,
optimisation profiles, tensor names, addresses, the vision -> language
chain, dynamic shapes, dtype casts, copies) is our real code, checked by
real numbers.
"""

from __future__ import annotations

import itertools
import json
import time
import types
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- pycuda.driver
_MEMORY: dict[int, np.ndarray] = {}
_NEXT = itertools.count(0x10000, 0x10000)


class DeviceAllocation:
    def __init__(self, nbytes: int):
        self.address = next(_NEXT)
        _MEMORY[self.address] = np.zeros(nbytes, np.uint8)

    def __int__(self):
        return self.address


def _read(address: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    buf = _MEMORY[int(address)]
    if n > buf.size:
        raise RuntimeError(f"fake GPU: read of {n} bytes past a {buf.size}-byte allocation")
    return buf[:n].view(dtype).reshape(shape).copy()


def _write(address: int, value: np.ndarray) -> None:
    raw = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    buf = _MEMORY[int(address)]
    if raw.size > buf.size:
        raise RuntimeError(f"fake GPU: write of {raw.size} bytes past a {buf.size}-byte allocation")
    buf[: raw.size] = raw


class Stream:
    handle = 0

    def synchronize(self):
        pass


class Event:
    def record(self, stream=None):
        self.t = time.perf_counter()

    def time_since(self, other) -> float:
        return (self.t - other.t) * 1e3


class _Context:
    def push(self):
        pass

    def pop(self):
        pass


class Device:
    def __init__(self, index):
        self.index = index

    def name(self):
        return FakeTensorRT.gpu

    def retain_primary_context(self):
        return _Context()


def make_pycuda_driver():
    return types.SimpleNamespace(
        init=lambda: None, Device=Device, Stream=Stream, Event=Event,
        mem_alloc=DeviceAllocation, pagelocked_empty=lambda shape, dtype: np.zeros(shape, dtype),
        memcpy_htod_async=lambda dst, src, stream=None: _write(int(dst), src),
        memcpy_dtoh_async=lambda dst, src, stream=None: dst.__setitem__(..., _read(int(src), dst.shape, dst.dtype)),
    )


# -------------------------------------------------------------------- tensorrt
class _Enum:
    def __init__(self, **values):
        self.__dict__.update(values)


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
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.input_shapes: dict[str, tuple] = {}
        self.executions = 0

    def set_tensor_address(self, name, address):
        assert name in self.engine.names, name
        self.addresses[name] = int(address)

    def set_input_shape(self, name, shape):
        self.input_shapes[name] = tuple(shape)

    def get_tensor_shape(self, name):
        if self.engine.modes[name] == "in":
            return self.input_shapes.get(name, self.engine.shapes[name])
        return self.engine.shapes[name]

    def execute_async_v3(self, stream_handle):
        feeds = {}
        for name in self.engine.names:
            if self.engine.modes[name] != "in":
                continue
            shape = self.get_tensor_shape(name)
            if -1 in shape:
                raise RuntimeError(f"fake TensorRT: input {name} has dynamic shape {shape}; set_input_shape first")
            value = _read(self.addresses[name], shape, self.engine.dtypes[name])
            feeds[name] = value.astype(np.int64) if value.dtype == np.int32 else value
        outs = self.engine.session.run(None, feeds)
        for o, value in zip(self.engine.session.get_outputs(), outs):
            _write(self.addresses[o.name], value.astype(self.engine.dtypes[o.name]))
        self.executions += 1
        return True


class _Runtime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data: bytes):
        try:
            spec = json.loads(data)
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


def install(monkeypatch, version="10.3.0", gpu="Fake Orin", int32_ids=False):
    """Make `import tensorrt` and `import pycuda.driver` resolve to the fakes for one test."""
    import sys

    FakeTensorRT.__version__, FakeTensorRT.gpu, FakeTensorRT.int32_ids = version, gpu, int32_ids
    FakeTensorRT.builds = []
    trt = FakeTensorRT
    driver = make_pycuda_driver()
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return trt, driver
