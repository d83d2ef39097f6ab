"""Pick a backend by name: `--backend auto|ort-cpu|ort-cuda|ort-trt|trt`.

    backend = make_backend(bundle, "auto")   # the fastest one available here, and says which
"""

from __future__ import annotations

from runtime.backends.base import Backend, BackendError

BACKENDS = ("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu")


def _trt_ready(bundle) -> bool:
    if not bundle.manifest.get("engines"):
        return False
    try:
        import pycuda  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend_name(bundle, name: str) -> str:
    """`auto` -> the fastest backend usable here: native TensorRT engines, then ORT TensorRT/CUDA, then CPU."""
    if name not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    if _trt_ready(bundle):
        return "trt"
    from runtime.backends.onnxruntime import available_providers

    have = available_providers()
    if "TensorrtExecutionProvider" in have:
        return "ort-trt"
    if "CUDAExecutionProvider" in have:
        return "ort-cuda"
    return "ort-cpu"


def make_backend(bundle, name: str = "auto", variant: str = "fp32", threads: int | None = None) -> Backend:
    resolved = resolve_backend_name(bundle, name)
    if resolved == "trt":
        from runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(bundle)
    from runtime.backends.onnxruntime import OnnxRuntimeBackend

    provider = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}[resolved]
    return OnnxRuntimeBackend(bundle, provider=provider, variant=variant, threads=threads)


__all__ = ["BACKENDS", "Backend", "BackendError", "make_backend", "resolve_backend_name"]
