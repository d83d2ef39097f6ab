"""Parity: the bundle's graphs (ONNX Runtime, or TensorRT engines) against PyTorch.

    python -m export.verify BUNDLE --ckpt CKPT                 # every variant in the bundle, ORT CPU
    python -m export.verify BUNDLE --ckpt CKPT --backend trt   # the TensorRT engines (fp16 tolerance)

For each variant and several inputs (camera-like frames from different
seeds): per graph (vision embeddings, ACT feature, head chunk for L = 1..W)
and end to end (frames -> runtime.policy with its ring -> chunk, against the
PyTorch windowed forward at every window position), the max abs difference
and the cosine similarity, printed as a table. Tolerances: fp32 actions max
abs < 1e-4; fp16, int8 and TensorRT: ACT-feature cosine >= 0.999 and actions
max abs < 2e-2. Exit status 1 when a variant fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from runtime.policy.backends.registry import make_backend
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy
from train.checkpoint import load_checkpoint
from train.examples import example_inputs

INPUT_SEEDS = (0, 101, 202)


def compare(ours: np.ndarray, ref: np.ndarray) -> dict:
    a = np.asarray(ours, np.float64).reshape(-1)
    b = np.asarray(ref, np.float64).reshape(-1)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cosine = float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))
    return {"max_abs": float(np.abs(a - b).max()), "cosine": cosine}


def _worst(rows: list[dict]) -> dict:
    return {"max_abs": max(r["max_abs"] for r in rows), "cosine": min(r["cosine"] for r in rows)}


def reference_outputs(model, example) -> dict:
    """PyTorch outputs for one example window: per-frame embeds/features and the windowed chunks."""
    with torch.no_grad():
        pixels = example.pixel_values[0]
        embeds = model.encode_images(pixels)
        feats = model.act_features_from_embeds(embeds, *example.prompt.expand(pixels.shape[0]).tensors())
        windowed = model(example.pixel_values, example.prompt)[0]  # (W, N, A)
    return {"pixels": pixels.numpy(), "embeds": embeds.numpy(), "features": feats.numpy(), "windowed": windowed.numpy()}


def check_backend(bundle, backend, model, tokenizer, seeds=INPUT_SEEDS) -> dict:
    """Compare one activated backend against PyTorch; returns worst-case metrics per output."""
    cfg = model.config
    ids = np.asarray([bundle.manifest["prompt"]["default_input_ids"]], np.int64)
    mask = np.asarray([bundle.manifest["prompt"]["default_attention_mask"]], np.int64)
    rows = {"image_embeds": [], "act_feature": [], "head_chunk": [], "end_to_end": []}
    for seed in seeds:
        ex = example_inputs(cfg, tokenizer, seed=seed)
        ref = reference_outputs(model, ex)
        for t in range(cfg.window):
            got = backend.run_graph("vision", {"pixel_values": ref["pixels"][t: t + 1]})["image_embeds"]
            rows["image_embeds"].append(compare(got, ref["embeds"][t]))
            # Language on PyTorch's embeddings, so each graph is judged on its own error.
            got = backend.run_graph("language", {"input_ids": ids, "attention_mask": mask,
                                                 "image_embeds": ref["embeds"][t: t + 1]})["act_feature"]
            rows["act_feature"].append(compare(got, ref["features"][t]))
            got = backend.predict_chunk(ref["features"][None, : t + 1])
            rows["head_chunk"].append(compare(got[0], ref["windowed"][t]))
        policy = Policy(bundle, backend)
        for t in range(cfg.window):
            step = policy.infer(ex.frames[t])
            rows["end_to_end"].append(compare(step.normalized_chunk, ref["windowed"][t]))
    return {name: _worst(r) for name, r in rows.items()}


def judge(metrics: dict, tolerance: dict) -> bool:
    act_ok = all(metrics[k]["max_abs"] < tolerance["action_max_abs"] for k in ("head_chunk", "end_to_end"))
    feat_ok = metrics["act_feature"]["cosine"] >= tolerance["feature_cosine"]
    return bool(act_ok and feat_ok)


def verify_bundle(bundle_dir: Path, model, tokenizer, variants=None, backend: str = "ort-cpu",
                  progress=print, seeds=INPUT_SEEDS) -> dict:
    """-> {variant: {"backend", "metrics", "tolerance", "passed"}}; prints a table."""
    bundle = load_bundle(bundle_dir)
    model = model.eval()
    report = {}
    targets = ([("trt", "fp16-engine")] if backend == "trt"
               else [(backend, v) for v in (variants or bundle.variants)])
    for backend_name, variant in targets:
        if backend_name == "trt":
            tolerance = {"action_max_abs": 2e-2, "feature_cosine": 0.999}
            runner = make_backend(bundle, "trt")
        else:
            tolerance = bundle.manifest["variants"][variant]["tolerance"]
            runner = make_backend(bundle, backend_name, variant=variant)
        with runner:
            metrics = check_backend(bundle, runner, model, tokenizer, seeds)
        report[variant] = {"backend": backend_name, "metrics": metrics, "tolerance": tolerance,
                           "passed": judge(metrics, tolerance), "input_windows": len(seeds)}
    progress(format_report(report))
    return report


def format_report(report: dict) -> str:
    lines = [f"{'variant':<12}{'backend':<9}{'output':<14}{'max abs':>12}{'cosine':>12}  result"]
    for variant, r in report.items():
        for name, m in r["metrics"].items():
            lines.append(f"{variant:<12}{r['backend']:<9}{name:<14}{m['max_abs']:>12.3e}{m['cosine']:>12.7f}")
        tol = r["tolerance"]
        lines.append(f"{'':<12}{'':<9}{'tolerance':<14}{tol['action_max_abs']:>12.0e}{tol['feature_cosine']:>12}  "
                     f"{'PASS' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--ckpt", type=Path, required=True, help="the checkpoint the bundle was exported from")
    ap.add_argument("--backend", default="ort-cpu", choices=("ort-cpu", "ort-cuda", "ort-trt", "trt"))
    ap.add_argument("--variant", action="append", help="only these variants (default: all in the bundle)")
    args = ap.parse_args(argv)

    model, tokenizer, _ = load_checkpoint(args.ckpt, merge=True)
    report = verify_bundle(args.bundle, model, tokenizer, args.variant, args.backend)
    return 0 if all(r["passed"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
