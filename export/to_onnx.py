"""Export a checkpoint to a bundle: three ONNX graphs + bundle.json + tokenizer.json.

    python -m export.to_onnx CKPT --out bundle/                  # fp32, verified against PyTorch
    python -m export.to_onnx CKPT --out bundle/ --fp16 --int8    # plus the fp16 and int8 variants
    python -m export.to_onnx --preset tiny --out bundle/         # a fresh preset, no checkpoint
    python -m export.to_onnx --preset kosmos2 --random-weights --out bundle/   # real size, no download

Graphs are batch 1, static shapes (the head's window length L is the one
dynamic axis, 1..W), fp32, opset 17 (LayerNorm stays one
LayerNormalization node). For the GPU, the export also writes the
mixed-precision build inputs of vision and language (`engine_build` in
bundle.json: fp16 weights and activations, LayerNorm, Softmax and the L2
norm in fp32 behind Casts), which the strongly typed TensorRT builds parse
as they are (`jetson/build_engines.sh`, `python -m export.to_trt`): the
precision is the graph's, and half the parser's host memory, which an 8 GB
Orin Nano needs (`--no-engine-input` skips them for CPU-only bundles). They
are converted file to file (`export.external_data`), so the real 5.4 GB
language graph never has to fit in one protobuf message; graphs over 1 GiB
of weights keep them in GRAPH.onnx.data. `--fp16` registers
those files as an ONNX Runtime variant too (onnxruntime-gpu users), and
`--int8` adds a dynamically quantized ONNX for CPUs; `--serve-batch B`
adds vision and language with a batch axis for a policy server that
batches robots' frames (export.batch_graphs). Every export ends
with the parity check of `export.verify`; a bundle that fails it is not
written. The bundle folder appears complete or not at all.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from export.batch_graphs import check_batch_parity, export_batch_graphs
from export.external_data import consolidate_external_data
from export.graphs import ActionHeadGraph, LanguageGraph, VisionGraph
from export.variants import make_fp16, make_int8
from export.verify import INPUT_SEEDS, verify_bundle
from runtime.atomic import atomic_directory, atomic_write_text
from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.bundle import FORMAT, FORMAT_VERSION, GRAPHS, sha256_file, verification_record_path
from runtime.policy.prompt import PromptTooLongError, build_prompt, default_max_text_tokens, prompt_length
from train.checkpoint import CheckpointError, load_checkpoint
from train.config import preset_config
from train.model import build_model, load_tokenizer

OPSET = 17
log = logging.getLogger(__name__)
LAYOUT_DESCRIPTIONS = {
    "mobile-vla": "<s> <image> [Q image slots] </image> text <pad>... ACT(last)",
    "robovlms-fallback": "[Q image latents over <s> text </s> padded to Q] text beyond Q <pad>... ACT(last); "
                         "sequential positions",
}


def _spec(name: str, shape, dtype: str) -> dict:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def graph_specs(config, total_tokens: int) -> dict:
    q, d, s = config.latent_query_num, config.hidden_size, config.image_size
    return {
        "vision": {
            "inputs": [_spec("pixel_values", (1, 3, s, s), "float32")],
            "outputs": [_spec("image_embeds", (1, q, d), "float32")],
        },
        "language": {
            "inputs": [_spec("input_ids", (1, total_tokens), "int64"),
                       _spec("attention_mask", (1, total_tokens), "int64"),
                       _spec("image_embeds", (1, q, d), "float32")],
            "outputs": [_spec("act_feature", (1, d), "float32")],
        },
        "action_head": {
            # Dynamic L (not a mask over a fixed W): the ring holds 1..W features and the
            # LSTM must not see padding; TensorRT gets an optimisation profile min 1, opt/max W.
            "inputs": [_spec("act_features", (1, "L", d), "float32")],
            "outputs": [_spec("action_chunk", (1, config.chunk, config.action_axes), "float32")],
            "dynamic_axes": {"L": [1, config.window]},
        },
    }


def export_graph(module: torch.nn.Module, args: tuple, path: Path, spec: dict) -> None:
    names_in = [i["name"] for i in spec["inputs"]]
    names_out = [o["name"] for o in spec["outputs"]]
    dynamic = {}
    for i in spec["inputs"] + spec["outputs"]:
        axes = {ax: dim for ax, dim in enumerate(i["shape"]) if isinstance(dim, str)}
        if axes:
            dynamic[i["name"]] = axes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=names_in,
                          output_names=names_out, dynamic_axes=dynamic or None, do_constant_folding=True)
    consolidate_external_data(path)  # over 2 GB the exporter wrote one file per tensor


def export_fp32(model, workdir: Path, specs: dict, prompt) -> dict:
    cfg = model.config
    pixels = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    ids = torch.from_numpy(prompt.input_ids)
    mask = torch.from_numpy(prompt.attention_mask)
    with torch.no_grad():
        embeds = model.encode_images(pixels)
        feats = torch.zeros(1, cfg.window, cfg.hidden_size)
    jobs = {
        "vision": (VisionGraph(model), (pixels,)),
        "language": (LanguageGraph(model), (ids, mask, embeds)),
        "action_head": (ActionHeadGraph(model), (feats,)),
    }
    files = {}
    for graph in GRAPHS:
        module, args = jobs[graph]
        start = time.perf_counter()
        export_graph(module, args, workdir / f"{graph}.onnx", specs[graph])
        files[graph] = f"{graph}.onnx"
        log.info("exported %s.onnx in %.1f s", graph, time.perf_counter() - start)
    return files


def _versions() -> dict:
    import onnx  # noqa: PLC0415  onnx: ~1 s; the version record only
    import onnxruntime  # noqa: PLC0415  onnxruntime: the version record only
    import transformers  # noqa: PLC0415  transformers: ~2 s; the version record only

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": OPSET}


def build_manifest(model, ckpt_meta: dict, specs: dict, prompt, max_text_tokens: int, files: dict,
                   source: str) -> dict:
    cfg = model.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"checkpoint": source, "kind": ckpt_meta.get("kind", "merged")},
        "model": {"preset": cfg.preset, "hidden_size": cfg.hidden_size, "latent_query_num": cfg.latent_query_num},
        "graphs": {g: {"file": files[g], **specs[g]} for g in GRAPHS},
        "variants": {"fp32": {"files": files, "tolerance": {"action_max_abs": 1e-4, "feature_cosine": 0.9999}}},
        "engines": [],
        "preprocess": cfg.preprocess_config().to_dict(),
        "prompt": {
            "template": cfg.prompt_template,
            "max_text_tokens": max_text_tokens,
            "latent_query_num": cfg.latent_query_num,
            "total_tokens": prompt.length,
            "layout": cfg.prompt_layout,
            "layout_description": LAYOUT_DESCRIPTIONS[cfg.prompt_layout],
            "default_instruction": cfg.default_instruction,
            "default_input_ids": prompt.input_ids[0].tolist(),
            "default_attention_mask": prompt.attention_mask[0].tolist(),
        },
        "policy": {"window": cfg.window, "chunk": cfg.chunk, "action_axes": cfg.action_axes,
                   "axis_names": list(cfg.axis_names), "head_input": "dynamic L in [1, W], oldest first"},
        "actions": {"range": cfg.action_range, "units": list(cfg.action_units[: cfg.action_axes]),
                    "normalisation": "model output in [-1, 1] times range = robot units"},
        "versions": _versions(),
        "files": {},
        **({"driving": ckpt_meta["driving"]} if "driving" in ckpt_meta else {}),  # runtime.driving
    }


def write_manifest(workdir: Path, manifest: dict) -> None:
    # Hidden files are not part of the bundle: the loader's verification record (.verified.json), temp files.
    files = sorted(p.name for p in workdir.iterdir() if p.is_file() and p.name != "bundle.json"
                   and not p.name.startswith("."))
    manifest["files"] = {name: {"sha256": sha256_file(workdir / name), "bytes": (workdir / name).stat().st_size}
                         for name in files}
    (workdir / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")


def load_model(args):
    """(model, tokenizer, checkpoint config.json dict, source) from CKPT or --preset."""
    if args.ckpt:
        model, tokenizer, meta = load_checkpoint(args.ckpt, merge=True)
        return model, tokenizer, meta, str(args.ckpt)

    cfg = preset_config(args.preset, random_weights=args.random_weights, seed=args.seed)
    return build_model(cfg), load_tokenizer(cfg), {"kind": "merged"}, f"preset:{args.preset}"


@dataclass(frozen=True)
class ExportOptions:
    """How `export_bundle` writes a bundle; each default is the CLI's."""

    origin: str = "model"  # what bundle.json records as the bundle's source (a checkpoint folder, preset:NAME)
    max_text_tokens: int | None = None  # text positions of the fixed prompt; None: the template's + 32
    fp16: bool = False  # register the fp16 ONNX as a variant (onnxruntime-gpu)
    int8: bool = False  # add the int8 dynamically quantized variant (CPUs)
    int8_scope: str = "all"  # int8 on every weight MatMul ("all") or the feed-forward ones only ("ffn")
    engine_input: bool = True  # write the fp16 build inputs TensorRT engine builds parse
    verify: bool = True  # the parity check against PyTorch; fp32 must pass or nothing is written
    verify_seeds: tuple[int, ...] = INPUT_SEEDS  # input windows of the parity check
    strict_variants: bool = True  # False: a failing fp16/int8 variant is kept, marked parity.passed = false
    overwrite: bool = False  # replace an existing output folder
    serve_batch: int = 0  # >= 2: add vision/language batch graphs (B in [1, serve_batch]) for a batching server


