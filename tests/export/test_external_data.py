"""Graphs over protobuf's 2 GB limit: the fp16 build input is converted file to file, weights streamed."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.external_data_helper import ExternalDataInfo
from onnxruntime.transformers.float16 import convert_np_to_float16

from export import external_data
from export.variants import FP16_KEEP_FP32, make_fp16

BLOCK_ROWS = 256  # each weight is one random block repeated: cheap to write, and x @ W has a cheap reference


def write_graph(folder, width: int, external: bool, seed: int = 0, name: str = "big"):
    """x (1, width) -> MatMul w1 -> LayerNormalization -> MatMul w2 -> y, weights in NAME.onnx.data if external.

    Returns (path, block1, block2): w_k is block_k tiled to (width, width)."""
    rng = np.random.default_rng(seed)
    blocks = [(rng.standard_normal((BLOCK_ROWS, width)) / np.sqrt(width)).astype(np.float32) for _ in range(2)]
    tiles = width // BLOCK_ROWS
    path = folder / f"{name}.onnx"
    inits = []
    data = open(folder / f"{name}.onnx.data", "wb") if external else None
    for weight, block in zip(("w1", "w2"), blocks):
        tensor = TensorProto(name=weight, data_type=TensorProto.FLOAT, dims=[width, width])
        if external:
            offset = data.tell()
            for _ in range(tiles):
                data.write(block.tobytes())
            for key, value in (("location", f"{name}.onnx.data"), ("offset", offset), ("length", data.tell() - offset)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensor.data_location = TensorProto.EXTERNAL
        else:
            tensor.raw_data = np.tile(block, (tiles, 1)).tobytes()
        inits.append(tensor)
    if data:
        data.close()
    inits += [helper.make_tensor("scale", TensorProto.FLOAT, [width], np.ones(width, np.float32)),
              helper.make_tensor("bias", TensorProto.FLOAT, [width], np.zeros(width, np.float32))]
    # a constant in a node (as the exporter writes the sinusoidal position table): raw data, may go external
    shift = helper.make_tensor("shift", TensorProto.FLOAT, [width], np.full(width, 0.5, np.float32).tobytes(), raw=True)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("LayerNormalization", ["h", "scale", "bias"], ["n"], axis=-1, name="ln"),
             helper.make_node("MatMul", ["n", "w2"], ["m"], name="mm2"),
             helper.make_node("Constant", [], ["c"], value=shift, name="const"),
             helper.make_node("Add", ["m", "c"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))  # external tensors without raw_data: only the structure is written
    return path, blocks


def reference(x, blocks):
    """LN(x @ W1) @ W2 + 0.5 with W = block tiled: x @ W = (x summed over the tiles) @ block."""
    def matmul(v, block):
        return v.reshape(-1, BLOCK_ROWS).sum(axis=0, dtype=np.float64) @ block.astype(np.float64)

    h = matmul(x, blocks[0])
    n = (h - h.mean()) / np.sqrt(h.var() + 1e-5)
    return matmul(n, blocks[1]) + 0.5


# slow (30 s: a 2 GB graph written and streamed): after the suite, make test-slow-ci
@pytest.mark.slow
def test_fp16_build_input_of_a_graph_over_2_gb_is_streamed_into_external_data(tmp_path):
    """Two 1 GiB weights (2 GiB + LayerNorm): loading this into one proto and sizing it is what protobuf refuses."""
    if shutil.disk_usage(tmp_path).free < 4 << 30:
        pytest.skip("needs about 3.3 GB of free disk in the temp folder")
    width = 16384
    src, blocks = write_graph(tmp_path, width, external=True)
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) > 2**31  # over protobuf's limit
    write_graph(tmp_path, 256, external=False, name="small")
    files = {"vision": "small.onnx", "language": "big.onnx", "action_head": "small.onnx"}
    try:
        result = make_fp16(tmp_path, files)
        assert result["files"] == {"vision": "vision.fp16.onnx", "language": "language.fp16.onnx",
                                   "action_head": "small.onnx"}
        assert not (tmp_path / "vision.fp16.onnx.data").exists()  # a small graph stays one file
        out = tmp_path / "language.fp16.onnx"
        assert out.stat().st_size < 1 << 20  # the structure only
        data = tmp_path / "language.fp16.onnx.data"
        model = onnx.load(str(out), load_external_data=False)
        inits = {t.name: t for t in model.graph.initializer}
        assert {n: inits[n].data_type for n in inits} == {"w1": TensorProto.FLOAT16, "w2": TensorProto.FLOAT16,
                                                          "scale": TensorProto.FLOAT, "bias": TensorProto.FLOAT}
        # the LayerNorm (FP16_KEEP_FP32) reads fp32 behind a Cast; inputs and outputs stay fp32
        ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
        assert "LayerNormalization" in FP16_KEEP_FP32 and ln.input[0].endswith("_cast_to_fp32")
        assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
        assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
        # every weight's bytes, read back where the graph says they are: the fp16 of the source
        for name, block in zip(("w1", "w2"), blocks):
            info = ExternalDataInfo(inits[name])
            assert info.location == data.name and info.offset % external_data.ALIGN == 0
            assert info.length == width * width * 2
            got = np.memmap(data, np.float16, "r", offset=info.offset, shape=(width, width))
            for tile in (0, width // BLOCK_ROWS - 1):
                rows = slice(tile * BLOCK_ROWS, (tile + 1) * BLOCK_ROWS)
                np.testing.assert_array_equal(got[rows], convert_np_to_float16(block))
            del got
        onnx.checker.check_model(str(out))  # path-based: the checker reads the external data it needs
    finally:
        for f in tmp_path.iterdir():
            f.unlink()


def test_an_external_fp16_graph_runs_in_onnx_runtime_with_the_reference_numbers(tmp_path, monkeypatch):
    """The same graph at a small width, forced through the external-data path: ONNX Runtime loads it and
    computes LN(x @ W1) @ W2 within fp16 rounding; the inline path gives the same numbers."""
    width = 1024
    x = np.random.default_rng(1).standard_normal((1, width)).astype(np.float32)
    src, blocks = write_graph(tmp_path, width, external=False)
    want = reference(x, blocks)
    # every tensor outside, the node's constant too, as the exporter writes a graph over 2 GB
    onnx.save_model(onnx.load(str(src)), str(src), save_as_external_data=True, location="big.onnx.data",
                    size_threshold=0, convert_attribute=True)
    assert external_data._uses_external(onnx.load(str(src), load_external_data=False).graph.node[3].attribute[0].t)
    results = {}
    for limit in (0, 1 << 40):  # everything external / everything inline
        monkeypatch.setattr(external_data, "INLINE_LIMIT", limit)
        written = external_data.convert_to_fp16(tmp_path / "big.onnx", tmp_path / f"half{limit}.onnx", FP16_KEEP_FP32)
        assert (written["external_data"] is not None) == (limit == 0)
        session = ort.InferenceSession(str(tmp_path / f"half{limit}.onnx"), providers=["CPUExecutionProvider"])
        results[limit] = session.run(None, {"x": x})[0][0]
        cosine = results[limit] @ want / np.linalg.norm(results[limit]) / np.linalg.norm(want)
        assert cosine > 0.9999 and np.abs(results[limit] - want).max() < 2e-2 * np.abs(want).max()
    np.testing.assert_array_equal(results[0], results[1 << 40])


def test_half_is_the_converters_fp16_rounding_and_clamping():
    values = np.concatenate([np.random.default_rng(3).standard_normal(10000).astype(np.float32) * 1e-3,
                             np.float32([0, -0.0, 1e-9, -1e-9, 3e-8, -3e-8, 7e-5, 65504, 7e4, -1e6, np.inf])])
    np.testing.assert_array_equal(external_data.half(values), convert_np_to_float16(values))


def test_consolidate_gathers_one_file_per_tensor_into_one_data_file(tmp_path):
    width = 512
    src, blocks = write_graph(tmp_path, width, external=False)
    x = np.random.default_rng(2).standard_normal((1, width)).astype(np.float32)
    model = onnx.load(str(src))
    onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0,
                    convert_attribute=True)
    before = {f.name for f in tmp_path.iterdir()}
    assert {"w1", "w2", "shift"} <= before  # onnx's own one-file-per-tensor layout, as the exporter's
    external_data.consolidate_external_data(src)
    assert {f.name for f in tmp_path.iterdir()} == {"big.onnx", "big.onnx.data"}
    got = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0][0]
    np.testing.assert_allclose(got, reference(x, blocks), rtol=1e-4, atol=1e-4)


def _softmax_graph(path, softmax_type):
    """x (fp32) -> Cast(fp16) -> Softmax in `softmax_type` -> Cast(fp32) -> y: a build input in miniature."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="to_half")]
    if softmax_type == TensorProto.FLOAT:
        nodes += [helper.make_node("Cast", ["h"], ["f"], to=TensorProto.FLOAT, name="to_float"),
                  helper.make_node("Softmax", ["f"], ["s"], name="softmax"),
                  helper.make_node("Identity", ["s"], ["y"], name="out")]
    else:
        nodes += [helper.make_node("Softmax", ["h"], ["s"], name="softmax"),
                  helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT, name="to_float")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_the_fp16_build_input_check_passes_exports_and_names_what_breaks_it(tiny_bundle_dir, tmp_path):
    from onnx import TensorProto

    from export.external_data import check_fp16_build_input
    from export.variants import FP16_ISLANDS

    language = check_fp16_build_input(tiny_bundle_dir / "language.fp16.onnx", FP16_ISLANDS)
    vision = check_fp16_build_input(tiny_bundle_dir / "vision.fp16.onnx", FP16_ISLANDS)
    assert language["casts"] > 0 and {"LayerNormalization", "Softmax"} <= set(language["fp32_ops"])
    assert vision["fp32_ops"].get("ReduceL2", 0) >= 1
    assert check_fp16_build_input(_softmax_graph(tmp_path / "ok.onnx", TensorProto.FLOAT), FP16_ISLANDS)["casts"] == 2
    with pytest.raises(ValueError, match=r"ok16.onnx: Softmax 'softmax' must run in fp32 but its tensor 'h' is "
                                         r"FLOAT16"):
        check_fp16_build_input(_softmax_graph(tmp_path / "ok16.onnx", TensorProto.FLOAT16), FP16_ISLANDS)


def test_a_build_input_whose_weights_do_not_resolve_is_refused_naming_them(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.external_data import check_fp16_build_input

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    assert check_fp16_build_input(path, ())["external_weights"] == 1
    (tmp_path / "m.onnx.data").write_bytes(b"\0" * 100)  # a partial copy
    with pytest.raises(ValueError, match=r"m.onnx: weight 'w' points at m.onnx.data .* which is shorter"):
        check_fp16_build_input(path, ())
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ValueError, match="is missing"):
        check_fp16_build_input(path, ())


def test_shape_inference_is_strict_and_names_the_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from export.external_data import strict_shapes

    # Add of fp32 and int64: non-strict inference leaves y untyped and goes on, strict refuses
    other = helper.make_tensor("k", TensorProto.INT64, [1, 4], [1, 2, 3, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "k"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [other])
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(bad))
    with pytest.raises(ValueError, match=r"bad.onnx: ONNX shape inference \(strict\) failed"):
        strict_shapes(bad, str(tmp_path / "out.onnx"))
