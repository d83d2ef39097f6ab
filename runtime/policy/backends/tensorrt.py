"""Native TensorRT backend: the bundle's engines, device buffers allocated once, vision -> language on the GPU.

    from runtime.policy.backends.tensorrt import TensorRTBackend
    with TensorRTBackend(bundle) as b:                       # python -m runtime.drive ... --backend trt
        feature = b.encode_frame(pixels, input_ids, attention_mask)   # from any thread
        chunk = b.predict_chunk(ring)

Needs `tensorrt` and `pycuda` (JetPack ships TensorRT; jetson/setup.sh builds
pycuda). Engines come from `jetson/build_engines.sh` or `python -m
export.to_trt` and are recorded in bundle.json with the TensorRT version and
GPU they were built for; an engine built for another TensorRT or GPU is
refused (TensorRT would reject it at deserialisation anyway, with a less
helpful message, or worse, run slowly).

Threads. A pycuda context is current only on the thread that pushed it, and
the drive loop calls the backend from its inference thread while
`activate()` runs on the main thread. So the backend owns one worker thread
("trt-gpu") for all its GPU work: the primary context is retained and pushed
once, on that thread; activation, every encode/predict/run_graph and
deactivation are submitted to it and waited for. Chosen over pushing and
popping the context around every call because then every CUDA object (stream,
buffers) lives and dies on one thread with its context current (pycuda's
frees fail without one), and two callers are serialised for free (the host
staging buffers are shared). The cost is one hand-off per call, tens of
microseconds next to a step of milliseconds.

Failures. TensorRT reports them by return value: `execute_async_v3`,
`set_input_shape` and `set_tensor_address` return False, deserialisation and
context creation return None. Each is checked and becomes a `BackendError`
naming the engine and the call; ignored, a failed enqueue would hand back
whatever the output buffer held (the previous frame's action). The drive
loop zeroes the motors on any exception of its inference thread.

No CUDA graphs: a step is three enqueues, whose launch overhead (tens of
microseconds) is lost in the language engine's weight reads (12-40 ms on an
Orin); jetson/README.md says how to measure what graphs would buy
(`trtexec --useCudaGraph` in jetson/bench.sh).
"""

from __future__ import annotations

import mmap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from runtime.policy.backends.base import Backend, BackendError
from runtime.policy.backends.cuda_device import cuda_device_name, gpu_stack_problem
from runtime.policy.bundle import GRAPHS

REBUILD = "rebuild the engines here: bash jetson/build_engines.sh BUNDLE"


