"""Closed-loop and offline evaluation of a bundle trained on the simulator's demonstrations.

One small real run per module: expert demonstrations -> LoRA fit of tiny -> merge -> export (fp32 + int8).
The full-size figures (200 demonstrations, 50 rooms) come from `make demo` (docs/evaluation.md); here a
smaller run must still clear lower bounds that an untrained or a random policy cannot. The training takes about
three minutes on 2 cores, so the tests that need it are marked slow: CI runs them after the suite
(`make test-slow-ci`).
"""

import json

import numpy as np
import pytest

from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
from runtime.policy.behaviours import with_behaviours
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy
from sim.evaluate import closed_loop, offline
from tests.conftest import run_python

K = 16  # unseen rooms in the tests (the README's figure uses 50)
EPISODES, EPOCHS = 100, 8
SIZE = dict(width=128, height=72)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from export.to_onnx import ExportOptions, export_bundle
    from pipeline.demo import fit_options
    from sim.synth import write_sim_episodes
    from train.checkpoint import load_checkpoint
    from train.fit import fit
    from train.merge import merge_checkpoint

    root = tmp_path_factory.mktemp("sim")
    write_sim_episodes(root / "episodes", EPISODES, seed=0, workers=2, **SIZE)
    write_sim_episodes(root / "held_out", 8, seed=1, **SIZE)
    result = fit(fit_options(root / "episodes", EPOCHS, root / "runs", progress=False))
    merged = merge_checkpoint(result.best, root / "checkpoint")
    model, tokenizer, meta = load_checkpoint(root / "checkpoint")
    bundle = export_bundle(model, tokenizer, root / "bundle",
                           ExportOptions(origin=str(merged), fp16=True, int8=True, int8_scope="ffn"), ckpt_meta=meta)
    return {"root": root, "bundle": bundle, "model": model}


def make_policy_factory(bundle_dir, variant="fp32"):
    bundle = load_bundle(bundle_dir)
    backend = OnnxRuntimeBackend(bundle, variant=variant).activate()
    return lambda instruction: with_behaviours(Policy(bundle, backend, instruction=instruction), discrete=True)


@pytest.mark.slow
def test_trained_policy_beats_random_and_expert_is_near_perfect_in_closed_loop(trained):
    summaries = {s.name: s for s in closed_loop(make_policy_factory(trained["bundle"]), K, seed=0, **SIZE)}
    policy, random, expert = summaries["policy"], summaries["random"], summaries["expert"]
    assert expert.success >= 0.95
    assert random.success <= 0.2
    assert policy.success >= 0.4, [(r.layout.side, r.ended_by, r.steps) for r in policy.rollouts]
    assert policy.success >= random.success + 0.3
    assert policy.mean_latency_ms is not None and policy.mean_latency_ms > 0


@pytest.mark.slow
def test_onnx_runtime_and_pytorch_drive_the_same(trained):
    from export.torch_backend import TorchBackend

    bundle = load_bundle(trained["bundle"])
    torch_backend = TorchBackend(bundle, trained["model"])
    ort = closed_loop(make_policy_factory(trained["bundle"]), 8, seed=3, baselines=False, **SIZE)[0]
    def torch_policy(ins):
        return with_behaviours(Policy(bundle, torch_backend, instruction=ins), discrete=True)

    torch = closed_loop(torch_policy, 8, seed=3, baselines=False, **SIZE)[0]
    assert ort.success == torch.success
    for a, b in zip(ort.rollouts, torch.rollouts):
        assert a.steps == b.steps and a.ended_by == b.ended_by
        np.testing.assert_allclose(a.path, b.path, atol=1e-6)


@pytest.mark.slow
def test_offline_agreement_is_well_above_random_and_the_variants_agree_with_fp32(trained):
    report = offline(trained["root"] / "held_out", {v: make_policy_factory(trained["bundle"], v)
                                                     for v in ("fp32", "fp16", "int8")})
    fp32, rnd = report["variants"]["fp32"]["overall"], report["variants"]["random"]["overall"]
    assert fp32["move_8way"] >= rnd["move_8way"] + 0.3, report["variants"]
    assert fp32["sign_linear_y"] > rnd["sign_linear_y"] + 0.2
    assert fp32["rmse_linear_x"] < rnd["rmse_linear_x"]
    assert report["cross_agreement"]["fp32 vs fp16"] >= 0.95
    assert report["cross_agreement"]["fp32 vs int8"] >= 0.95, report["cross_agreement"]
    assert len(report["variants"]["fp32"]["episodes"]) == report["files"] == 8


@pytest.mark.slow
def test_evaluate_command_writes_figures_and_plots(trained, tmp_path):
    proc = run_python("-m", "sim.evaluate", "--bundle", str(trained["bundle"]), "--episodes", "3",
                      "--width", "128", "--height", "72", "--json", str(tmp_path / "closed.json"))
    assert proc.returncode == 0, proc.stderr
    assert "closed loop on 3 unseen layouts" in proc.stdout and "expert" in proc.stdout
    rows = {r["policy"]: r for r in json.loads((tmp_path / "closed.json").read_text())["results"]}
    assert set(rows) == {"policy", "random", "expert"} and rows["expert"]["success_rate"] == 1.0
    assert (tmp_path / "closed.png").stat().st_size > 10_000
    proc = run_python("-m", "sim.evaluate", "--bundle", str(trained["bundle"]), "--episodes",
                      str(trained["root"] / "held_out"), "--plot", str(tmp_path / "offline.png"))
    assert proc.returncode == 0, proc.stderr
    assert "fp32" in proc.stdout and "8-way agreement fp32 vs fp16" in proc.stdout
    assert "8-way agreement fp32 vs int8" in proc.stdout
    assert (tmp_path / "offline.png").stat().st_size > 10_000


def test_evaluate_refuses_bad_arguments(tiny_bundle_dir, tmp_path):
    proc = run_python("-m", "sim.evaluate", "--bundle", str(tiny_bundle_dir), "--episodes", str(tmp_path / "no"))
    assert proc.returncode == 1 and "neither a number of layouts nor a folder" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_python("-m", "sim.evaluate", "--bundle", str(tiny_bundle_dir), "--episodes", str(tmp_path / "empty"))
    assert proc.returncode == 1 and "no .h5 episodes" in proc.stderr
