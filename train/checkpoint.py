"""Checkpoint folders (docs/model.md, "The checkpoint folder"): config.json + model.safetensors + tokenizer.json.

    from train.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint(model, Path("ckpt"), tokenizer)                 # merged: self-contained
    save_checkpoint(model, Path("ckpt-lora"), tokenizer, kind="adapter")   # LoRA + ACT + head
    model, tokenizer, info = load_checkpoint(Path("ckpt"))

A merged checkpoint holds every weight. An adapter checkpoint holds only the
LoRA weights, ACT and the head and points at its base through the model
config (`weights`: a hub id / folder, or a random init from `seed`); a
fingerprint of the base weights is stored so an adapter is never silently
applied to a different base. Weights are safetensors only: nothing is
unpickled. Folders are written under a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from runtime.atomic import atomic_directory
from train.config import MobileVLAConfig
from train.lora import LoraSettings, apply_lora, has_lora, merge_lora
from train.model import MobileVLA

FORMAT = "mobile-vla-checkpoint"
FORMAT_VERSION = 1
KINDS = ("merged", "adapter")
FILES = ("config.json", "model.safetensors", "tokenizer.json")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the problem."""


def _is_adapter_key(key: str) -> bool:
    return "lora_" in key or key == "action_token" or key.startswith("head.")


def base_fingerprint(model: MobileVLA) -> str:
    """sha256 over the names, shapes and leading bytes of every frozen base weight."""
    h = hashlib.sha256()
    for name, t in sorted(model.kosmos.state_dict().items()):
        if "lora_" in name:
            continue
        name = name.replace("base_model.model.", "").replace(".base_layer", "")
        flat = t.detach().reshape(-1)[:1024].to(torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()


def write_checkpoint_files(model: MobileVLA, folder: Path, tokenizer, kind: str = "merged",
                           extra: dict | None = None) -> None:
    """Write config.json, model.safetensors and tokenizer.json into an existing folder (not atomic)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    lora = has_lora(model)
    if kind == "merged" and lora:
        raise ValueError("model still has LoRA layers: merge them first (train.lora.merge_lora) or save kind='adapter'")
    if kind == "adapter" and not lora:
        raise ValueError("an adapter checkpoint needs LoRA layers (train.lora.apply_lora)")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if kind == "adapter":
        state = {k: v for k, v in state.items() if _is_adapter_key(k)}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": model.config.to_dict(),
        "versions": {"torch": torch.__version__},
        **(extra or {}),
    }
    if kind == "adapter":
        meta["lora"] = model.lora_settings.to_dict()
        meta["base"] = {"weights": model.config.weights, "seed": model.config.seed,
                        "fingerprint": base_fingerprint(model)}
    folder = Path(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": FORMAT, "kind": kind})
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n")


def save_checkpoint(model: MobileVLA, out: Path, tokenizer, kind: str = "merged", overwrite: bool = False,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint folder atomically. `extra` is stored in config.json (e.g. training metadata)."""
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_checkpoint_files(model, tmp, tokenizer, kind, extra)
    return out


def read_checkpoint_config(path: Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder not found (expected a folder with {', '.join(FILES)})")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} is missing: not a Mobile-VLA checkpoint (expected {', '.join(FILES)})")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{cfg_file}: 'format' is {found!r}, expected {FORMAT!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_file}: format_version {meta['format_version']} is newer than this code "
                              f"understands ({FORMAT_VERSION}); upgrade mobile-vla-edge")
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"{cfg_file}: 'kind' is {meta.get('kind')!r}, expected one of {KINDS}")
    if "model" not in meta:
        raise CheckpointError(f"{cfg_file}: missing field 'model'")
    return meta


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is unreadable (truncated or not a safetensors file): {e}") from e


def _load_strict(model: torch.nn.Module, state: dict, file: Path, only_adapter: bool) -> None:
    expected = {k: v for k, v in model.state_dict().items() if not only_adapter or _is_adapter_key(k)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{file}: weights do not match the model in config.json: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{file}: {k} has shape {tuple(v.shape)}, "
                                  f"the model expects {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=not only_adapter)


def load_checkpoint(path: Path, merge: bool = False):
    """-> (model in eval mode, tokenizers.Tokenizer, config.json dict). `merge` folds an adapter's LoRA in."""
    path = Path(path)
    meta = read_checkpoint_config(path)
    config = MobileVLAConfig.from_dict(meta["model"], source=str(path / "config.json"))
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise CheckpointError(f"{tok_file} is missing")
    try:
        tokenizer = Tokenizer.from_file(str(tok_file))
    except Exception as e:  # tokenizers raises a plain Exception on bad JSON
        raise CheckpointError(f"{tok_file} is not a tokenizers JSON file: {e}") from e
    state = _load_tensors(path / "model.safetensors")
    if meta["kind"] == "merged":
        # The merged file carries every weight: skip downloading/initialising pretrained ones.
        model = MobileVLA(replace(config, weights=None))
        model.config = config  # keep where the base came from, for the record
        _load_strict(model, state, path / "model.safetensors", only_adapter=False)
    else:
        model = MobileVLA(config)
        want = meta.get("base", {}).get("fingerprint")
        got = base_fingerprint(model)
        if want and want != got:
            raise CheckpointError(
                f"{path / 'config.json'}: this adapter was trained on a different base model "
                f"(fingerprint {want[:12]}..., the base built from weights={config.weights!r} seed={config.seed} "
                f"gives {got[:12]}...)")
        apply_lora(model, LoraSettings.from_dict(meta.get("lora", {})))
        _load_strict(model, state, path / "model.safetensors", only_adapter=True)
        if merge:
            merge_lora(model)
    return model.eval(), tokenizer, meta
