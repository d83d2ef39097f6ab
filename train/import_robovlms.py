"""Import a checkpoint of the original RoboVLMs / Mobile-VLA stack into our checkpoint format.

    python -m train.import_robovlms epoch=9.ckpt --out imported/ --pixel-norm unit --instruction "go to the bottle"
    python -m train.import_robovlms epoch=9.ckpt --out imported/          # no flags: warns what it assumed
    python -m train.import_robovlms head.ckpt --out imported/ --base microsoft/kosmos-2-patch14-224
    python -m export.to_onnx imported/ --out bundle/                      # drives as it was trained
    python -m train.fit --init imported/ --data episodes/ ...             # or move to our layout

What the file holds (a Lightning `.ckpt`, loaded with `torch.load(weights_only=True)`;
anything that needs arbitrary unpickling is refused):
- `state_dict`: the backbone (transformers' Kosmos2Model) under `model.backbone.*`;
  LoRA runs also hold peft's second registration of the same modules under
  `model.model.base_model.model.*`, each LoRA'd Linear as `.base_layer.{weight,bias}`,
  `.lora_A.default.weight` (r x in) and `.lora_B.default.weight` (out x r); the head
  (`MobileVLALSTMDecoder`) as `model.act_head.rnn.*` (LSTM 2048 -> H, L layers) and
  `model.act_head.velocities.mlp.{0,2,4,6}.*` (Linear H->1024, ReLU, 1024->512, ReLU,
  512->256, ReLU, 256->N*A, Tanh); `model.action_token`.
- `hyper_parameters["configs"]`: `window_size`, `fwd_pred_next_n`, `act_head`
  (`hidden_size`, `action_dim`, ...), `train_setup` (`lora_r`, `lora_alpha`); any of it
  may be missing, so H, L, N, A come from it where present and from the tensor shapes
  otherwise (W, which no tensor holds, defaults to 8 and the report says so).
- `optimizer_states`, `lr_schedulers`, `callbacks`, `epoch`, `global_step`,
  `pytorch-lightning_version`: training state, recorded and not imported.

Every key is accounted for in `import_report.json` (saved in the output folder and
summarised on screen): mapped, duplicate (peft's second registration: checked equal,
mapped once), LoRA folded (W + B A * alpha / r with the stored alpha), dropped on
purpose (the language-model head, tied to the embeddings and unused here) or
unmatched (refused unless `--allow-missing`). A head of another type is refused naming
its keys. Backbone weights the file lacks come from the pretrained Kosmos-2 (`--base`,
a hub id, a transformers folder or one of our merged checkpoint folders) and the report
says so; without `--base` such a file is refused: nothing is ever left random.

The imported checkpoint carries a driving record (runtime.policy.driving) saying how the original robot drove:
step mode, discrete moves, 0.4 s per move; the exported bundle drives so unless told otherwise.
The imported checkpoint records the original's feature path as its prompt layout
(`robovlms-fallback`, runtime/policy/prompt.py) and its channel-order quirk (the stored BGR
bytes went into the model unconverted: `model_channel_order: "bgr"`), so the exported
bundle drives exactly as the checkpoint was trained. docs/migrating.md explains how to
re-fit it onto our layout instead.

What no tensor holds is taken from the flags and recorded (config.json, bundle.json): the pixel
normalisation (`--pixel-norm unit`: pixels / 255, the fork's dataset before its commit of
2026-02-03; `clip`: CLIP mean/std, after it) and the training instruction (`--instruction`, else
the stored one, else the preset's); what had to be assumed is a loud warning on screen and in the
report.

Steps: read_original (file -> our names) -> head_dimensions / training_vintage -> backbone_preset
and complete_backbone (from --base where the file lacks tensors) -> assemble -> write_import.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from runtime.atomic import atomic_directory
from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.driving import Driving
from runtime.policy.preprocess import PIXEL_NORMS, PreprocessConfig
from runtime.policy.prompt import DEFAULT_INSTRUCTION, build_prompt, default_max_text_tokens
from train.checkpoint import write_checkpoint_files
from train.config import PRESETS, MobileVLAConfig, preset_config
from train.model import ActionHead, MobileVLA, is_checkpoint_folder, load_kosmos, load_tokenizer
from train.tokenizer import KOSMOS2_HUB_ID

log = logging.getLogger(__name__)
REPORT_FILE = "import_report.json"
# How the original robot drove what this head predicts (its collector's key presses): each action one 0.4 s move,
# then a stop; only the direction reached the motors (docs/original-stack.md), so each axis snaps to a move.
ORIGINAL_DRIVING = Driving(mode="step", discrete=True, frame_spacing_s=0.4,
                           source="imported: the original robot drove each action as one discrete 0.4 s move "
                                  "(train.import_robovlms, docs/migrating.md)")
DEFAULT_WINDOW = MobileVLAConfig.window  # no tensor holds W: our default (the seed run's 8), said in the report
# The fork's dataset fed pixels / 255 ("unit") until its commit of 2026-02-03, CLIP mean/std ("clip") after; a
# checkpoint does not say which. The later one is assumed, with a warning.
DEFAULT_PIXEL_NORM = PreprocessConfig.pixel_norm
PIXEL_NORM_WARNING = (
    "PIXEL NORMALISATION NOT KNOWN: the checkpoint does not say how its pixels were normalised. The Mobile-VLA "
    "fork's dataset fed pixels scaled to [0, 1] with no mean/std (--pixel-norm unit) until its commit of "
    "2026-02-03, and CLIP mean/std (--pixel-norm clip) after it. 'clip' was assumed; if this run was trained "
    "before 2026-02-03, import again with --pixel-norm unit. The wrong one moves every action.")
# Where a stored training instruction is looked for in hyper_parameters["configs"] (the fork's configs name it in
# one of these when they name it at all).
INSTRUCTION_KEYS = (("instruction",), ("train_dataset", "instruction"), ("train_dataset", "task_instruction"))
INSTRUCTION_WARNING = (
    "TRAINING INSTRUCTION NOT KNOWN: the checkpoint stores none. In the original's feature path the instruction "
    "decides how many image latents the ACT token sees (its token count), so the preset's default instruction "
    "was assumed; import again with --instruction 'the instruction it was trained with'.")
DROPPED = {re.compile(r"^backbone\.text_model\.lm_head\."):
           "language-model head: tied to the embeddings, unused for ACT"}
# The Lightning module's attribute (`model.`) is removed first; then peft's wrappers, wherever they sit.
PEFT_PREFIXES = (("model.base_model.model.", "backbone."),  # the peft wrapper registered a second time as `.model`
                 ("backbone.base_model.model.", "backbone."),  # the peft wrapper registered as `.backbone`
                 ("base_model.model.", ""))  # the whole policy wrapped by peft
LORA_KEY = re.compile(r"^(?P<stem>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
LSTM_KEY = re.compile(r"^act_head\.(?:rnn|lstm)\.(?P<param>(?:weight|bias)_(?:ih|hh)_l(?P<layer>\d+))$")
MLP_KEY = re.compile(r"^act_head\.(?P<group>(?:velocities\.|actions\.)?mlp)\.(?P<index>\d+)\.(?P<param>weight|bias)$")


class ImportRefused(ValueError):
    """A file this importer will not turn into a checkpoint; the message names the file and the keys."""


def canonical_key(key: str) -> str:
    """Source key -> one name per tensor: `backbone.<Kosmos2Model key>`, `act_head.*`, `action_token`, ..."""
    k = key[len("model."):] if key.startswith("model.") else key
    changed = True
    while changed:
        changed = False
        for prefix, repl in PEFT_PREFIXES:
            if k.startswith(prefix):
                k, changed = repl + k[len(prefix):], True
                break
    return k


def load_lightning(path: Path) -> tuple[dict, dict, list[str]]:
    """-> (state_dict, hyper_parameters["configs"] or {}, the file's top-level fields)."""
    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError and friends
        raise ImportRefused(f"{path}: cannot be loaded with weights_only=True (it needs arbitrary unpickling, "
                           f"which is refused for safety): {e}") from e
    if not isinstance(obj, dict):
        raise ImportRefused(f"{path}: expected a Lightning checkpoint (a dict with 'state_dict'), "
                            f"found {type(obj).__name__}")
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportRefused(f"{path}: no 'state_dict' of tensors found (top-level keys: {sorted(map(str, obj))[:10]})")
    hyper = obj.get("hyper_parameters")
    configs = hyper.get("configs") if isinstance(hyper, dict) else None
    return state, configs if isinstance(configs, dict) else {}, sorted(map(str, obj))


def _get(configs: dict, *path):
    cur = configs
    for part in path:
        if not isinstance(cur, dict) or cur.get(part) is None:
            return None
        cur = cur[part]
    return cur


class Report:
    """Where every source key went."""

    def __init__(self, source: Path, total: int):
        self.source, self.total = source, total
        self.mapped: dict[str, str] = {}  # source key -> our key
        self.duplicate: dict[str, str] = {}  # source key -> the source key it equals (mapped once)
        self.lora_folded: dict[str, str] = {}  # lora_A / lora_B key -> our key it was folded into
        self.dropped: dict[str, str] = {}  # source key -> why
        self.unmatched: list[str] = []
        self.facts: dict = {}
        self.notes: list[str] = []
        self.warnings: list[str] = []  # what was assumed and may be wrong: loud on screen and in the report

    def accounted(self) -> int:
        return len(self.mapped) + len(self.duplicate) + len(self.lora_folded) + len(self.dropped) + len(self.unmatched)

    def to_dict(self) -> dict:
        return {"source": str(self.source), "keys_in_file": self.total, "keys_accounted": self.accounted(),
                "counts": {"mapped": len(self.mapped), "duplicate": len(self.duplicate),
                           "lora_folded": len(self.lora_folded), "dropped": len(self.dropped),
                           "unmatched": len(self.unmatched)},
                **self.facts, "warnings": self.warnings, "notes": self.notes,
                "keys": {"mapped": self.mapped, "duplicate": self.duplicate, "lora_folded": self.lora_folded,
                         "dropped": self.dropped, "unmatched": self.unmatched}}


def dedupe(state: dict[str, torch.Tensor], report: Report, path: Path) -> tuple[dict, dict]:
    """-> ({canonical: tensor}, {canonical: primary source key}); peft's duplicates checked equal."""
    groups: dict[str, list[str]] = {}
    for key in state:
        groups.setdefault(canonical_key(key), []).append(key)
    out, source = {}, {}
    for canon, keys in groups.items():
        first = keys[0]
        for other in keys[1:]:
            a, b = state[first], state[other]
            if a.shape != b.shape or not torch.equal(a, b):
                diff = ("shapes differ" if a.shape != b.shape
                        else f"max abs diff {(a.float() - b.float()).abs().max():.3g}")
                raise ImportRefused(f"{path}: {first} and {other} name the same tensor ({canon}) but differ ({diff}); "
                                   f"the file is inconsistent")
            report.duplicate[other] = first
        out[canon], source[canon] = state[first], first
    return out, source


def fold_lora(state: dict, source: dict, alpha: float | None, alpha_from: str, configs: dict, report: Report,
              path: Path) -> tuple[dict, dict]:
    """base_layer + B @ A * alpha / r -> plain Linear weights. -> (state, source) under the plain names."""
    pairs: dict[str, dict] = {}
    for k in state:
        m = LORA_KEY.match(k)
        if m:
            pairs.setdefault(m["stem"], {})[m["ab"]] = k
    if not pairs:
        return state, source
    if alpha is None:
        raise ImportRefused(f"{path}: {len(pairs)} LoRA pairs but no alpha: hyper_parameters['configs']['train_setup']"
                           f"['lora_alpha'] is missing; pass --lora-alpha as trained (scale = alpha / r)")
    stored_r = _get(configs, "train_setup", "lora_r")
    out = {k: v for k, v in state.items() if not LORA_KEY.match(k)}
    ranks = set()
    for stem, ab in sorted(pairs.items()):
        base = f"{stem}.base_layer.weight"
        if set(ab) != {"A", "B"} or base not in out:
            raise ImportRefused(f"{path}: incomplete LoRA layer {source.get(base, stem)}: has "
                               f"{sorted(ab)} of lora_A/lora_B and {'a' if base in out else 'no'} base_layer.weight")
        a, b = state[ab["A"]], state[ab["B"]]
        r = a.shape[0]
        if b.shape[1] != r or tuple(out[base].shape) != (b.shape[0], a.shape[1]):
            raise ImportRefused(f"{path}: LoRA shapes of {source[ab['A']]} {tuple(a.shape)} and {source[ab['B']]} "
                               f"{tuple(b.shape)} do not fit {source[base]} {tuple(out[base].shape)}")
        if stored_r is not None and int(stored_r) != r:
            raise ImportRefused(f"{path}: hyper_parameters configs.train_setup.lora_r = {stored_r} but "
                               f"{source[ab['A']]} has rank {r}")
        ranks.add(r)
        w = out[base]
        out[base] = (w.double() + (b.double() @ a.double()) * (float(alpha) / r)).to(w.dtype)
        ours = f"kosmos.{stem[len('backbone.'):]}.weight"
        report.lora_folded[source[ab["A"]]] = report.lora_folded[source[ab["B"]]] = ours
    report.facts["lora"] = {"pairs": len(pairs), "r": sorted(ranks), "alpha": alpha, "alpha_from": alpha_from,
                            "scale": [float(alpha) / r for r in sorted(ranks)]}
    # peft's base_layer names become the plain Linear's names.
    return ({k.replace(".base_layer.", "."): v for k, v in out.items()},
            {k.replace(".base_layer.", "."): s for k, s in source.items() if not LORA_KEY.match(k)})


def classify(state: dict, source: dict, report: Report, path: Path) -> tuple[dict, dict, dict]:
    """-> (backbone {Kosmos2Model key: tensor}, head {our head key: tensor}, action token or None)."""
    backbone, head, act = {}, {}, None
    head_keys, foreign, mlp_groups = [], [], set()
    for k, v in state.items():
        src = source[k]
        reason = next((why for rule, why in DROPPED.items() if rule.match(k)), None)
        if reason:
            report.dropped[src] = reason
        elif k.startswith("backbone."):
            backbone[k[len("backbone."):]] = v
            report.mapped[src] = "kosmos." + k[len("backbone."):]
        elif k == "action_token":
            act = v
            report.mapped[src] = "action_token"
        elif k.startswith("act_head."):
            head_keys.append(k)
            m_lstm, m_mlp = LSTM_KEY.match(k), MLP_KEY.match(k)
            if m_lstm:
                head[f"lstm.{m_lstm['param']}"] = v
                report.mapped[src] = f"head.lstm.{m_lstm['param']}"
            elif m_mlp:
                mlp_groups.add(m_mlp["group"])
                head[f"mlp.{m_mlp['index']}.{m_mlp['param']}"] = v
                report.mapped[src] = f"head.mlp.{m_mlp['index']}.{m_mlp['param']}"
            else:
                foreign.append(src)
        else:
            report.unmatched.append(src)
    has_lstm = any(k.startswith("lstm.") for k in head)
    if not head_keys:
        raise ImportRefused(f"{path}: no action head (no model.act_head.* keys); nothing to drive with")
    if foreign or not has_lstm or len(mlp_groups) != 1:
        named = sorted(source[k] for k in head_keys)
        why = "no LSTM (act_head.rnn.*)" if not has_lstm else (
            f"unknown keys {', '.join(foreign[:6])}" if foreign else f"several MLPs ({', '.join(sorted(mlp_groups))})")
        raise ImportRefused(
            f"{path}: the action head is of another type than the LSTM decoder this importer supports "
            f"(expected model.act_head.rnn.* and model.act_head.velocities.mlp.{{0,2,4,6}}.*; found {why}); "
            f"its keys: {', '.join(named[:24])}{' ...' if len(named) > 24 else ''}")
    return backbone, head, act


def head_dimensions(head: dict, configs: dict, path: Path, window: int | None, chunk: int | None,
                    axes: int | None) -> dict:
    """H, L, MLP widths, N, A, W: from hyper_parameters where present, tensor shapes otherwise; checked against
    each other."""
    facts: dict = {}

    def record(name, value, origin):
        facts[name] = {"value": value, "from": origin}
        return value

    layers = sorted(int(LSTM_KEY.match("act_head.rnn." + k[len("lstm."):])["layer"])
                    for k in head if k.startswith("lstm.weight_ih_l"))
    if layers != list(range(len(layers))):
        raise ImportRefused(f"{path}: LSTM layers {layers} are not 0..L-1")
    hh = head["lstm.weight_hh_l0"]
    hidden, n_layers, in_dim = hh.shape[1], len(layers), head["lstm.weight_ih_l0"].shape[1]
    for name, value, stored in (("hidden_size", hidden, _get(configs, "act_head", "hidden_size")),
                                ("num_layers", n_layers, _get(configs, "act_head", "num_layers"))):
        if stored is not None and int(stored) != value:
            raise ImportRefused(f"{path}: hyper_parameters configs.act_head.{name} = {stored} but the LSTM tensors "
                               f"say {value} (act_head.rnn.weight_hh_l0 {tuple(hh.shape)}, {n_layers} layers)")
    record("head_hidden", hidden, "hyper_parameters" if _get(configs, "act_head", "hidden_size") else "tensor shapes")
    record("head_layers", n_layers, "hyper_parameters" if _get(configs, "act_head", "num_layers") else "tensor shapes")
    idx = sorted(int(k.split(".")[1]) for k in head if k.startswith("mlp.") and k.endswith(".weight"))
    if idx != list(range(0, 2 * len(idx), 2)):
        raise ImportRefused(f"{path}: MLP Linear layers at indices {idx}; expected 0, 2, 4, ... "
                            f"(Linear, ReLU, ..., Tanh)")
    widths = [hidden]
    for i in idx:
        w = head[f"mlp.{i}.weight"]
        if w.shape[1] != widths[-1]:
            raise ImportRefused(f"{path}: act_head MLP layer {i} takes {w.shape[1]} inputs, "
                                f"the layer before gives {widths[-1]}")
        widths.append(w.shape[0])
    out = widths[-1]
    record("head_mlp", widths[1:-1], "tensor shapes")
    stored_n, stored_a = _get(configs, "fwd_pred_next_n"), _get(configs, "act_head", "action_dim")
    n = chunk if chunk is not None else stored_n
    a = axes if axes is not None else stored_a
    n_from = "--chunk" if chunk is not None else "hyper_parameters" if stored_n is not None else "tensor shapes"
    a_from = "--action-axes" if axes is not None else "hyper_parameters" if stored_a is not None else "tensor shapes"
    if n is None and a is None:
        fits = [k for k in (2, 3) if out % k == 0]
        if len(fits) != 1:
            raise ImportRefused(f"{path}: the head outputs {out} = N x A values and neither fwd_pred_next_n nor "
                               f"act_head.action_dim is stored; {out} fits A = 2 and A = 3: pass --action-axes "
                               f"(or --chunk) as trained" if fits else
                               f"{path}: the head outputs {out} values, not N x 2 or N x 3 actions")
        a = fits[0]
    if a is None:
        a = out // int(n)
    if n is None:
        n = out // int(a)
    n, a = int(n), int(a)
    if n * a != out or a not in (2, 3):
        raise ImportRefused(f"{path}: the head's last Linear gives {out} values, but N = {n} ({n_from}) x A = {a} "
                           f"({a_from}) = {n * a}" + ("" if a in (2, 3) else "; A must be 2 or 3"))
    record("chunk", n, n_from)
    record("action_axes", a, a_from)
    stored_w = _get(configs, "window_size")
    w = window if window is not None else stored_w
    record("window", int(w if w is not None else DEFAULT_WINDOW),
           "--window" if window is not None else "hyper_parameters" if stored_w is not None
           else f"not stored: {DEFAULT_WINDOW} assumed (pass --window as trained)")
    facts["lstm_input"] = {"value": int(in_dim), "from": "tensor shapes"}
    return facts


def kosmos_signature(state: dict) -> dict | None:
    """What the tensor shapes say about a Kosmos2Model (keys relative to the model); None if not all there."""
    try:
        vocab, width = state["text_model.model.embed_tokens.weight"].shape
        vision_width = state["vision_model.model.embeddings.patch_embedding.weight"].shape[0]
        return {
            "vocab_size": int(vocab), "embed_dim": int(width),
            "text_layers": len({k.split(".")[3] for k in state if k.startswith("text_model.model.layers.")}),
            "ffn_dim": int(state["text_model.model.layers.0.ffn.fc1.weight"].shape[0]),
            "vision_hidden": int(vision_width),
            "vision_layers": len({k.split(".")[4] for k in state
                                  if k.startswith("vision_model.model.encoder.layers.")}),
            "vision_ffn": int(state["vision_model.model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "vision_positions": int(state["vision_model.model.embeddings.position_embedding.weight"].shape[0]),
            "latent_query_num": int(state["image_to_text_projection.latent_query"].shape[0]),
        }
    except KeyError:
        return None


def config_signature(kosmos: dict) -> dict:
    t, v = kosmos["text_config"], kosmos["vision_config"]
    return {"vocab_size": t["vocab_size"], "embed_dim": t["embed_dim"], "text_layers": t["layers"],
            "ffn_dim": t["ffn_dim"], "vision_hidden": v["hidden_size"], "vision_layers": v["num_hidden_layers"],
            "vision_ffn": v["intermediate_size"], "vision_positions": (v["image_size"] // v["patch_size"]) ** 2 + 1,
            "latent_query_num": kosmos.get("latent_query_num", 64)}


def match_preset(signature: dict, where: str) -> str:
    for name in PRESETS:
        if config_signature(preset_config(name, random_weights=True).kosmos) == signature:
            return name
    raise ImportRefused(f"{where}: a Kosmos-2 of shape {signature} matches none of the presets ({', '.join(PRESETS)})")


def load_base(base: str):
    """The pretrained Kosmos-2: one of our merged checkpoint folders, a transformers folder or a hub id."""
    try:
        return load_kosmos(base, "eager")
    except (OSError, ValueError) as e:
        raise ImportRefused(f"--base {base}: cannot load a Kosmos-2 from it: {e}") from e


@dataclass(frozen=True)
class ImportOptions:
    """What `import_checkpoint` needs beyond the file; None: from the file's stored configs, else its shapes."""

    base: str | None = None  # pretrained Kosmos-2 for backbone tensors the file lacks (hub id or folder)
    preset: str | None = None  # our preset of the backbone; None: recognised from its shapes
    tokenizer: str | None = None  # kosmos2: hub id or folder of the tokenizer; None: --base or the hub's
    lora_alpha: float | None = None  # LoRA scale numerator; None: the stored train_setup.lora_alpha
    window: int | None = None  # W; None: the stored window_size, else DEFAULT_WINDOW
    chunk: int | None = None  # N; None: the stored fwd_pred_next_n, else the head's shape
    action_axes: int | None = None  # A; None: the stored action_dim, else the head's shape
    pixel_norm: str | None = None  # "unit" or "clip" as trained; None: warned about, DEFAULT_PIXEL_NORM assumed
    instruction: str | None = None  # the training instruction; None: the stored one, else the preset's (warned)
    allow_missing: bool = False  # ignore unmatched keys, take missing backbone tensors from base
    overwrite: bool = False  # replace an existing output folder


@dataclass
class Original:
    """What was read from the file: the backbone, head and action token under our names, and the report."""

    path: Path
    configs: dict
    backbone: dict
    head: dict
    action_token: torch.Tensor | None
    report: Report


def read_original(path: Path, options: ImportOptions) -> Original:
    """Step 1: load the Lightning file, check peft's duplicates, fold LoRA, sort every key into its place."""
    state, configs, fields = load_lightning(path)
    report = Report(path, len(state))
    report.facts["file_fields"] = fields
    report.facts["not_imported"] = [f for f in fields if f != "state_dict"]
    canon, source = dedupe(state, report, path)
    stored_alpha = _get(configs, "train_setup", "lora_alpha")
    alpha, alpha_from = ((options.lora_alpha, "--lora-alpha") if options.lora_alpha is not None else
                         (stored_alpha, "hyper_parameters configs.train_setup.lora_alpha"))
    if options.lora_alpha is not None and stored_alpha is not None and float(stored_alpha) != float(options.lora_alpha):
        report.notes.append(f"--lora-alpha {options.lora_alpha} overrides the stored lora_alpha {stored_alpha}")
    canon, source = fold_lora(canon, source, alpha, alpha_from, configs, report, path)
    backbone, head, act = classify(canon, source, report, path)
    if report.unmatched and not options.allow_missing:
        raise ImportRefused(f"{path}: {len(report.unmatched)} key(s) match nothing in our model: "
                           f"{', '.join(report.unmatched[:8])}; pass --allow-missing to import without them")
    if act is None:
        raise ImportRefused(f"{path}: no model.action_token in the file")
    return Original(Path(path), configs, backbone, head, act, report)


def training_vintage(configs: dict, options: ImportOptions, report: Report) -> dict:
    """Step 2b: what the checkpoint cannot say for itself: the pixel normalisation and the instruction it was
    trained with. Each recorded with where it came from; a guess is a loud warning in the report."""
    if options.pixel_norm is not None:
        if options.pixel_norm not in PIXEL_NORMS:
            raise ImportRefused(f"--pixel-norm must be one of {', '.join(PIXEL_NORMS)}, got {options.pixel_norm!r}")
        norm = {"value": options.pixel_norm, "from": "--pixel-norm"}
    else:
        norm = {"value": DEFAULT_PIXEL_NORM, "from": f"not stored: {DEFAULT_PIXEL_NORM} assumed"}
        report.warnings.append(PIXEL_NORM_WARNING)
    stored = next((v for keys in INSTRUCTION_KEYS if isinstance(v := _get(configs, *keys), str) and v.strip()), None)
    if options.instruction is not None:
        instruction = {"value": options.instruction, "from": "--instruction"}
    elif stored is not None:
        instruction = {"value": stored, "from": "hyper_parameters configs"}
    else:
        instruction = {"value": DEFAULT_INSTRUCTION, "from": "not stored: the preset's default assumed"}
        report.warnings.append(INSTRUCTION_WARNING)
    return {"pixel_norm": norm, "instruction": instruction}


def backbone_preset(original: Original, options: ImportOptions) -> tuple[str, object]:
    """Step 3a: which preset the backbone is (from its shapes, or --base's). -> (preset, --base model or None)."""
    path, base = original.path, options.base
    sig = kosmos_signature(original.backbone)
    base_model = load_base(base) if base is not None and sig is None else None
    preset = options.preset
    if preset is None and sig is not None:
        preset = match_preset(sig, str(path))
    elif preset is None and base_model is not None:
        preset = match_preset(kosmos_signature(base_model.state_dict()), f"--base {base}")
    if preset is None:
        raise ImportRefused(f"{path}: the file has no (complete) backbone weights (model.backbone.*: "
                           f"{len(original.backbone)} tensors); pass --base with the pretrained Kosmos-2 (a hub id "
                           f"or folder) to take the backbone from there; it is never left random")
    return preset, base_model


def complete_backbone(original: Original, options: ImportOptions, ours: dict, preset: str,
                      base_model=None) -> tuple[dict, list[str]]:
    """Step 3b: the file's backbone, completed from --base where it lacks tensors (never random).
    ours: {key: tensor} of the model being assembled. -> (backbone state, keys taken from --base)."""
    path, backbone, base = original.path, dict(original.backbone), options.base
    extra = sorted(set(backbone) - set(ours))
    if extra:
        raise ImportRefused(f"{path}: backbone keys not in a {preset} Kosmos2Model: "
                           f"{', '.join('model.backbone.' + k for k in extra[:8])}")
    missing = sorted(set(ours) - set(backbone))
    if missing:
        if backbone and not options.allow_missing:
            raise ImportRefused(f"{path}: {len(missing)} backbone tensor(s) missing (e.g. {missing[:3]}); pass "
                               f"--allow-missing --base KOSMOS2 to take them from the pretrained model")
        if base is None:
            raise ImportRefused(f"{path}: {len(missing)} of {len(ours)} backbone tensors are not in the file "
                               f"(e.g. {missing[:3]}); pass --base with the pretrained Kosmos-2 (a hub id or folder) "
                               f"to take them from there; they are never left random")
        base_state = (base_model or load_base(base)).state_dict()
        for k in missing:
            if k not in base_state or base_state[k].shape != ours[k].shape:
                raise ImportRefused(f"--base {base}: has no {k} of shape {tuple(ours[k].shape)}")
            backbone[k] = base_state[k]
    return backbone, missing


def imported_config(preset: str, dims: dict, vintage: dict, options: ImportOptions):
    """Our model config for the import: the preset's backbone, the file's head, the original's feature path,
    its BGR quirk, its pixel normalisation and its training instruction."""
    cfg = preset_config(preset, random_weights=True)
    hub_tok = None
    if preset == "kosmos2":
        base = options.base
        hub_tok = options.tokenizer or (base if base and not is_checkpoint_folder(base) else KOSMOS2_HUB_ID)
    mean, std = PIXEL_NORMS[vintage["pixel_norm"]["value"]]
    return replace(
        cfg, tokenizer=hub_tok or cfg.tokenizer,
        window=dims["window"]["value"], chunk=dims["chunk"]["value"], action_axes=dims["action_axes"]["value"],
        head_hidden=dims["head_hidden"]["value"], head_layers=dims["head_layers"]["value"],
        head_mlp=tuple(dims["head_mlp"]["value"]), prompt_layout="robovlms-fallback",
        max_text_tokens=max(cfg.latent_query_num, cfg.max_text_tokens),
        default_instruction=vintage["instruction"]["value"],
        # The original fed the robot's BGR bytes into the model's R, G, B slots unconverted.
        preprocess=dict(cfg.preprocess, channel_order="bgr", model_channel_order="bgr", mean=list(mean),
                        std=list(std), pixel_norm=vintage["pixel_norm"]["value"])).validate()


def assemble(original: Original, model: MobileVLA, backbone: dict) -> MobileVLA:
    """Step 4: the file's tensors into our model, every shape checked."""
    path, act, head, config = original.path, original.action_token, original.head, model.config
    ours = model.kosmos.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}" for k, v in backbone.items()
             if v.shape != ours[k].shape]
    if act.numel() != config.hidden_size:
        wrong.append(f"action_token: {tuple(act.shape)} vs ({config.hidden_size},)")
    head_ours = model.head.state_dict()
    head_full = {k: head_ours[k] for k in ActionHead.NORMALIZATION_KEYS} | head  # the original had none: identity
    missing_head = sorted(set(head_ours) - set(head_full))
    if missing_head:
        raise ImportRefused(f"{path}: the head lacks {', '.join('act_head.' + k for k in missing_head)}")
    wrong += [f"act_head {k}: file {tuple(v.shape)} vs model {tuple(head_ours[k].shape)}" for k, v in head_full.items()
              if v.shape != head_ours[k].shape]
    if wrong:
        raise ImportRefused(f"{path}: shapes do not match: {wrong[:4]}")
    model.kosmos.load_state_dict(backbone, strict=True)
    model.head.load_state_dict(head_full, strict=True)
    with torch.no_grad():
        model.action_token.copy_(act.reshape(-1))
    return model


def write_import(model: MobileVLA, original: Original, out: Path, overwrite: bool) -> dict:
    """Step 5: the checkpoint folder and import_report.json, all or nothing."""
    result = original.report.to_dict()
    tok = load_tokenizer(model.config)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_checkpoint_files(model.eval(), tmp, tok, kind="merged",
                               extra={"imported_from": str(original.path), "import_report": REPORT_FILE,
                                      "import_counts": result["counts"], "training_vintage": result["vintage"],
                                      "driving": ORIGINAL_DRIVING.to_dict()})
        (tmp / REPORT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def import_checkpoint(path: Path, out: Path, options: ImportOptions = ImportOptions()) -> dict:
    """Import `path` into the checkpoint folder `out`; returns the report (also saved as out/import_report.json)."""
    path, out = Path(path), Path(out)
    if out.exists() and not options.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    original = read_original(path, options)
    report = original.report
    dims = head_dimensions(original.head, original.configs, path, options.window, options.chunk,
                           options.action_axes)
    vintage = training_vintage(original.configs, options, report)
    report.facts["dimensions"], report.facts["vintage"] = dims, vintage
    preset, base_model = backbone_preset(original, options)
    config = imported_config(preset, dims, vintage, options)
    if dims["lstm_input"]["value"] != config.hidden_size:
        raise ImportRefused(f"{path}: the LSTM takes {dims['lstm_input']['value']} inputs but the backbone is "
                           f"{config.hidden_size} wide ({preset})")
    model = MobileVLA(config)
    backbone, from_base = complete_backbone(original, options, model.kosmos.state_dict(), preset, base_model)
    del base_model
    assemble(original, model, backbone)
    n_backbone = len(backbone)
    report.facts["preset"] = preset
    report.facts["backbone"] = {"from": "file" if not from_base else ("base" if len(from_base) == n_backbone
                                                                       else "file+base"),
                                "base": options.base if from_base else None, "from_base": from_base}
    report.facts["prompt_layout"] = config.prompt_layout
    report.facts["preprocess"] = config.preprocess
    report.notes.append("prompt layout robovlms-fallback: the original's feature path (image latents over the "
                        "text, sequential positions), so the head gets the features it was trained on")
    report.notes.append("channel order: frames go into the model as stored BGR bytes, unconverted, as in the "
                        "original's training (preprocess.model_channel_order = bgr)")
    if report.accounted() != report.total:
        raise AssertionError(f"{path}: {report.total} keys but {report.accounted()} accounted for")
    tok = load_tokenizer(config)
    config_max = default_max_text_tokens(tok, config.prompt_template, "robovlms-fallback", config.latent_query_num)
    # the training instruction must fit the fixed prompt: a longer one widens it
    needed = len(build_prompt(tok, config.default_instruction, config.latent_query_num, None,
                              config.prompt_template, layout="robovlms-fallback").input_ids[0]) - 1
    model.config = replace(config, max_text_tokens=max(config_max, needed),
                           weights=options.base if from_base else None).validate()
    return write_import(model, original, out, options.overwrite)


def summary(report: dict, out: Path) -> str:
    c, dims = report["counts"], report["dimensions"]
    lora = report.get("lora")
    lines = [f"imported {report['source']} -> {out} (preset {report['preset']})",
             f"  keys      {report['keys_in_file']} in the file, all accounted for: {c['mapped']} mapped, "
             f"{c['duplicate']} duplicate (peft's second registration, checked equal), {c['lora_folded']} LoRA "
             f"tensors folded, {c['dropped']} dropped on purpose, {c['unmatched']} unmatched"]
    if lora:
        lines.append(f"  lora      {lora['pairs']} pairs folded: alpha {lora['alpha']} / r {lora['r']} "
                     f"(alpha from {lora['alpha_from']})")
    b = report["backbone"]
    lines.append("  backbone  from the file" if b["from"] == "file" else
                 f"  backbone  {len(b['from_base'])} tensors from --base {b['base']} (not in the file)")
    lines.append(f"  head      LSTM {dims['lstm_input']['value']}->{dims['head_hidden']['value']} x "
                 f"{dims['head_layers']['value']} layers, MLP {dims['head_mlp']['value']} -> "
                 f"{dims['chunk']['value']} x {dims['action_axes']['value']} (tanh)")
    for name in ("window", "chunk", "action_axes", "head_hidden", "head_layers"):
        lines.append(f"  {name:<12}{dims[name]['value']}  ({dims[name]['from']})")
    vintage = report["vintage"]
    lines.append(f"  pixels    {vintage['pixel_norm']['value']}  ({vintage['pixel_norm']['from']})")
    lines.append(f"  instruction {vintage['instruction']['value']!r}  ({vintage['instruction']['from']})")
    lines.append("  layout    robovlms-fallback: drives as it was trained (the original's feature path, BGR frames "
                 "fed unconverted)")
    lines.append(f"            to move to our layout: python -m train.fit --init {out} --data EPISODES ... "
                 f"(docs/migrating.md)")
    lines.append(f"  training state, not imported: {', '.join(f for f in report['not_imported'])}")
    for k in report["keys"]["unmatched"][:20]:
        lines.append(f"  unmatched (ignored, --allow-missing): {k}")
    lines.append(f"  report    {out / REPORT_FILE}")
    return "\n".join(lines)


@exits_on(ImportRefused, FileExistsError, FileNotFoundError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", help="pretrained Kosmos-2 (hub id, transformers folder or merged checkpoint folder) "
                                   "for backbone weights the file lacks")
    ap.add_argument("--preset", choices=PRESETS, help="default: recognised from the backbone's shapes")
    ap.add_argument("--tokenizer", help="kosmos2: hub id or folder of the tokenizer (default: --base or the hub's)")
    ap.add_argument("--lora-alpha", type=float, help="default: the stored hyper_parameters lora_alpha")
    ap.add_argument("--window", type=int, help=f"default: the stored window_size, else {DEFAULT_WINDOW}")
    ap.add_argument("--chunk", type=int, help="default: the stored fwd_pred_next_n, else from the head's shape")
    ap.add_argument("--action-axes", type=int, choices=(2, 3), help="default: the stored action_dim, else the shape")
    ap.add_argument("--pixel-norm", choices=tuple(PIXEL_NORMS),
                    help="as trained: unit (pixels / 255; the fork before 2026-02-03) or clip (CLIP mean/std; after); "
                         f"default {DEFAULT_PIXEL_NORM}, with a warning")
    ap.add_argument("--instruction", help="the instruction the run was trained with (default: the stored one, else "
                                          "the preset's, with a warning)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="ignore unmatched keys and take missing backbone tensors from --base")
    ap.add_argument("--overwrite", action="store_true")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    options = ImportOptions(base=args.base, preset=args.preset, tokenizer=args.tokenizer, lora_alpha=args.lora_alpha,
                            window=args.window, chunk=args.chunk, action_axes=args.action_axes,
                            pixel_norm=args.pixel_norm, instruction=args.instruction,
                            allow_missing=args.allow_missing, overwrite=args.overwrite)
    report = import_checkpoint(args.ckpt, args.out, options)
    for warning in report["warnings"]:
        log.warning("%s", warning)
    print(summary(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
