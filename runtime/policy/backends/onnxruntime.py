"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider.

    from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
    with OnnxRuntimeBackend(bundle, provider="cpu", variant="int8") as b: ...

`provider` is "cpu", "cuda" or "tensorrt" (`--backend ort-cpu|ort-cuda|ort-trt`).
A provider that this onnxruntime build lacks is refused with the package to
install, instead of ORT's silent fallback to the CPU.

`batched=True` (a policy server batching robots' frames, docs/serving.md)
loads the bundle's batch graphs of vision and language (`serving_batch` in
bundle.json: a dynamic batch axis, exported with `--serve-batch B`) in place
of the batch-1 ones, and runs B frames in one call.
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
    def __init__(self, bundle, provider: str = "cpu", variant: str = "fp32", threads: int | None = None,
                 batched: bool = False):
        super().__init__(bundle, variant)
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        self.provider = provider
        self.name = f"ort-{'trt' if provider == 'tensorrt' else provider}"
        self.threads = threads
        self.sessions = {}
        self.batched = batched
        self._batch = bundle.manifest.get("serving_batch") if batched else None
        if batched and not self._batch:
            raise BackendError(f"{bundle.root}: no batch graphs in this bundle (bundle.json has no 'serving_batch'); "
                               f"export it with --serve-batch B (python -m export.to_onnx CKPT --out DIR "
                               f"--serve-batch 8), or serve without --max-batch")
        if batched and variant != "fp32":
            raise BackendError(f"the batch graphs are fp32; serve --variant fp32 with --max-batch (found {variant!r})")

    @property
    def max_batch(self) -> int:
        return int(self._batch["max_batch"]) if self._batch else 1

    def graph_files(self) -> dict[str, str]:
        files = super().graph_files()
        if self._batch:
            files.update(self._batch["files"])
        return files

    def precision(self) -> str:
        return "fp16 (TensorRT EP)" if self.provider == "tensorrt" else self.variant

    def _graph_names(self) -> dict[str, str]:
        """graph -> the manifest's graph entry this backend runs for it (the batch graphs when batched)."""
        names = {g: g for g in GRAPHS}
        if self._batch:
            names.update(self._batch["graphs"])
        return names

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
        for graph, entry in self._graph_names().items():
            path = self.bundle.root / self.graph_files()[graph] if self._batch else \
                self.bundle.graph_file(graph, self.variant)
            try:
                self.sessions[entry] = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as e:  # ORT raises its own exception types
                self.sessions.clear()
                raise BackendError(f"{path}: onnxruntime could not load it: {e}") from e

    def _deactivate(self) -> None:
        self.sessions.clear()

    def encode_frame(self, pixels: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self._batch:
            return self.encode_frames(pixels, input_ids, attention_mask)
        return super().encode_frame(pixels, input_ids, attention_mask)

    def encode_frames(self, pixels: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if not self._batch:
            return super().encode_frames(pixels, input_ids, attention_mask)
        vision, language = self._batch["graphs"]["vision"], self._batch["graphs"]["language"]
        embeds = self.run_graph(vision, {"pixel_values": pixels})["image_embeds"]
        out = self.run_graph(language, {"input_ids": input_ids, "attention_mask": attention_mask,
                                        "image_embeds": embeds})
        self.timings["vision"], self.timings["language"] = self.timings.pop(vision), self.timings.pop(language)
        return out["act_feature"]

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[graph]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