def export_bundle(model, tokenizer, out: Path, options: ExportOptions = ExportOptions(),
                  ckpt_meta: dict | None = None) -> Path:
    """Export, verify and atomically write a bundle. Returns the bundle folder.

    fp32 must pass its parity check or nothing is written. With strict_variants=False a failing fp16/int8
    variant is kept with parity.passed = false (the benchmarks measure speed on presets where int8 is
    known to be inaccurate, e.g. tiny); the runtime warns before using such a variant.
    """
    cfg = model.config
    model = model.eval()
    max_text_tokens = options.max_text_tokens or default_max_text_tokens(tokenizer, cfg.prompt_template,
                                                                         cfg.prompt_layout, cfg.latent_query_num)
    # Refuse an instruction that does not fit before spending minutes on the export.
    prompt = build_prompt(tokenizer, cfg.default_instruction, cfg.latent_query_num, max_text_tokens,
                          cfg.prompt_template, layout=cfg.prompt_layout)
    assert prompt.length == prompt_length(cfg.latent_query_num, max_text_tokens, cfg.prompt_layout)
    specs = graph_specs(cfg, prompt.length)
    out = Path(out)
    with atomic_directory(out, overwrite=options.overwrite) as tmp:
        files = export_fp32(model, tmp, specs, prompt)
        tokenizer.save(str(tmp / "tokenizer.json"))
        manifest = build_manifest(model, ckpt_meta or {}, specs, prompt, max_text_tokens, files, options.origin)
        if options.fp16 or options.engine_input:
            half = make_fp16(tmp, files)
            if options.fp16:
                manifest["variants"]["fp16"] = half
            if options.engine_input:
                manifest["engine_build"] = {
                    "files": half["files"],
                    "note": "what TensorRT builds parse (strongly typed): fp16 weights and activations, "
                            "LayerNorm/Softmax/ReduceL2 and the head in fp32; runtime.engines.build_inputs"}
        if options.int8:
            manifest["variants"]["int8"] = make_int8(tmp, files, scope=options.int8_scope)
        if options.serve_batch:
            batch = export_batch_graphs(model, tmp, specs, prompt, options.serve_batch, export_graph)
            manifest["graphs"].update(batch["graphs"])
            manifest["serving_batch"] = batch["serving_batch"]
            parity = check_batch_parity(tmp, files, batch["serving_batch"], prompt, cfg.image_size)
            manifest["serving_batch"]["parity"] = parity
            if not parity["passed"]:
                raise ParityError(f"batch graphs differ from the batch-1 graphs by "
                                  f"{parity['vs_batch1_graphs_max_abs']:.1e} (tolerance {parity['tolerance']:.0e}); "
                                  f"no bundle written to {out}")
        write_manifest(tmp, manifest)
        if options.verify:
            report = verify_bundle(tmp, model, tokenizer, progress=log.info, seeds=options.verify_seeds)
            for variant, result in report.items():
                manifest["variants"][variant]["parity"] = result
            write_manifest(tmp, manifest)
            # the loader's verification record of the temporary folder: no use to whoever receives the bundle
            verification_record_path(tmp).unlink(missing_ok=True)
            failed = [v for v, r in report.items() if not r["passed"] and (options.strict_variants or v == "fp32")]
            if failed:
                hint = ("; narrow models lose too much to int8 on every MatMul: try --int8-scope ffn"
                        if "int8" in failed and options.int8_scope == "all" else "")
                raise ParityError(f"parity check failed for {', '.join(failed)}; no bundle written to {out}{hint}")
    return out


