"""The policy on ONNX Runtime: PyTorch's actions without torch, the instruction's limits."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from runtime.policy.bundle import load_bundle
from tests.conftest import ROOT


def test_a_too_long_instruction_is_refused_naming_the_limit(tiny_bundle_dir):
    from runtime.policy.backends.registry import make_backend
    from runtime.policy.onboard import Policy
    from runtime.policy.prompt import PromptTooLongError

    bundle = load_bundle(tiny_bundle_dir)
    with make_backend(bundle, "ort-cpu") as backend, pytest.raises(PromptTooLongError, match="at most"):
        Policy(bundle, backend, instruction="go left and then right " * 10)


def test_runtime_without_torch_gives_pytorch_actions(tiny_bundle_dir, tiny_checkpoint, tmp_path):
    """The bundle runs with torch/transformers made unimportable, and matches the PyTorch forward."""
    from train.checkpoint import load_checkpoint
    from train.examples import example_inputs

    model, tok, _ = load_checkpoint(tiny_checkpoint)
    ex = example_inputs(model.config, tok, seed=11)
    np.save(tmp_path / "frames.npy", ex.frames)
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] in ('torch', 'transformers', 'peft', 'lightning'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from runtime.bundle import load_bundle
        from runtime.policy.backends.registry import make_backend
        from runtime.policy.onboard import Policy
        bundle = load_bundle({str(tiny_bundle_dir)!r})
        frames = np.load({str(tmp_path / 'frames.npy')!r})
        with make_backend(bundle, 'auto') as backend:
            policy = Policy(bundle, backend)
            chunks = [policy.infer(f).normalized_chunk for f in frames]
        np.save({str(tmp_path / 'chunks.npy')!r}, np.stack(chunks))
        print('backend', backend.name)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "backend ort-cpu" in proc.stdout
    with torch.no_grad():
        expected = model(ex.pixel_values, ex.prompt)[0].numpy()
    got = np.load(tmp_path / "chunks.npy")
    assert np.abs(got - expected).max() < 1e-4


