"""Importing what the original RoboVLMs / Mobile-VLA stack saved (issue 13).

The checkpoint is built the way the original stack builds its model (tests/fixtures/robovlms.py says how);
none of it is generated from the importer's rules.
"""

from __future__ import annotations

import argparse
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import run_python
from tests.fixtures.robovlms import (
    AXES,
    CHUNK,
    HIDDEN,
    LAYERS,
    LORA_ALPHA,
    WINDOW,
    LightningLike,
    OriginalPolicy,
    configs,
    lightning_checkpoint,
    tiny_kosmos_config,
)
from train.checkpoint import load_checkpoint

Q_TINY = 16
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(checkpoint path, the original-like policy as it was saved, peft's own merged backbone)."""
    torch.manual_seed(0)
    policy = OriginalPolicy(seed=3).eval()
    module = LightningLike(policy)
    path = tmp_path_factory.mktemp("original") / "epoch=9.ckpt"
    torch.save(lightning_checkpoint(module, {"configs": configs()}), path)
    merged = copy.deepcopy(policy.model).merge_and_unload().eval()  # peft's own merge, not ours
    return path, policy, merged


@pytest.fixture(scope="module")
def imported(original, tmp_path_factory):
    path, _, _ = original
    out = tmp_path_factory.mktemp("imported") / "imported"
    proc = run_python("-m", "train.import_robovlms", str(path), "--out", str(out))  # no flags
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout, proc.stderr


def test_without_pixel_norm_or_instruction_the_import_warns_loudly_naming_both_choices(imported):
    out, _, stderr = imported
    report = json.loads((out / "import_report.json").read_text())
    assert report["vintage"]["pixel_norm"] == {"value": "clip", "from": "not stored: clip assumed"}
    assert report["vintage"]["instruction"]["from"] == "not stored: the preset's default assumed"
    assert stderr.lower().count("warning") >= 2  # on screen, at warning level
    for text in (stderr, "\n".join(report["warnings"])):
        assert "PIXEL NORMALISATION NOT KNOWN" in text and "TRAINING INSTRUCTION NOT KNOWN" in text
        assert "--pixel-norm unit" in text and "--pixel-norm clip" in text
        assert "2026-02-03" in text and "--instruction" in text


def test_the_original_layout_imports_with_no_flags_and_every_key_is_accounted_for(original, imported):
    path, policy, _ = original
    out, stdout, _ = imported
    state = torch.load(path, weights_only=True)["state_dict"]
    report = json.loads((out / "import_report.json").read_text())
    assert report["keys_in_file"] == report["keys_accounted"] == len(state)
    keys = report["keys"]
    accounted = [*keys["mapped"], *keys["duplicate"], *keys["lora_folded"], *keys["dropped"], *keys["unmatched"]]
    assert sorted(accounted) == sorted(state)  # each key exactly once
    n_backbone = sum(k.startswith("model.backbone.") for k in state)
    assert report["counts"]["duplicate"] == n_backbone  # peft's second registration, checked equal, mapped once
    assert all(k.startswith("model.model.base_model.model.") for k in keys["duplicate"])
    n_lora_layers = sum(n.endswith(".base_layer") for n, _ in policy.backbone.named_modules())  # peft's LoRA Linears
    assert report["lora"]["pairs"] == n_lora_layers and report["lora"]["alpha"] == LORA_ALPHA
    assert report["lora"]["alpha_from"].startswith("hyper_parameters")
    assert keys["dropped"] == {"model.backbone.text_model.lm_head.weight":
                               "language-model head: tied to the embeddings, unused for ACT"}
    assert keys["unmatched"] == []
    dims = report["dimensions"]
    assert {k: dims[k]["value"] for k in ("head_hidden", "head_layers", "chunk", "action_axes", "window")} == \
        {"head_hidden": HIDDEN, "head_layers": LAYERS, "chunk": CHUNK, "action_axes": AXES, "window": WINDOW}
    assert dims["head_mlp"]["value"] == [1024, 512, 256]
    assert report["backbone"]["from"] == "file" and report["preset"] == "tiny"
    assert set(report["not_imported"]) >= {"optimizer_states", "lr_schedulers", "callbacks", "epoch", "global_step",
                                           "pytorch-lightning_version", "hyper_parameters"}
    meta = json.loads((out / "config.json").read_text())
    assert meta["kind"] == "merged" and meta["model"]["prompt_layout"] == "robovlms-fallback"
    assert meta["model"]["preprocess"]["model_channel_order"] == "bgr"
    assert meta["model"]["head_mlp"] == [1024, 512, 256]
    for words in ("all accounted for", f"{n_backbone} duplicate", "robovlms-fallback", "--init", "import_report.json",
                  "(hyper_parameters)"):
        assert words in stdout, stdout


def test_imported_head_equals_the_original_head(original, imported):
    _, policy, _ = original
    model, _, _ = load_checkpoint(imported[0])
    feats = torch.randn(3, WINDOW, model.config.hidden_size) * 2
    with torch.no_grad():
        ours, theirs = model.head(feats), policy.act_head(feats)
        assert (model.predict_chunk(feats[:, :5]) - policy.act_head(feats[:, :5])[:, -1]).abs().max() < 1e-6
    assert ours.shape == (3, WINDOW, CHUNK, AXES)
    assert (ours - theirs).abs().max().item() < 1e-6
    assert torch.equal(model.action_token.detach(), policy.action_token.detach())


def test_imported_backbone_equals_peft_merge_and_unload(original, imported):
    _, _, merged = original
    model, _, _ = load_checkpoint(imported[0])
    theirs = {k: v for k, v in merged.state_dict().items() if not k.startswith("text_model.lm_head")}
    ours = model.kosmos.state_dict()
    assert set(ours) == set(theirs)
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    assert worst < 1e-5, worst
    # and LoRA did change the weights (alpha/r folded, not dropped)
    plain = OriginalPolicy(seed=3, lora=False).backbone.state_dict()
    q = "text_model.model.layers.0.self_attn.q_proj.weight"
    assert (ours[q] - plain[q]).abs().max() > 1e-2


def test_dimensions_come_from_tensor_shapes_when_configs_are_missing(tmp_path):
    from train.import_robovlms import import_checkpoint

    policy = OriginalPolicy(seed=5, lora=False)
    path = tmp_path / "no-configs.ckpt"
    torch.save(lightning_checkpoint(LightningLike(policy), hyper=None), path)
    report = import_checkpoint(path, tmp_path / "out")
    dims = report["dimensions"]
    assert (dims["head_hidden"]["value"], dims["head_layers"]["value"], dims["chunk"]["value"],
            dims["action_axes"]["value"]) == (HIDDEN, LAYERS, CHUNK, AXES)
    assert all(dims[k]["from"] == "tensor shapes" for k in ("head_hidden", "head_layers", "chunk", "action_axes"))
    assert dims["window"]["value"] == 8 and "not stored" in dims["window"]["from"]
    model, _, _ = load_checkpoint(tmp_path / "out")
    feats = torch.randn(1, 4, model.config.hidden_size)
    with torch.no_grad():
        assert (model.head(feats) - policy.act_head(feats)).abs().max() < 1e-6


def test_lora_without_a_stored_alpha_is_refused_naming_it(tmp_path, original):
    from train.import_robovlms import ImportRefused, import_checkpoint

    ckpt = torch.load(original[0], weights_only=True)
    ckpt["hyper_parameters"]["configs"]["train_setup"].pop("lora_alpha")
    path = tmp_path / "no-alpha.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ImportRefused, match=r"lora_alpha.*--lora-alpha"):
        import_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicates_that_differ_are_refused(tmp_path, original):
    from train.import_robovlms import ImportRefused, import_checkpoint

    ckpt = torch.load(original[0], weights_only=True)
    key = "model.model.base_model.model.text_model.model.layers.0.ffn.fc1.base_layer.weight"
    ckpt["state_dict"][key] = ckpt["state_dict"][key].clone() + 1e-3
    path = tmp_path / "inconsistent.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ImportRefused, match=r"model\.backbone\.text_model.*ffn\.fc1\.base_layer\.weight and " + key):
        import_checkpoint(path, tmp_path / "out")


def test_a_file_that_needs_arbitrary_unpickling_is_refused(tmp_path, original):
    ckpt = torch.load(original[0], weights_only=True)
    ckpt["hyper_parameters"] = argparse.Namespace(configs=configs())  # a class: unpickling runs code
    path = tmp_path / "pickled.ckpt"
    torch.save(ckpt, path)
    proc = run_python("-m", "train.import_robovlms", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "weights_only=True" in proc.stderr and "refused" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_head_of_another_type_is_refused_naming_its_keys(tmp_path, original):
    from train.import_robovlms import ImportRefused, import_checkpoint

    ckpt = torch.load(original[0], weights_only=True)
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("model.act_head.")}
    # RoboVLMs' FCDecoder: an MLP trunk, then actions and gripper heads; no LSTM.
    fc = nn.ModuleDict({"mlp": nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256)),
                        "actions": nn.Module(), "gripper": nn.Module()})
    fc["actions"].mlp = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 20), nn.Tanh())
    fc["gripper"].mlp = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10), nn.Sigmoid())
    state.update({f"model.act_head.{k}": v for k, v in fc.state_dict().items()})
    ckpt["state_dict"] = state
    path = tmp_path / "fc.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ImportRefused, match=r"another type.*model\.act_head\.gripper\.mlp\.0\.weight") as e:
        import_checkpoint(path, tmp_path / "out")
    assert "model.act_head.mlp.0.weight" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def head_only(tmp_path_factory, original):
    """A file with the head and ACT but no backbone, and a pretrained Kosmos-2 saved with save_pretrained."""
    from transformers import Kosmos2Model

    folder = tmp_path_factory.mktemp("head-only")
    ckpt = torch.load(original[0], weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "backbone" not in k and "base_model" not in k}
    ckpt["hyper_parameters"]["configs"]["train_setup"]["lora_enable"] = False
    path = folder / "head.ckpt"
    torch.save(ckpt, path)
    torch.manual_seed(11)
    pretrained = Kosmos2Model(tiny_kosmos_config())
    pretrained.save_pretrained(folder / "kosmos2")
    return path, folder / "kosmos2", pretrained