class ParityError(RuntimeError):
    pass


def add_batch_graphs(model, bundle_dir, max_batch: int) -> dict:
    """Add the batch graphs to an existing bundle exported from `model` (the parity check against the bundle's
    own batch-1 graphs refuses another model): files first, then bundle.json, each replaced atomically.
    Returns the `serving_batch` record."""

    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    p = manifest["prompt"]
    prompt = SimpleNamespace(input_ids=np.asarray([p["default_input_ids"]], np.int64),
                             attention_mask=np.asarray([p["default_attention_mask"]], np.int64))
    specs = {g: manifest["graphs"][g] for g in ("vision", "language")}
    work = Path(tempfile.mkdtemp(prefix=".batch-graphs-", dir=bundle_dir))
    try:
        batch = export_batch_graphs(model.eval(), work, specs, prompt, max_batch, export_graph)
        fp32 = manifest["variants"]["fp32"]["files"]
        for graph in ("vision", "language"):  # the parity check reads the bundle's batch-1 graphs beside them
            os.link(bundle_dir / fp32[graph], work / fp32[graph])
        parity = check_batch_parity(work, fp32, batch["serving_batch"], prompt, model.config.image_size)
        if not parity["passed"]:
            raise ParityError(f"{bundle_dir}: the batch graphs differ from the bundle's batch-1 graphs by "
                              f"{parity['vs_batch1_graphs_max_abs']:.1e}: was the bundle exported from this model?")
        batch["serving_batch"]["parity"] = parity
        for file in batch["serving_batch"]["files"].values():
            os.replace(work / file, bundle_dir / file)
            manifest["files"][file] = {"sha256": sha256_file(bundle_dir / file),
                                       "bytes": (bundle_dir / file).stat().st_size}
        manifest["graphs"].update(batch["graphs"])
        manifest["serving_batch"] = batch["serving_batch"]
        atomic_write_text(bundle_dir / "bundle.json", json.dumps(manifest, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest["serving_batch"]


@exits_on(CheckpointError, PromptTooLongError, FileExistsError, ParityError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", nargs="?", type=Path, help="checkpoint folder (merged or adapter)")
    ap.add_argument("--preset", choices=("tiny", "small", "kosmos2"), help="export a fresh preset instead of CKPT")
    ap.add_argument("--random-weights", action="store_true", help="with --preset kosmos2: real size, no download")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    ap.add_argument("--max-text-tokens", type=int, help="text positions of the fixed prompt (default: template + 32)")
    ap.add_argument("--fp16", action="store_true", help="add an fp16 ONNX variant (onnxruntime-gpu)")
    ap.add_argument("--int8", action="store_true", help="add an int8 dynamically quantized variant (CPU)")
    ap.add_argument("--no-engine-input", action="store_true",
                    help="skip the fp16-weights ONNX that TensorRT engine builds parse (CPU-only bundles)")
    ap.add_argument("--int8-scope", choices=("all", "ffn"), default=ExportOptions.int8_scope,
                    help="int8 on every weight MatMul (fastest), or on the feed-forward ones only (narrow models)")
    ap.add_argument("--serve-batch", type=int, default=ExportOptions.serve_batch, metavar="B",
                    help="add vision/language graphs with a batch axis up to B, for python -m serve --max-batch B")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    ap.add_argument("--no-verify", action="store_true", help="skip the parity check (not recommended)")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    if bool(args.ckpt) == bool(args.preset):
        ap.error("give either CKPT or --preset")

    start = time.perf_counter()
    model, tokenizer, meta, source = load_model(args)
    options = ExportOptions(origin=source, max_text_tokens=args.max_text_tokens, fp16=args.fp16, int8=args.int8,
                            int8_scope=args.int8_scope, engine_input=not args.no_engine_input,
                            verify=not args.no_verify, overwrite=args.overwrite, serve_batch=args.serve_batch)
    export_bundle(model, tokenizer, args.out, options, ckpt_meta=meta)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(args.out.glob("*.onnx*")))
    print(f"bundle written to {args.out} in {time.perf_counter() - start:.1f} s ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