def check_engine(record: dict, trt_version: str, gpu: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU, saying how to fix it."""
    if record["tensorrt_version"] != trt_version:
        raise BackendError(
            f"{record['file']}: built with TensorRT {record['tensorrt_version']}, this machine has {trt_version}; "
            f"{REBUILD}")
    if record["gpu"] != gpu:
        raise BackendError(f"{record['file']}: built for GPU {record['gpu']!r}, this machine has {gpu!r}; {REBUILD}")


def _checked(result, engine: _Engine, call: str):
    """TensorRT's failure values (False, None) -> BackendError naming the engine file and the call."""
    if result is None or result is False:
        raise BackendError(f"{engine.path.name}: TensorRT {call} failed (returned {result}); the step was "
                           f"abandoned, no stale output used. See the TensorRT log above; if it persists, "
                           f"run bash jetson/gpu_check.sh or {REBUILD}")
    return result


class _Engine:
    """One deserialised engine with its context and a device buffer per I/O tensor (created on the GPU thread)."""

    def __init__(self, trt, cuda, runtime, path, max_shapes: dict[str, tuple]):
        self.path = path
        # Deserialised from a read-only mmap, not read_bytes(): on a Jetson, host and GPU share one memory, and
        # a private 2.7 GB copy of the language engine next to its device copy is what would not fit on an
        # 8 GB Orin Nano at start; mapped file pages are page cache the kernel can drop (jetson/README.md).
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"{path.name}: TensorRT deserialize_cuda_engine returned None (corrupt file, or "
                               f"built by another TensorRT version); {REBUILD}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{path.name}: TensorRT create_execution_context returned None "
                               f"(out of GPU memory?); close other GPU programs or {REBUILD}")
        self.inputs, self.outputs, self.dtypes, self.buffers = [], [], {}, {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
            self.dtypes[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = max_shapes.get(name) or tuple(self.engine.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            self.buffers[name] = cuda.mem_alloc(max(nbytes, 1))
        for name in self.inputs:
            if name in max_shapes:  # dynamic: set a valid shape before the first output shape query
                self.set_shape(name, max_shapes[name])

    def set_shape(self, name: str, shape) -> None:
        _checked(self.context.set_input_shape(name, tuple(shape)), self, f"set_input_shape({name}, {tuple(shape)})")

    def bind(self, name: str, address) -> None:
        _checked(self.context.set_tensor_address(name, int(address)), self, f"set_tensor_address({name})")

    def bind_own(self) -> None:
        for name, buf in self.buffers.items():
            self.bind(name, buf)

    def enqueue(self, stream) -> None:
        _checked(self.context.execute_async_v3(stream.handle), self, "execute_async_v3")


class TensorRTBackend(Backend):
    name = "trt"

    def __init__(self, bundle, trt=None, cuda=None):
        super().__init__(bundle, variant="fp16-engine")
        self._trt, self._cuda = trt, cuda  # injectable for tests; imported lazily otherwise
        self.engines: dict[str, _Engine] = {}
        self._gpu: ThreadPoolExecutor | None = None
        self._context = None
        self._prompt_key = None

    def graph_files(self) -> dict[str, str]:
        return {e["graph"]: e["file"] for e in self.bundle.manifest.get("engines", [])}

    def precision(self) -> str:
        return "+".join(sorted({e.get("precision", "?") for e in self.bundle.manifest.get("engines", [])})) or "?"

    # -- the GPU thread ----------------------------------------------------------
    def _on_gpu(self, fn, *args):
        """Run fn on the thread that holds the CUDA context; its exceptions are raised here."""
        if self._gpu is None:
            raise BackendError("trt: call activate() (or use `with`) before inference")
        return self._gpu.submit(fn, *args).result()

    # -- lifecycle -------------------------------------------------------------
    def _activate(self) -> None:
        if self._trt is None:
            problem = gpu_stack_problem()
            if problem:
                raise BackendError(f"trt backend: {problem}")
            import pycuda.driver as cuda
            import tensorrt as trt

            self._trt, self._cuda = trt, cuda
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trt-gpu")
        try:
            self._gpu.submit(self._load).result()
        except BaseException:
            self._gpu.shutdown(wait=True)
            self._gpu = None
            raise

    def _load(self) -> None:
        trt, cuda = self._trt, self._cuda
        try:
            cuda.init()
            self._context = cuda.Device(0).retain_primary_context()
            self._context.push()
        except Exception as e:
            raise BackendError(f"trt: no usable CUDA device: {type(e).__name__}: {e}") from e
        try:
            gpu = cuda_device_name(cuda)
            records = {e["graph"]: e for e in self.bundle.manifest.get("engines", [])}
            missing = [g for g in GRAPHS if g not in records]
            if missing:
                raise BackendError(f"{self.bundle.root / 'bundle.json'}: no TensorRT engine for {', '.join(missing)}; "
                                   f"build them: bash jetson/build_engines.sh {self.bundle.root}")
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            head_in = self.bundle.inputs("action_head")[0]
            max_shapes = {head_in.name: (1, self.bundle.window, head_in.shape[2])}
            for graph in GRAPHS:
                check_engine(records[graph], trt.__version__, gpu)
                self.engines[graph] = _Engine(trt, cuda, runtime, self.bundle.root / records[graph]["file"], max_shapes)
                self.engines[graph].bind_own()
            self._chain()
            self.stream = cuda.Stream()  # our own stream, not the legacy default one that synchronises with all
            self.host = {name: cuda.pagelocked_empty(shape, dtype) for name, shape, dtype in self._host_specs()}
            self.events = [cuda.Event() for _ in range(3)]
        except BaseException:
            self._unload()
            raise

    def _chain(self) -> None:
        """Language reads the image embeddings where vision wrote them: no host round trip."""
        self.engines["language"].bind("image_embeds", self.engines["vision"].buffers["image_embeds"])

    def _host_specs(self):
        v, lang, head = self.engines["vision"], self.engines["language"], self.engines["action_head"]
        d = self.bundle.outputs("language")[0].shape[-1]
        t = self.bundle.manifest["prompt"]["total_tokens"]
        return [
            ("pixel_values", tuple(self.bundle.inputs("vision")[0].shape), v.dtypes["pixel_values"]),
            ("input_ids", (1, t), lang.dtypes["input_ids"]),
            ("attention_mask", (1, t), lang.dtypes["attention_mask"]),
            ("act_feature", (1, d), lang.dtypes["act_feature"]),
            ("act_features", (1, self.bundle.window, d), head.dtypes["act_features"]),
            ("action_chunk", (1, self.bundle.chunk, self.bundle.action_axes), head.dtypes["action_chunk"]),
        ]

    def _unload(self) -> None:
        """Free everything on the GPU thread, with the context still current, then pop it."""
        self.engines.clear()
        self.host, self.events, self.stream = {}, [], None
        self._prompt_key = None
        if self._context is not None:
            self._context.pop()
            self._context = None

    def _deactivate(self) -> None:
        if self._gpu is not None:
            try:
                self._gpu.submit(self._unload).result()
            finally:
                self._gpu.shutdown(wait=True)
                self._gpu = None

    # -- the hot path -------------------------------------------------------------
    def device_memory_used_mb(self) -> float:
        """GPU memory in use on this backend's device (all processes), asked on the thread whose context
        is current: `mem_get_info` from any other thread fails as every CUDA call there does."""
        def used():
            free, total = self._cuda.mem_get_info()
            return (total - free) / 2**20

        return self._on_gpu(used)

    def encode_frame(self, pixels, input_ids, attention_mask):
        if not self.active:
            raise BackendError("trt: call activate() (or use `with`) before inference")
        for spec, value in zip(self.bundle.inputs("language")[:2], (input_ids, attention_mask)):
            spec.check(value, "trt language")
        self.bundle.inputs("vision")[0].check(pixels, "trt vision")
        return self._on_gpu(self._encode, pixels, input_ids, attention_mask)

    def _encode(self, pixels, input_ids, attention_mask):
        cuda, lang = self._cuda, self.engines["language"]
        key = (input_ids.tobytes(), attention_mask.tobytes())
        if key != self._prompt_key:  # the instruction is fixed for a run: upload once
            for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask)):
                self.host[name][...] = value.astype(lang.dtypes[name])
                cuda.memcpy_htod_async(lang.buffers[name], self.host[name], self.stream)
            self._prompt_key = key
        self.host["pixel_values"][...] = pixels
        cuda.memcpy_htod_async(self.engines["vision"].buffers["pixel_values"], self.host["pixel_values"], self.stream)
        self.events[0].record(self.stream)
        self.engines["vision"].enqueue(self.stream)
        self.events[1].record(self.stream)
        lang.enqueue(self.stream)
        self.events[2].record(self.stream)
        cuda.memcpy_dtoh_async(self.host["act_feature"], lang.buffers["act_feature"], self.stream)
        self.stream.synchronize()
        self.timings["vision"] = self.events[1].time_since(self.events[0]) / 1e3
        self.timings["language"] = self.events[2].time_since(self.events[1]) / 1e3
        self.calls.update(("vision", "language"))
        return np.array(self.host["act_feature"], dtype=np.float32)

    def predict_chunk(self, features):
        if not self.active:
            raise BackendError("trt: call activate() (or use `with`) before inference")
        spec = self.bundle.inputs("action_head")[0]
        spec.check(features, "trt action_head", self.bundle.dynamic_axes("action_head"))
        start = time.perf_counter()
        chunk = self._on_gpu(self._predict, spec.name, features)
        self.timings["head"] = time.perf_counter() - start
        self.calls["action_head"] += 1
        return chunk

    def _predict(self, name: str, features):
        cuda, head = self._cuda, self.engines["action_head"]
        length = features.shape[1]
        head.set_shape(name, features.shape)
        staging = self.host["act_features"][:, :length]  # the first L rows: contiguous in the pinned buffer
        staging[...] = features
        cuda.memcpy_htod_async(head.buffers[name], staging, self.stream)
        head.enqueue(self.stream)
        cuda.memcpy_dtoh_async(self.host["action_chunk"], head.buffers["action_chunk"], self.stream)
        self.stream.synchronize()
        return np.array(self.host["action_chunk"], dtype=np.float32)

    def _run(self, graph: str, feeds):
        return self._on_gpu(self._run_on_gpu, graph, feeds)

    def _run_on_gpu(self, graph: str, feeds):
        """One graph with host inputs and outputs (parity checks; not the hot path)."""
        cuda, eng = self._cuda, self.engines[graph]
        eng.bind_own()
        dynamic = self.bundle.dynamic_axes(graph)
        for name in eng.inputs:
            value = np.ascontiguousarray(feeds[name].astype(eng.dtypes[name]))
            if dynamic:
                eng.set_shape(name, value.shape)
            cuda.memcpy_htod_async(eng.buffers[name], value, self.stream)
        eng.enqueue(self.stream)
        out = {}
        for name in eng.outputs:
            shape = tuple(eng.context.get_tensor_shape(name))
            out[name] = np.empty(shape, eng.dtypes[name])
            cuda.memcpy_dtoh_async(out[name], eng.buffers[name], self.stream)
        self.stream.synchronize()
        if graph == "language":  # restore the chain for encode_frame
            self._chain()
            self._prompt_key = None
        return {k: v.astype(np.float32) for k, v in out.items()}