def test_a_missing_backbone_is_refused_without_base(tmp_path, head_only):
    path, _, _ = head_only
    proc = run_python("-m", "train.import_robovlms", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1, proc.stdout
    assert "no (complete) backbone" in proc.stderr and "--base" in proc.stderr and "never left random" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = run_python("-m", "train.import_robovlms", str(path), "--out", str(tmp_path / "o"), "--allow-missing")
    assert proc.returncode == 1 and "--base" in proc.stderr and not (tmp_path / "o").exists()


def test_a_missing_backbone_comes_from_base_and_the_report_says_so(tmp_path, head_only, original):
    from train.import_robovlms import ImportOptions, import_checkpoint

    path, base, pretrained = head_only
    report = import_checkpoint(path, tmp_path / "out", ImportOptions(base=str(base)))
    assert report["backbone"]["from"] == "base" and report["backbone"]["base"] == str(base)
    assert len(report["backbone"]["from_base"]) == len(pretrained.state_dict())
    model, _, meta = load_checkpoint(tmp_path / "out")
    assert meta["model"]["weights"] == str(base)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(model.kosmos.state_dict()[k], v), k
    feats = torch.randn(1, 3, 64)
    with torch.no_grad():
        assert (model.head(feats) - original[1].act_head(feats)).abs().max() < 1e-6


# -- the original's feature path, written here from its description, against the exported bundle ------------

def original_actions(policy: OriginalPolicy, tokenizer, instruction: str, frames_bgr: list[np.ndarray],
                     pixel_norm: str = "clip") -> np.ndarray:
    """What the original stack computed in training, frame by frame: its fallback feature path through
    transformers' Kosmos2Model (LoRA layers active, not merged), pixels as its dataset scaled them (the fork:
    / 255 only until 2026-02-03, CLIP mean/std after), its head over the last up-to-W features from a zero
    state, the newest chunk's first action x 1.15."""
    from transformers import Kosmos2Model

    backbone = policy.backbone
    kosmos = Kosmos2Model(backbone.config).eval()
    kosmos.text_model.model = backbone.text_model.model
    kosmos.vision_model, kosmos.image_to_text_projection = backbone.vision_model, backbone.image_to_text_projection
    q = kosmos.config.latent_query_num
    text = tokenizer.encode(f"<grounding>An image of a robot {instruction}", add_special_tokens=False).ids
    ids = [tokenizer.token_to_id("<s>"), *text, tokenizer.token_to_id("</s>")]
    n = len(ids)
    ids += [0] * max(0, q - n)  # right-padded with id 0 to Q
    with torch.no_grad():
        embeds = kosmos.get_input_embeddings()(torch.tensor([ids]))
        inputs_embeds = torch.cat([embeds, policy.action_token.view(1, 1, -1)], dim=1)  # ACT appended
        attention_mask = torch.tensor([[1] * n + [0] * (len(ids) - n) + [1]])
        image_mask = torch.tensor([[1] * q + [0] * (len(ids) + 1 - q)])  # latents over positions 0..Q-1
        features, actions = [], []
        for frame in frames_bgr:  # BGR bytes into the R, G, B slots, unconverted; 224 px already
            unit = frame.astype(np.float32) / 255.0
            pixels = (unit if pixel_norm == "unit" else (unit - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)[None]
            out = kosmos(pixel_values=torch.from_numpy(np.ascontiguousarray(pixels)), inputs_embeds=inputs_embeds,
                         attention_mask=attention_mask, image_embeds_position_mask=image_mask)
            features.append(out.last_hidden_state[0, -1])
            window = torch.stack(features[-WINDOW:])[None]
            actions.append(policy.act_head(window)[0, -1, 0].numpy() * 1.15)
    return np.stack(actions), torch.stack(features).numpy(), n


SHORT = "go left"  # fewer tokens than the Q image slots: ACT sees only len(text) latents
LONG = "navigate around the obstacles and reach the front of the beverage bottle on the left then stop"  # more
VINTAGES = {"unit": SHORT, "clip": LONG}  # pixel normalisation -> the instruction that run was trained with


@pytest.fixture(scope="module")
def vintage_bundles(original, tmp_path_factory):
    """The same file imported as each vintage (pixel_norm and instruction given) and exported."""
    from export.to_onnx import ExportOptions, export_bundle
    from train.import_robovlms import ImportOptions, import_checkpoint

    path = original[0]
    bundles = {}
    for norm, instruction in VINTAGES.items():
        ckpt = tmp_path_factory.mktemp(f"imported-{norm}") / "ckpt"
        report = import_checkpoint(path, ckpt, ImportOptions(pixel_norm=norm, instruction=instruction))
        assert report["warnings"] == []  # nothing assumed: nothing to warn about
        model, tokenizer, meta = load_checkpoint(ckpt, merge=True)
        # no export parity check: this test compares the bundle with the fork's computation itself
        bundles[norm] = ckpt, export_bundle(model, tokenizer, ckpt.parent / "bundle",
                                            ExportOptions(origin=str(ckpt), verify=False), ckpt_meta=meta)
    return bundles


def served_actions(bundle, frames, instruction=None):
    from runtime.policy.backends.registry import make_backend
    from runtime.policy.onboard import Policy

    with make_backend(bundle, "ort-cpu") as backend:
        served = Policy(bundle, backend, instruction=instruction)
        got, features = [], []
        for f in frames:
            got.append(served.infer(f).action)
            features.append(served.ring.view()[0, -1].copy())
    return np.stack(got), np.stack(features)


@pytest.mark.parametrize("norm", list(VINTAGES))
def test_each_vintage_drives_as_the_fork_computed_it_and_a_wrong_pixel_norm_is_far_off(original, vintage_bundles,
                                                                                      norm):
    """Against an independent reimplementation of the fork's fallback path (original_actions, written from its
    logic with transformers, not our prompt builder): the bundle's own prompt (the training instruction) and the
    other-length instruction, each within 1e-4 on actions; importing with the other --pixel-norm moves them by
    far more; true-RGB frames too (the BGR quirk)."""
    from runtime.policy.bundle import load_bundle

    _, policy, _ = original
    ckpt, bundle_dir = vintage_bundles[norm]
    bundle = load_bundle(bundle_dir)
    trained = VINTAGES[norm]
    m, meta = bundle.manifest, json.loads((ckpt / "config.json").read_text())
    # recorded in both files, and what the robot's preprocessing and prompt read
    assert m["preprocess"]["pixel_norm"] == meta["model"]["preprocess"]["pixel_norm"] == norm
    assert m["prompt"]["default_instruction"] == meta["model"]["default_instruction"] == trained
    assert meta["training_vintage"]["pixel_norm"] == {"value": norm, "from": "--pixel-norm"}  # (the CLI's name)
    assert meta["training_vintage"]["instruction"] == {"value": trained, "from": "--instruction"}
    assert bundle.preprocess.pixel_norm == norm and m["prompt"]["layout"] == "robovlms-fallback"
    tokenizer = bundle.tokenizer()
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(WINDOW + 3)]
    worst = 0.0
    for instruction in (None, SHORT if trained == LONG else LONG):  # None: the bundle's (trained) instruction
        want, want_features, text_tokens = original_actions(policy, tokenizer, instruction or trained, frames, norm)
        assert (text_tokens < Q_TINY) == ((instruction or trained) == SHORT)
        got, features = served_actions(bundle, frames, instruction)
        assert got.shape == want.shape == (WINDOW + 3, AXES)
        assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max(axis=1)
        assert np.abs(features - want_features).max() < 1e-4  # the ACT features themselves agree too
        worst = max(worst, np.abs(got - want).max())
    want, _, _ = original_actions(policy, tokenizer, trained, frames, norm)
    other = next(n for n in VINTAGES if n != norm)
    wrong_norm, _ = served_actions(load_bundle(vintage_bundles[other][1]), frames, trained)
    assert np.abs(wrong_norm - want).max() > max(100 * worst, 1e-3)  # > 10x the 1e-4 bound
    swapped, _ = served_actions(bundle, [np.ascontiguousarray(f[..., ::-1]) for f in frames])
    assert np.abs(swapped - want).max() > 10 * max(worst, 1e-6)


def test_unmatched_keys_are_refused_or_listed_with_allow_missing(tmp_path, original):
    from train.import_robovlms import ImportOptions, ImportRefused, import_checkpoint

    ckpt = torch.load(original[0], weights_only=True)
    ckpt["state_dict"]["model.mystery.weight"] = torch.zeros(2)
    path = tmp_path / "extra.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ImportRefused, match=r"match nothing in our model: model\.mystery\.weight.*--allow-missing"):
        import_checkpoint(path, tmp_path / "out")
    report = import_checkpoint(path, tmp_path / "out", ImportOptions(allow_missing=True))
    assert report["keys"]["unmatched"] == ["model.mystery.weight"]
    assert report["keys_accounted"] == report["keys_in_file"]


def test_an_imported_checkpoint_carries_how_the_original_robot_drove(imported):
    import json

    ckpt, _, _ = imported
    assert json.loads((ckpt / "config.json").read_text())["driving"] == {
        "mode": "step", "discrete": True, "frame_spacing_s": 0.4,
        "source": "imported: the original robot drove each action as one discrete 0.4 s move "
                  "(train.import_robovlms, docs/migrating.md)"}


@pytest.mark.slow
def test_an_imported_checkpoint_exported_and_driven_with_no_flags_drives_in_discrete_steps(imported, tmp_path,
                                                                                          capsys):
    """The original robot drove each action as one 0.4 s move, direction only: the import records that, the
    bundle carries it, and the simulated drive takes it without a flag (~10 s: the export and the drive)."""
    from export.to_onnx import ExportOptions, export_bundle
    from runtime.control.steplog import read_log
    from sim.drive import main as sim_drive

    ckpt, _, _ = imported
    model, tokenizer, meta = load_checkpoint(ckpt, merge=True)  # export.to_onnx's CLI path, in this process
    bundle = export_bundle(model, tokenizer, tmp_path / "bundle", ExportOptions(origin=str(ckpt), verify=False,
                                                                                engine_input=False), ckpt_meta=meta)
    log = tmp_path / "drive.jsonl"
    code = sim_drive(["--bundle", str(bundle), "--seed", "2", "--width", "128", "--height", "72", "--max-steps", "3",
                      "--direct", "--quiet", "--log", str(log)])  # no driving flags
    err = capsys.readouterr().err
    assert code == 0, err
    assert "mode step (bundle), discrete moves (bundle), 0.4 s per step-mode move (bundle)" in err
    assert "defaulted" not in err and "imported: the original robot" in err
    actions = np.array([r["action"][:2] for r in read_log(log) if r["type"] == "step"])
    assert len(actions) and np.all(np.isclose(np.abs(actions), 1.15) | (actions == 0)), actions  # snapped moves
