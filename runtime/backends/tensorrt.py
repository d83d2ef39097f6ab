"""Native TensorRT backend: fp16 engines, device buffers allocated once, vision -> language chained on the GPU.

    from runtime.backends.tensorrt import TensorRTBackend
    with TensorRTBackend(bundle, cuda_graph=True) as b:
        feature = b.encode_frame(pixels, input_ids, attention_mask)
        chunk = b.predict_chunk(ring)

Needs `tensorrt` and `pycuda` (JetPack ships both). Engines come from
`jetson/build_engines.sh` or `python -m export.to_trt` and are recorded in
bundle.json with the TensorRT version and GPU they were built for; an engine
built for another TensorRT or GPU is refused (TensorRT would reject it at
deserialisation anyway, with a less helpful message, or worse, run slowly).

Per frame the host copies in the pixels (and the prompt only when it
changed), vision writes the image embeddings into a device buffer that *is*
the language engine's input, and only the 2048-float ACT feature comes back.
With `cuda_graph=True` the vision + language launch sequence is captured
once and replayed (static shapes make that valid), which removes most of the
per-layer launch overhead on a Jetson.
"""

from __future__ import annotations

import time

import numpy as np

from runtime.backends.base import Backend, BackendError
from runtime.bundle import GRAPHS


def check_engine(record: dict, trt_version: str, gpu: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU, saying how to fix it."""
    if record["tensorrt_version"] != trt_version:
        raise BackendError(
            f"{record['file']}: built with TensorRT {record['tensorrt_version']}, this machine has {trt_version}; "
            f"rebuild the engines here: bash jetson/build_engines.sh BUNDLE")
    if record["gpu"] != gpu:
        raise BackendError(
            f"{record['file']}: built for GPU {record['gpu']!r}, this machine has {gpu!r}; "
            f"rebuild the engines here: bash jetson/build_engines.sh BUNDLE")


class _Engine:
    """One deserialised engine with its context and a device buffer per I/O tensor."""

    def __init__(self, trt, cuda, runtime, path, max_shapes: dict[str, tuple]):
        self.path = path
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{path}: TensorRT could not deserialise it (corrupt, or built for another version)")
        self.context = self.engine.create_execution_context()
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
                self.context.set_input_shape(name, max_shapes[name])

    def bind(self, name: str, address) -> None:
        self.context.set_tensor_address(name, int(address))

    def bind_own(self) -> None:
        for name, buf in self.buffers.items():
            self.bind(name, buf)


class TensorRTBackend(Backend):
    name = "trt"

    def __init__(self, bundle, cuda_graph: bool = False, trt=None, cuda=None):
        super().__init__(bundle, variant="fp16-engine")
        self.cuda_graph = cuda_graph
        self._trt, self._cuda = trt, cuda  # injectable for tests; imported lazily otherwise
        self.engines: dict[str, _Engine] = {}
        self._prompt_key = None
        self._graph_exec = None

    # -- lifecycle -------------------------------------------------------------
    def _activate(self) -> None:
        if self._trt is None:
            try:
                import pycuda.driver as cuda
                import tensorrt as trt
            except ImportError as e:
                raise BackendError(f"trt backend needs tensorrt and pycuda (JetPack ships both): {e}") from e
            self._trt, self._cuda = trt, cuda
        trt, cuda = self._trt, self._cuda
        cuda.init()
        self._context = cuda.Device(0).retain_primary_context()
        self._context.push()
        gpu = cuda.Device(0).name()
        records = {e["graph"]: e for e in self.bundle.manifest.get("engines", [])}
        missing = [g for g in GRAPHS if g not in records]
        if missing:
            raise BackendError(f"{self.bundle.root / 'bundle.json'}: no TensorRT engine for {', '.join(missing)}; "
                               f"build them: bash jetson/build_engines.sh {self.bundle.root}")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        head_in = self.bundle.inputs("action_head")[0]
        w = self.bundle.window
        max_shapes = {head_in.name: (1, w, head_in.shape[2])}
        try:
            for graph in GRAPHS:
                check_engine(records[graph], trt.__version__, gpu)
                self.engines[graph] = _Engine(trt, cuda, runtime, self.bundle.root / records[graph]["file"], max_shapes)
                self.engines[graph].bind_own()
            # The chain: language reads the image embeddings where vision wrote them.
            self.engines["language"].bind("image_embeds", self.engines["vision"].buffers["image_embeds"])
            self.stream = cuda.Stream()
            self.host = {name: cuda.pagelocked_empty(shape, dtype) for name, shape, dtype in self._host_specs()}
            self.events = [cuda.Event() for _ in range(3)]
        except BaseException:
            self._deactivate()
            raise

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

    def _deactivate(self) -> None:
        self.engines.clear()
        self._graph_exec = None
        self._prompt_key = None
        ctx = getattr(self, "_context", None)
        if ctx is not None:
            ctx.pop()
            self._context = None

    # -- the hot path -------------------------------------------------------------
    def _launch_vision_language(self) -> None:
        self.engines["vision"].context.execute_async_v3(self.stream.handle)
        self.events[1].record(self.stream)
        self.engines["language"].context.execute_async_v3(self.stream.handle)

    def encode_frame(self, pixels, input_ids, attention_mask):
        if not self.active:
            raise BackendError("trt: call activate() (or use `with`) before inference")
        for spec, value in zip(self.bundle.inputs("language")[:2], (input_ids, attention_mask)):
            spec.check(value, "trt language")
        self.bundle.inputs("vision")[0].check(pixels, "trt vision")
        cuda, lang = self._cuda, self.engines["language"]
        key = (input_ids.tobytes(), attention_mask.tobytes())
        if key != self._prompt_key:  # the instruction is fixed for a run: upload once
            for name, value in (("input_ids", input_ids), ("attention_mask", attention_mask)):
                self.host[name][...] = value.astype(lang.dtypes[name])
                cuda.memcpy_htod_async(lang.buffers[name], self.host[name], self.stream)
            self._prompt_key = key
        self.host["pixel_values"][...] = pixels
        self.events[0].record(self.stream)
        cuda.memcpy_htod_async(self.engines["vision"].buffers["pixel_values"], self.host["pixel_values"], self.stream)
        if self.cuda_graph and self._graph_exec is None:
            self._graph_exec = self._capture()
        if self._graph_exec is not None:
            self._graph_exec.launch(self.stream)
        else:
            self._launch_vision_language()
        self.events[2].record(self.stream)
        cuda.memcpy_dtoh_async(self.host["act_feature"], lang.buffers["act_feature"], self.stream)
        self.stream.synchronize()
        self.timings["vision"] = self.events[1].time_since(self.events[0]) / 1e3
        self.timings["language"] = self.events[2].time_since(self.events[1]) / 1e3
        return np.array(self.host["act_feature"], dtype=np.float32)

    def _capture(self):
        """Capture vision + language as a CUDA graph where this pycuda supports stream capture."""
        if not hasattr(self.stream, "begin_capture"):
            self.cuda_graph = False
            return None
        self.stream.begin_capture()
        self._launch_vision_language()
        graph = self.stream.end_capture()
        return graph.instance()

    def predict_chunk(self, features):
        if not self.active:
            raise BackendError("trt: call activate() (or use `with`) before inference")
        spec = self.bundle.inputs("action_head")[0]
        spec.check(features, "trt action_head", self.bundle.dynamic_axes("action_head"))
        cuda, head = self._cuda, self.engines["action_head"]
        start = time.perf_counter()
        head.context.set_input_shape(spec.name, features.shape)
        staging = self.host["act_features"][:, : features.shape[1]]
        staging[...] = features
        cuda.memcpy_htod_async(head.buffers[spec.name], np.ascontiguousarray(staging), self.stream)
        head.context.execute_async_v3(self.stream.handle)
        cuda.memcpy_dtoh_async(self.host["action_chunk"], head.buffers["action_chunk"], self.stream)
        self.stream.synchronize()
        self.timings["head"] = time.perf_counter() - start
        return np.array(self.host["action_chunk"], dtype=np.float32)

    def _run(self, graph: str, feeds):
        """One graph with host inputs and outputs (parity checks; not the hot path)."""
        cuda, eng = self._cuda, self.engines[graph]
        eng.bind_own()
        dynamic = self.bundle.dynamic_axes(graph)
        for name in eng.inputs:
            value = np.ascontiguousarray(feeds[name].astype(eng.dtypes[name]))
            if dynamic:
                eng.context.set_input_shape(name, value.shape)
            cuda.memcpy_htod_async(eng.buffers[name], value, self.stream)
        eng.context.execute_async_v3(self.stream.handle)
        out = {}
        for name in eng.outputs:
            shape = tuple(eng.context.get_tensor_shape(name))
            out[name] = np.empty(shape, eng.dtypes[name])
            cuda.memcpy_dtoh_async(out[name], eng.buffers[name], self.stream)
        self.stream.synchronize()
        if graph == "language":  # restore the chain for encode_frame
            eng.bind("image_embeds", self.engines["vision"].buffers["image_embeds"])
            self._prompt_key = None
        return {k: v.astype(np.float32) for k, v in out.items()}
