"""Which policy drives: a bundle, a backend, an instruction and the behaviours around it, as one spec.

    spec = PolicySpec(bundle=Path("bundle/"), backend="ort-cpu", chunk_mode="ensemble", discrete=True)
    with open_policy(spec) as policy:        # loads, activates the backend, wraps the behaviours
        step = policy.infer(frame)           # the backend is deactivated on leaving, whatever happened

`add_policy_arguments(parser)` gives a command the drive's policy options
(`--bundle --backend --variant --verify --instruction --chunk-mode
--discrete`); `PolicySpec.from_args(args)` reads them back. The defaults live
here, once.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from runtime.policy.behaviours import CHUNK_MODES, with_behaviours
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy

BACKENDS = ("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu")


@dataclass(frozen=True)
class PolicySpec:
    bundle: Path  # bundle folder from export.to_onnx
    backend: str = "auto"  # one of BACKENDS; auto: TensorRT engines where they load, else ONNX Runtime
    variant: str = "fp32"  # ONNX variant for ONNX Runtime backends (fp32, fp16, int8)
    verify: str = "quick"  # bundle check at start: quick (sizes/times since the last full hash) or full
    instruction: str | None = None  # what to do; None: the bundle's default instruction
    chunk_mode: str = "first"  # runtime.policy.behaviours.CHUNK_MODES: first, chunk (open loop) or ensemble
    discrete: bool = False  # snap each axis to the nearest demonstrated move

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PolicySpec:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def add_policy_arguments(ap: argparse.ArgumentParser) -> None:
    d = PolicySpec
    ap.add_argument("--bundle", "--fallback-bundle", dest="bundle", type=Path, required=True,
                    help="bundle folder from export.to_onnx (with --policy ws://...: the onboard fallback)")
    ap.add_argument("--backend", default=d.backend, choices=BACKENDS)
    ap.add_argument("--variant", default=d.variant, help="ONNX variant for ONNX Runtime backends (fp32, fp16, int8)")
    ap.add_argument("--verify", choices=("quick", "full"), default=d.verify,
                    help="bundle check at start: quick (big files by size/times since their last full hash) or full")
    ap.add_argument("--instruction", help="what to do (default: the bundle's default instruction)")
    ap.add_argument("--chunk-mode", default=d.chunk_mode, choices=CHUNK_MODES)
    # default None: the bundle's driving record decides (runtime.drive.spec_from_args)
    ap.add_argument("--discrete", action="store_const", const=True,
                    help="snap each axis to the nearest demonstrated move (-range, 0, +range), as recorded "
                         "(default: the bundle's driving record)")
    ap.add_argument("--no-discrete", action="store_const", const=False, dest="discrete",
                    help="the head's raw actions (default: the bundle's driving record)")


@contextmanager
def open_policy(spec: PolicySpec):
    """The spec's policy, its backend active; the backend is released on leaving (a TensorRT backend holds a
    CUDA context on its own thread). Raises BundleError, BackendError or PromptTooLongError with what to do."""
    from runtime.policy.backends.registry import (  # noqa: PLC0415  backends load with the bundle, not for --help
        make_backend,
    )

    bundle = load_bundle(spec.bundle, verify=spec.verify)
    backend = make_backend(bundle, spec.backend, variant=spec.variant).activate()
    try:
        yield with_behaviours(Policy(bundle, backend, instruction=spec.instruction), spec.chunk_mode, spec.discrete)
    finally:
        backend.deactivate()


def retarget_policy(policy, spec: PolicySpec, instruction: str):
    """The same bundle and active backend with another instruction, behind the spec's behaviours (a new
    episode: empty ring, no plan). Raises PromptTooLongError or BundleError as Policy does."""
    return with_behaviours(Policy(policy.bundle, policy.backend, instruction=instruction), spec.chunk_mode,
                           spec.discrete)
