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
For TensorRT, fp16 happens in the engine build instead (export.to_trt).
"""

from __future__ import annotations

import time
from pathlib import Path

from runtime.bundle import GRAPHS

FP16_KEEP_FP32 = ["LayerNormalization", "Softmax", "ReduceL2", "CumSum", "Range"]
FP16_GRAPHS = ("vision", "language")  # the head stays fp32 (see above)
LOOSE_TOLERANCE = {"action_max_abs": 2e-2, "feature_cosine": 0.999}
# int8 weights move the VLM's features more than fp16 does (cosine ~0.998 on a trained tiny) while the
# actions stay within 1e-3; the actions are what the robot sees, so they keep the fp16 bound.
# The same bound as fp16. (On tiny, int8 weights move the ACT features by up to 0.4 and the check
# refuses the variant; on real widths it passes. docs/evaluation.md)
INT8_TOLERANCE = dict(LOOSE_TOLERANCE)


def make_fp16(workdir: Path, files: dict, progress=print) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    out = {"action_head": files["action_head"]}
    for graph in FP16_GRAPHS:
        start = time.perf_counter()
        model = onnx.load(str(workdir / files[graph]))
        half = convert_float_to_float16(model, keep_io_types=True,
                                        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + FP16_KEEP_FP32)
        out[graph] = f"{graph}.fp16.onnx"
        large = half.ByteSize() > 2 * 1024**3 - 64 * 1024**2
        onnx.save_model(half, str(workdir / out[graph]), save_as_external_data=large,
                        all_tensors_to_one_file=True, location=out[graph] + ".data")
        progress(f"fp16 {out[graph]} in {time.perf_counter() - start:.1f} s")
    return {"files": out, "tolerance": dict(LOOSE_TOLERANCE),
            "note": "vision and language in fp16 with fp32 I/O; LayerNorm, Softmax, ReduceL2 and the head in fp32"}


def make_int8(workdir: Path, files: dict, progress=print) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The head stays fp32 (as in fp16): it is a few percent of the time, and int8 LSTM weights moved a
    # trained tiny policy's actions by 2e-2, past the tolerance, while the VLM quantizes well.
    out = {"action_head": files["action_head"]}
    for graph in [g for g in GRAPHS if g != "action_head"]:
        start = time.perf_counter()
        out[graph] = f"{graph}.int8.onnx"
        src = workdir / files[graph]
        quantize_dynamic(str(src), str(workdir / out[graph]), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"],
                         # Weights only: quantizing attention's activation x activation MatMuls
                         # (QK^T, AV) costs most of the accuracy and little of the time.
                         extra_options={"MatMulConstBOnly": True},
                         use_external_data_format=(src.with_name(src.name + ".data")).exists())
        progress(f"int8 {out[graph]} in {time.perf_counter() - start:.1f} s")
    return {"files": out, "tolerance": dict(INT8_TOLERANCE),
            "note": "ONNX Runtime dynamic quantization, per-channel int8 weights (MatMul/Gemm) of vision and "
                    "language; the head in fp32"}
