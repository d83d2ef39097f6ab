"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider.

    from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
    with OnnxRuntimeBackend(bundle, provider="cpu", variant="int8") as b: ...

`provider` is "cpu", "cuda" or "tensorrt" (`--backend ort-cpu|ort-cuda|ort-trt`).
A provider that this onnxruntime build lacks is refused with the package to
install, instead of ORT's silent fallback to the CPU.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from runtime.policy.backends.base import Backend, BackendError
from runtime.policy.bundle import GRAPHS

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    import onnxruntime as ort  # noqa: PLC0415  onnxruntime: ~60 ms; not for --help

    return list(ort.get_available_providers())


class OnnxRuntimeBackend(Backend):
    def __init__(self, bundle, provider: str = "cpu", variant: str = "fp32", threads: int | None = None):
        super().__init__(bundle, variant)
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        self.provider = provider
        self.name = f"ort-{'trt' if provider == 'tensorrt' else provider}"
        self.threads = threads
        self.sessions = {}

    def _provider_list(self) -> list:
        want = PROVIDERS[self.provider]
        have = available_providers()
        if want not in have:
            raise BackendError(f"{self.name}: onnxruntime here has {have}, not {want}; "
                               f"install onnxruntime-gpu (CUDA/TensorRT) or pick --backend ort-cpu")
        if self.provider == "tensorrt":
            cache = str(self.bundle.root / "ort_trt_cache")
            os.makedirs(cache, exist_ok=True)
            opts = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache}
            return [(want, opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
        if self.provider == "cuda":
            return [want, "CPUExecutionProvider"]
        return [want]

    def _activate(self) -> None:
        import onnxruntime as ort  # noqa: PLC0415  onnxruntime: ~60 ms; not for --help

        parity = self.bundle.manifest["variants"].get(self.variant, {}).get("parity", {})
        if parity and not parity.get("passed", False):
            warnings.warn(f"{self.bundle.root}: variant {self.variant!r} failed its parity check at export "
                          f"(see bundle.json); its actions may be wrong", stacklevel=2)

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 3
        # The three graphs run back to back in three sessions: an idle pool spinning for work steals the
        # cores the next graph needs. Measured on 2 cores, small preset: step 372 -> 259 ms (fp32),
        # 253 -> 142 ms (int8) with spinning off.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = self._provider_list()
        for graph in GRAPHS:
            path = self.bundle.graph_file(graph, self.variant)
            try:
                self.sessions[graph] = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as e:  # ORT raises its own exception types
                self.sessions.clear()
                raise BackendError(f"{path}: onnxruntime could not load it: {e}") from e

    def _deactivate(self) -> None:
        self.sessions.clear()

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
