"""Reduced-precision ONNX variants of a bundle's fp32 graphs.

    make_fp16(bundle_dir, files)   # vision.fp16.onnx ... for onnxruntime-gpu (CUDA EP)
    make_int8(bundle_dir, files)   # vision.int8.onnx ... for CPUs (dynamic quantization)

fp16: weights and most ops in fp16, inputs and outputs stay fp32 so the
runtime feeds the same arrays; LayerNormalization, Softmax and the L2 norm
(ReduceL2) stay in fp32 because their sums of squares and exponentials
overflow or lose the small differences that matter in fp16. The action head
stays the fp32 graph: a half LSTM crashes ONNX Runtime's CPU build at load,
and the head is a rounding error of the step time next to the VLM.
int8: ONNX Runtime dynamic quantization, per-channel int8 weights, with
activations quantized on the fly; MatMul/Gemm only, which is where the time
goes on a CPU (the head's LSTM is small and stays fp32).
The same fp16 files are what TensorRT builds parse (`engine_build` in bundle.json): the engine is built
strongly typed, so it runs each layer in the type the graph gives it (export.to_trt).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from export.external_data import check_fp16_build_input, convert_to_fp16
from runtime.policy.bundle import GRAPHS

log = logging.getLogger(__name__)

FP16_KEEP_FP32 = ["LayerNormalization", "Softmax", "ReduceL2", "CumSum", "Range"]
FP16_ISLANDS = ("LayerNormalization", "Softmax", "ReduceL2")  # checked fp32 in every build input (numerics)
FP16_GRAPHS = ("vision", "language")  # the head stays fp32 (see above)
LOOSE_TOLERANCE = {"action_max_abs": 2e-2, "feature_cosine": 0.999}
# int8 weights move the VLM's features more than fp16 does (cosine ~0.998 on a trained tiny) while the
# actions stay within 1e-3; the actions are what the robot sees, so they keep the fp16 bound.
# int8 is lossier by design: on tiny's 64-wide layers the FFN-only variant moves actions by ~5e-2 while
# its discrete moves agree with fp32 on 0.985 of held-out frames (docs/evaluation.md), so its bound is
# 0.1 on actions (5% of the range) and 0.99 cosine on features; decisions are checked by sim.evaluate.
INT8_TOLERANCE = {"action_max_abs": 0.1, "feature_cosine": 0.99}


def make_fp16(workdir: Path, files: dict) -> dict:
    """GRAPH.fp16.onnx for vision and language, converted file to file (any size: export.external_data)."""
    out = {"action_head": files["action_head"]}
    for graph in FP16_GRAPHS:
        start = time.perf_counter()
        out[graph] = f"{graph}.fp16.onnx"
        written = convert_to_fp16(workdir / files[graph], workdir / out[graph], keep_fp32_ops=FP16_KEEP_FP32)
        checked = check_fp16_build_input(workdir / out[graph], FP16_ISLANDS)
        where = f" + {written['external_data']}" if written["external_data"] else ""
        log.info("fp16 %s%s (%.2f GB of weights) in %.1f s; checked: %d external weights resolve, %d Casts typed, "
                 "fp32 %s", out[graph], where, written["weights_bytes"] / 1e9, time.perf_counter() - start,
                 checked["external_weights"], checked["casts"], checked["fp32_ops"])
    return {"files": out, "tolerance": dict(LOOSE_TOLERANCE),
            "note": "vision and language in fp16 with fp32 I/O; LayerNorm, Softmax, ReduceL2 and the head in fp32"}


FFN_MATMULS = ("/mlp/fc1/", "/mlp/fc2/", "/ffn/fc1/", "/ffn/fc2/")  # vision MLP, text decoder FFN


def attention_and_projection_matmuls(path: Path) -> list[str]:
    """MatMul/Gemm nodes outside the feed-forward blocks: what int8 leaves in fp32."""
    import onnx  # noqa: PLC0415  onnx: ~1 s; fp16/int8 variants only

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and not any(k in n.name for k in FFN_MATMULS)]


def make_int8(workdir: Path, files: dict, scope: str = "all") -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415  onnxruntime: ~2 s; int8 only

    # scope "all": every weight MatMul of vision and language (the fastest; at real widths within the
    # fp16 bound). scope "ffn": the feed-forward MatMuls only (2/3 of a Kosmos-2 layer's weights, 8d^2
    # of 12d^2); attention and the image-to-text projection stay fp32. On the demo's tiny policy
    # (64-wide layers; held-out recordings, discrete moves) fp32 vs int8 move agreement was 0.91 with
    # "all" and 0.985 with "ffn". The head stays fp32 in both: int8 LSTM weights alone moved actions 2e-2.
    if scope not in ("all", "ffn"):
        raise ValueError(f"int8 scope must be 'all' or 'ffn', got {scope!r}")
    out = {"action_head": files["action_head"]}
    for graph in [g for g in GRAPHS if g != "action_head"]:
        start = time.perf_counter()
        out[graph] = f"{graph}.int8.onnx"
        src = workdir / files[graph]
        quantize_dynamic(str(src), str(workdir / out[graph]), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"],
                         nodes_to_exclude=attention_and_projection_matmuls(src) if scope == "ffn" else [],
                         extra_options={"MatMulConstBOnly": True},
                         use_external_data_format=(src.with_name(src.name + ".data")).exists())
        log.info("int8 %s in %.1f s", out[graph], time.perf_counter() - start)
    what = "every weight MatMul" if scope == "all" else "the feed-forward MatMuls"
    return {"files": out, "tolerance": dict(INT8_TOLERANCE), "scope": scope,
            "note": f"ONNX Runtime dynamic quantization, per-channel int8 weights of {what} of vision and "
                    f"language; the rest and the head in fp32"}
