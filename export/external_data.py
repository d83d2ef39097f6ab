"""ONNX graphs of any size, handled tensor by tensor: never one >2 GB protobuf message in memory.

    from export.external_data import convert_to_fp16, consolidate_external_data
    consolidate_external_data(Path("language.onnx"))      # the exporter's one-file-per-tensor -> language.onnx.data
    convert_to_fp16(Path("language.onnx"), Path("language.fp16.onnx"), keep_fp32_ops=["LayerNormalization"])

Protobuf refuses to serialise (or even size) a message over 2 GiB, and the
real Kosmos-2 language graph is 5.3 GB in fp32. So nothing here loads the
weights into the model proto: the graph is read without its external data
(the structure is a few MB), shape inference runs path-based
(`onnx.shape_inference.infer_shapes_path`), the fp16 conversion rewrites the
structure, and each weight is then streamed from its source file into one
GRAPH.onnx.data in chunks (converted to fp16 on the way where the conversion
changed its type). The output's size is known from the initializers' shapes
before anything is written: over `INLINE_LIMIT` every weight of 1 KiB or more
goes to the data file, under it the graph stays one file.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from runtime.atomic import make_shareable

# Protobuf's hard limit is 2 GiB for the whole message; the graph's own structure and the inline small
# tensors come on top of the weights, so a graph whose weights exceed 1 GiB keeps them outside.
INLINE_LIMIT = 1 << 30
CONSTANTS_LIMIT = 1 << 30  # node constants always stay in the graph: more than this would not fit beside it
EXTERNAL_MIN_BYTES = 1024  # smaller tensors (shapes, scalars) stay in the graph, as onnx's own saver does
ALIGN = 4096  # offsets on page boundaries: ONNX Runtime and TensorRT may mmap the data file
CHUNK_BYTES = 64 << 20  # converted 64 MiB at a time: a 530 MB embedding never needs 4 fp32 copies at once


def tensor_nbytes(tensor) -> int:
    """Bytes of a tensor's data from its shape and type (nothing read)."""
    from onnx.helper import tensor_dtype_to_np_dtype  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    return int(np.prod(tensor.dims, dtype=np.int64)) * np.dtype(tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def _uses_external(tensor) -> bool:
    from onnx import TensorProto  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    return tensor.HasField("data_location") and tensor.data_location == TensorProto.EXTERNAL


def _source_chunks(tensor, base: Path) -> Iterator[bytes]:
    """A tensor's data in chunks of CHUNK_BYTES (a multiple of every item size), from its file or the proto."""
    if not _uses_external(tensor):
        if tensor.raw_data:
            yield tensor.raw_data
        else:
            from onnx.numpy_helper import to_array  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

            yield to_array(tensor).tobytes()
        return
    from onnx.external_data_helper import ExternalDataInfo  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    info = ExternalDataInfo(tensor)
    remaining = info.length or tensor_nbytes(tensor)
    with open(base / info.location, "rb") as f:
        f.seek(_offset(info))
        while remaining > 0:
            chunk = f.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise ValueError(f"{base / info.location}: ends before tensor {tensor.name!r} "
                                 f"({remaining} bytes missing); re-export the graph")
            remaining -= len(chunk)
            yield chunk


def _offset(info) -> int:
    """Where an external tensor's bytes start in its file (no offset recorded: the start)."""
    return info.offset or 0


def half(values: np.ndarray) -> np.ndarray:
    """fp32 -> fp16 as ONNX Runtime's converter does it (float16.convert_np_to_float16: magnitudes over 65504
    clamp to 65504 (infinities stay), non-zero ones that would round to zero become the smallest subnormal),
    in a few passes instead of its dozen: it runs over every weight of the language graph."""
    tiny = np.float16(5.96e-08)
    out = np.clip(values, -65504.0, 65504.0).astype(np.float16)
    lost = (out == 0) & (values != 0)
    out[lost] = np.where(values[lost] > 0, tiny, -tiny)
    infinite = np.isinf(values)  # the converter clamps finite magnitudes only
    out[infinite] = values[infinite]
    return out


def _to_fp16(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield half(np.frombuffer(chunk, np.float32)).tobytes()


class ExternalDataFile:
    """One data file next to a graph; `append` writes a tensor's bytes and points the tensor at them."""

    def __init__(self, path: Path, location: str | None = None):
        self.path = path
        self.location = location or path.name  # what the graph records (the final name)
        self.file = open(path, "wb")

    def append(self, tensor, chunks: Iterable[bytes]) -> None:
        from onnx import TensorProto  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

        self.file.write(b"\0" * (-self.file.tell() % ALIGN))
        offset = self.file.tell()
        for chunk in chunks:
            self.file.write(chunk)
        length = self.file.tell() - offset
        tensor.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            tensor.ClearField(field)
        del tensor.external_data[:]
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = TensorProto.EXTERNAL

    def close(self) -> None:
        self.file.close()


def _inline(tensor, chunks: Iterable[bytes]) -> None:
    from onnx import TensorProto  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    tensor.raw_data = b"".join(chunks)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT


def _inline_attribute_tensors(model, base: Path) -> None:
    """Constants (node attribute tensors, e.g. the sinusoidal position table) the exporter wrote outside: read
    back into the graph, where the converter handles them; they are small next to the weights."""
    from onnx.external_data_helper import _get_attribute_tensors  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    inline = 0
    for tensor in _get_attribute_tensors(model):
        if _uses_external(tensor):
            _inline(tensor, _source_chunks(tensor, base))
        inline += tensor_nbytes(tensor)
    if inline > CONSTANTS_LIMIT:
        raise ValueError(f"{base}: {inline / 1e9:.1f} GB of constants inside the graph's nodes; export them as "
                         f"initializers")


def _save_skeleton(model, dst: Path) -> None:
    """The graph (weights already placed) under a temporary name, then renamed: never half-written."""
    import onnx  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    make_shareable(fd)  # mkstemp's 0600 would keep the boot service's account out of the bundle
    os.close(fd)
    try:
        onnx.save_model(model, tmp)  # tensors without raw_data keep their external reference as it is
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def consolidate_external_data(path: Path) -> None:
    """A graph the exporter had to split (over 2 GB, one file per tensor) -> its weights in one GRAPH.onnx.data.

    Streamed tensor by tensor; the exporter's per-tensor files are deleted afterwards."""
    import onnx  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    path = Path(path)
    from onnx.external_data_helper import _get_all_tensors  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in _get_all_tensors(model) if _uses_external(t)]
    if not external:
        return  # under 2 GB: the exporter inlined every weight
    from onnx.external_data_helper import ExternalDataInfo  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    referenced = {ExternalDataInfo(t).location for t in external}
    data_name = path.name + ".data"
    tmp_data = path.parent / f".{data_name}.tmp"
    out = ExternalDataFile(tmp_data, location=data_name)
    try:
        for tensor in external:
            out.append(tensor, _source_chunks(tensor, path.parent))
    finally:
        out.close()
    os.replace(tmp_data, path.parent / data_name)
    _save_skeleton(model, path)
    for name in referenced - {data_name}:  # the exporter's one-file-per-tensor leftovers
        (path.parent / name).unlink(missing_ok=True)


def sort_topologically(graph) -> None:
    """Nodes in dependency order (the converter appends its Casts at the end; the ONNX spec, the checker and
    TensorRT's parser want every input produced before it is read). Stable: independent nodes keep their order."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producers = {o: n for n, node in enumerate(graph.node) for o in node.output}
    waiting = {n: {i for i in node.input if i not in available and i in producers}
               for n, node in enumerate(graph.node)}
    readers: dict[str, list[int]] = {}
    for n, needs in waiting.items():
        for name in needs:
            readers.setdefault(name, []).append(n)
    ready = sorted(n for n, needs in waiting.items() if not needs)
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for name in graph.node[n].output:
            for r in readers.get(name, ()):
                waiting[r].discard(name)
                if not waiting[r]:
                    bisect.insort(ready, r)
    if len(order) != len(graph.node):
        raise ValueError(f"graph {graph.name!r} has a cycle or reads {len(graph.node) - len(order)} node outputs "
                         f"that nothing produces")
    nodes = [graph.node[n] for n in order]
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


@contextlib.contextmanager
def _shapes_from_dims():
    """The converter reads a converted weight's whole data (numpy_helper.to_array) only to learn its shape,
    which for an external weight means loading it from disk relative to the working directory. Its shape is
    in the tensor's dims: the converter's helper is swapped for one that reads them, for the conversion only."""
    from onnx import helper  # noqa: PLC0415  onnx: ~1 s; graph rewrites only
    from onnxruntime.transformers import float16  # noqa: PLC0415  onnxruntime.transformers: ~1 s; fp16 only

    original = float16.make_value_info_from_tensor
    float16.make_value_info_from_tensor = lambda t: helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
    try:
        yield
    finally:
        float16.make_value_info_from_tensor = original


def strict_shapes(src: Path, dst: str) -> None:
    """ONNX shape inference from a path, strict: a node whose output type cannot be inferred is an error naming the
    file, not a tensor left untyped (the converter would then not know to put a Cast in front of an fp32 op, and a
    Softmax would silently run in fp16)."""
    from onnx.shape_inference import InferenceError, infer_shapes_path  # noqa: PLC0415  onnx: graph rewrites only

    try:
        infer_shapes_path(str(src), dst, check_type=True, strict_mode=True)
    except (InferenceError, RuntimeError) as e:
        raise ValueError(f"{src}: ONNX shape inference (strict) failed, so tensor types are unknown and the fp16 "
                         f"conversion cannot keep its fp32 ops: {e}") from e


FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


def check_fp16_build_input(path: Path, fp32_ops: Iterable[str]) -> dict:
    """What a strongly typed TensorRT build of `path` relies on, checked without loading its weights: every external
    weight resolves (its data file exists and holds offset + length bytes), strict shape inference passes, every
    tensor going into or out of a Cast has a known type, and every input and output of the fp32 ops (LayerNorm,
    Softmax, ReduceL2) is fp32. Raises ValueError naming the file and the node; returns what was counted."""
    import onnx  # noqa: PLC0415  onnx: ~1 s; graph rewrites only
    from onnx.external_data_helper import ExternalDataInfo  # noqa: PLC0415  onnx: graph rewrites only

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    from onnx.external_data_helper import _get_all_tensors  # noqa: PLC0415  onnx: graph rewrites only

    external = 0
    for tensor in _get_all_tensors(model):
        if not _uses_external(tensor):
            continue
        info = ExternalDataInfo(tensor)
        data = path.parent / info.location
        need = _offset(info) + (info.length or tensor_nbytes(tensor))
        if not data.is_file() or data.stat().st_size < need:
            raise ValueError(f"{path}: weight {tensor.name!r} points at {info.location} bytes {_offset(info)}.."
                             f"{need}, which {'is missing' if not data.is_file() else 'is shorter'}")
        external += 1
    fd, inferred = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check.onnx", dir=path.parent)
    os.close(fd)
    try:
        strict_shapes(path, inferred)
        graph = onnx.load(inferred, load_external_data=False).graph
    finally:
        os.unlink(inferred)
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            types.update({o: next((a.t.data_type for a in node.attribute if a.name == "value"), 0)
                          for o in node.output})
    casts, islands = 0, {}
    keep = set(fp32_ops)
    for node in graph.node:
        names = [n for n in (*node.input, *node.output) if n]
        if node.op_type == "Cast":
            casts += 1
            untyped = [n for n in names if not types.get(n)]
            if untyped:
                raise ValueError(f"{path}: Cast {node.name!r} has untyped tensors {untyped}: its precision is unknown")
        elif node.op_type in keep:
            islands[node.op_type] = islands.get(node.op_type, 0) + 1
            # the data input and the outputs (LayerNorm's scale and bias, ReduceL2's axes are checked by type too)
            for name in (node.input[0], *node.output):
                if types.get(name) != FLOAT:
                    raise ValueError(f"{path}: {node.op_type} {node.name!r} must run in fp32 but its tensor {name!r} "
                                     f"is {onnx.TensorProto.DataType.Name(types.get(name, 0))}")
    return {"external_weights": external, "casts": casts, "fp32_ops": islands}


def convert_to_fp16(src: Path, dst: Path, keep_fp32_ops: Iterable[str]) -> dict:
    """src (fp32, with or without external data) -> dst with fp16 weights and fp32 inputs/outputs.

    Ops in keep_fp32_ops (and ONNX Runtime's default block list) stay fp32 behind Casts. Returns
    {"weights_bytes": of the output, "external_data": the data file's name or None}."""
    import onnx  # noqa: PLC0415  onnx: ~1 s; graph rewrites only
    from onnx import TensorProto  # noqa: PLC0415  onnx: ~1 s; graph rewrites only
    from onnxruntime.transformers.float16 import (  # noqa: PLC0415  onnxruntime.transformers: ~1 s; fp16 only
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    src, dst = Path(src), Path(dst)
    # Shape inference from the path: it reads the structure only, whatever the size of the weights. The
    # converter needs the inferred types to put Casts in front of the fp32 ops.
    fd, inferred = tempfile.mkstemp(prefix=f".{src.name}.", suffix=".shapes.onnx", dir=src.parent)
    os.close(fd)
    try:
        strict_shapes(src, inferred)
        model = onnx.load(inferred, load_external_data=False)
    finally:
        os.unlink(inferred)
    _inline_attribute_tensors(model, src.parent)
    from onnx.external_data_helper import _get_initializer_tensors  # noqa: PLC0415  onnx: ~1 s; graph rewrites only

    top = sum(map(_uses_external, model.graph.initializer))
    nested = sum(map(_uses_external, _get_initializer_tensors(model))) - top
    if nested:  # the torch exporter writes none; their conversion would need the same bookkeeping as below
        raise ValueError(f"{src}: {nested} initializers of subgraphs keep external data; not supported")
    was = {t.name: t.data_type for t in model.graph.initializer}
    # External weights keep no bytes in the proto: the converter only changes their declared type (fp32 ->
    # fp16) and their data is converted below, while it is copied.
    with _shapes_from_dims():
        convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True,
                                 op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32_ops))
    sort_topologically(model.graph)
    weights = sum(tensor_nbytes(t) for t in model.graph.initializer)
    large = weights > INLINE_LIMIT
    data_name = dst.name + ".data"
    out = ExternalDataFile(dst.parent / data_name) if large else None
    try:
        for tensor in model.graph.initializer:
            external = _uses_external(tensor)
            if not external and not (large and tensor_nbytes(tensor) >= EXTERNAL_MIN_BYTES):
                continue  # inline stays inline; the converter already halved it if it had to
            chunks = _source_chunks(tensor, src.parent)
            if external and was[tensor.name] == TensorProto.FLOAT and tensor.data_type == TensorProto.FLOAT16:
                chunks = _to_fp16(chunks)
            if large and tensor_nbytes(tensor) >= EXTERNAL_MIN_BYTES:
                out.append(tensor, chunks)
            else:
                _inline(tensor, chunks)
    finally:
        if out is not None:
            out.close()
    if not large:
        (dst.parent / data_name).unlink(missing_ok=True)  # a stale one from an earlier large conversion
    _save_skeleton(model, dst)
    return {"weights_bytes": weights, "external_data": data_name if large else None}
