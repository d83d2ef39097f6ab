"""Would a policy server gain from batching concurrent robots' frames through vision + language? Measured.

    python -m benchmarks.serve_batching --preset tiny --batch 8
    python -m benchmarks.serve_batching --preset small --batch 4 --repeats 5

The bundle's graphs are exported with batch 1 fixed. This re-exports the
vision and language graphs of a freshly built model of the preset (random
weights: timing does not depend on them) with a dynamic batch axis, then
times, on ONNX Runtime CPU, B robots' frames run one by one through the
batch-1 path against one call with all B, and checks the batched features
equal the one-by-one ones (to float tolerance). Prints ms per frame both ways
and the speed-up; docs/performance.md records the decision it supports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.prompt import build_prompt
from train.config import preset_config


def export_batched(preset: str, out: Path) -> tuple[Path, Path, dict]:
    """vision.onnx and language.onnx with a dynamic batch axis, and the prompt they take."""
    import torch  # noqa: PLC0415  torch: to export the graphs only

    from export.graphs import LanguageGraph, VisionGraph  # noqa: PLC0415  torch: to export the graphs only
    from export.to_onnx import OPSET  # noqa: PLC0415  torch: to export the graphs only
    from train.model import build_model, load_tokenizer  # noqa: PLC0415  torch: to export the graphs only

    config = preset_config(preset)
    model = build_model(config).eval()
    tokenizer = load_tokenizer(config)
    prompt = build_prompt(tokenizer, "reach the bottle on the left", latent_query_num=config.latent_query_num,
                          max_text_tokens=config.max_text_tokens, layout=config.prompt_layout)
    pixels = torch.zeros(2, 3, config.image_size, config.image_size)
    ids = torch.from_numpy(prompt.input_ids).repeat(2, 1)
    mask = torch.from_numpy(prompt.attention_mask).repeat(2, 1)
    with torch.no_grad():
        embeds = model.encode_images(pixels)
        vision, language = out / "vision.onnx", out / "language.onnx"
        torch.onnx.export(VisionGraph(model), (pixels,), str(vision), dynamo=False, opset_version=OPSET,
                          input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "B"}, "image_embeds": {0: "B"}})
        torch.onnx.export(LanguageGraph(model), (ids, mask, embeds), str(language), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask", "image_embeds"], output_names=["act_feature"],
                          dynamic_axes={"input_ids": {0: "B"}, "attention_mask": {0: "B"}, "image_embeds": {0: "B"},
                                        "act_feature": {0: "B"}})
    feeds = {"input_ids": prompt.input_ids, "attention_mask": prompt.attention_mask, "size": config.image_size}
    return vision, language, feeds


def measure(preset: str, batch: int, repeats: int) -> dict:
    import onnxruntime as ort  # noqa: PLC0415  onnxruntime: ~60 ms; the measurement only

    with tempfile.TemporaryDirectory(prefix="mvla-batch-") as tmp:
        vision_path, language_path, prompt = export_batched(preset, Path(tmp))
        opts = ort.SessionOptions()  # as runtime.policy.backends.onnxruntime sets them: full optimisation, no spinning
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        vision = ort.InferenceSession(str(vision_path), sess_options=opts, providers=["CPUExecutionProvider"])
        language = ort.InferenceSession(str(language_path), sess_options=opts, providers=["CPUExecutionProvider"])
    size = prompt["size"]
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((batch, 3, size, size)).astype(np.float32)

    def encode(p: np.ndarray) -> np.ndarray:
        n = len(p)
        embeds = vision.run(None, {"pixel_values": p})[0]
        return language.run(None, {"input_ids": np.repeat(prompt["input_ids"], n, 0),
                                   "attention_mask": np.repeat(prompt["attention_mask"], n, 0),
                                   "image_embeds": embeds})[0]

    encode(pixels[:1])
    encode(pixels)  # warm both shapes
    one_by_one, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        singles = np.concatenate([encode(pixels[i:i + 1]) for i in range(batch)])
        one_by_one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        together = encode(pixels)
        batched.append(time.perf_counter() - t0)
    diff = float(np.abs(singles - together).max())
    single_ms = statistics.median(one_by_one) / batch * 1e3
    batch_ms = statistics.median(batched) / batch * 1e3
    return {"preset": preset, "batch": batch, "ms_per_frame_one_by_one": round(single_ms, 2),
            "ms_per_frame_batched": round(batch_ms, 2), "speedup": round(single_ms / batch_ms, 2),
            "max_abs_difference": diff}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=("tiny", "small"))
    ap.add_argument("--batch", type=int, default=8, help="robots' frames per batched call")
    ap.add_argument("--repeats", type=int, default=10)
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    r = measure(args.preset, args.batch, args.repeats)
    print(f"{r['preset']}: {r['batch']} frames one by one {r['ms_per_frame_one_by_one']:.2f} ms/frame, batched "
          f"{r['ms_per_frame_batched']:.2f} ms/frame: x{r['speedup']:.2f} (max |diff| {r['max_abs_difference']:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
