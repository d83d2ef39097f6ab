"""Vision and language with a dynamic batch axis, for a policy server that batches robots' frames.

    python -m export.to_onnx CKPT --out bundle/ --serve-batch 8      # adds vision.batch.onnx, language.batch.onnx
    export.to_onnx.add_batch_graphs(model, "bundle/", max_batch=8)   # the same, to a bundle exported before

The bundle's graphs are batch 1 with static shapes (what a robot runs and
TensorRT builds). A server that batches concurrent robots' frames
(`python -m serve --max-batch 8 --batch-window-ms 2`, docs/serving.md) needs
the same two graphs with a batch axis B in [1, max_batch]: exported from the
same modules, recorded in bundle.json as the graphs `vision_batch` and
`language_batch` and under `serving_batch` (max_batch, files, parity), and
checked here on ONNX Runtime's CPU, B different frames:

- batched against each frame alone through the same batch graphs: on the
  CPU every row of a MatMul, a LayerNorm or a Softmax is computed alone, so
  a frame's feature does not depend on the frames batched with it
  (`batched_vs_alone_max_abs`, 0 on tiny);
- against the batch-1 graphs (`vs_batch1_graphs_max_abs`, 2.4e-7 on tiny):
  not 0, because ONNX Runtime fuses the static graph's MatMul + Add into
  Gemm and cannot with a batch axis. A server batching frames therefore
  says it computes other graphs than a robot's (its metadata's `compute`),
  and the robot reports the difference it measures. Over the fp32 tolerance
  the export fails.
"""

from __future__ import annotations

import numpy as np
import torch

from export.graphs import LanguageGraph, VisionGraph

BATCH_AXIS = "B"
TOLERANCE = 1e-5  # max |difference| of an ACT feature, batched vs one by one (fp32); measured: 0 on the CPU


def batch_specs(specs: dict, max_batch: int) -> dict:
    """The batch-1 specs of vision and language with axis 0 made the dynamic axis B in [1, max_batch]."""
    out = {}
    for graph in ("vision", "language"):
        out[f"{graph}_batch"] = {
            kind: [{**t, "shape": [BATCH_AXIS, *t["shape"][1:]]} for t in specs[graph][kind]]
            for kind in ("inputs", "outputs")}
        out[f"{graph}_batch"]["dynamic_axes"] = {BATCH_AXIS: [1, max_batch]}
    return out


def export_batch_graphs(model, workdir, specs: dict, prompt, max_batch: int, export_graph) -> dict:
    """Write vision.batch.onnx and language.batch.onnx; returns the manifest's graph entries and `serving_batch`."""
    if max_batch < 2:
        raise ValueError(f"--serve-batch must be at least 2, found {max_batch}")
    cfg = model.config
    entries = batch_specs(specs, max_batch)
    pixels = torch.zeros(2, 3, cfg.image_size, cfg.image_size)  # traced at 2: a batch axis, not a constant 1
    ids = torch.from_numpy(prompt.input_ids).repeat(2, 1)
    mask = torch.from_numpy(prompt.attention_mask).repeat(2, 1)
    with torch.no_grad():
        embeds = model.encode_images(pixels)
    files = {"vision": "vision.batch.onnx", "language": "language.batch.onnx"}
    export_graph(VisionGraph(model), (pixels,), workdir / files["vision"], entries["vision_batch"])
    export_graph(LanguageGraph(model), (ids, mask, embeds), workdir / files["language"], entries["language_batch"])
    for graph, file in files.items():
        entries[f"{graph}_batch"] = {"file": file, **entries[f"{graph}_batch"]}
    serving = {"max_batch": max_batch, "files": files,
               "graphs": {"vision": "vision_batch", "language": "language_batch"},
               "note": "vision and language with a batch axis for a policy server's --max-batch; the batch-1 "
                       "graphs stay what robots and TensorRT builds run"}
    return {"graphs": entries, "serving_batch": serving}


def check_batch_parity(workdir, fp32_files: dict, serving: dict, prompt, image_size: int) -> dict:
    """B random frames (different prompts' rows alike) batched vs one by one through the batch-1 graphs."""
    import onnxruntime as ort  # noqa: PLC0415  onnxruntime: the check only

    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def session(name):
        return ort.InferenceSession(str(workdir / name), sess_options=opts, providers=["CPUExecutionProvider"])

    single = {g: session(fp32_files[g]) for g in ("vision", "language")}
    batch = {g: session(serving["files"][g]) for g in ("vision", "language")}
    n = serving["max_batch"]
    pixels = np.random.default_rng(0).standard_normal((n, 3, image_size, image_size)).astype(np.float32)
    ids, mask = np.repeat(prompt.input_ids, n, 0), np.repeat(prompt.attention_mask, n, 0)

    def encode(sessions, p, i, m):
        embeds = sessions["vision"].run(None, {"pixel_values": p})[0]
        return sessions["language"].run(None, {"input_ids": i, "attention_mask": m, "image_embeds": embeds})[0]

    together = encode(batch, pixels, ids, mask)
    alone = np.concatenate([encode(batch, pixels[k:k + 1], ids[k:k + 1], mask[k:k + 1]) for k in range(n)])
    static = np.concatenate([encode(single, pixels[k:k + 1], ids[k:k + 1], mask[k:k + 1]) for k in range(n)])
    vs_static = float(np.abs(together - static).max())
    return {"frames": n, "batched_vs_alone_max_abs": float(np.abs(together - alone).max()),
            "vs_batch1_graphs_max_abs": vs_static, "tolerance": TOLERANCE, "passed": vs_static <= TOLERANCE,
            "device": "onnxruntime CPU"}

