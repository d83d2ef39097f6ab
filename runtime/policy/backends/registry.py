"""Pick a backend by name: `--backend auto|ort-cpu|ort-cuda|ort-trt|trt`.

    backend = make_backend(bundle, "auto")   # the fastest one available here, and says which
    backend = make_backend(bundle, "trt")       # the native TensorRT engines, or a BackendError saying why not

`auto` takes the native TensorRT engines, then ONNX Runtime's TensorRT or
CUDA provider, then the CPU. On a Jetson (`/etc/nv_tegra_release` exists;
the path can be overridden with the TEGRA_RELEASE environment variable) it
never falls back to the CPU: a Jetson without a working GPU backend is a
broken install (the 1.6 B model on the ARM cores runs at a fraction of a
hertz), so `auto` refuses with the import or CUDA error and the fix. Asked
for by name, `--backend ort-cpu` still runs there.
"""

from __future__ import annotations

from runtime.policy.backends.base import Backend, BackendError
from runtime.policy.backends.cuda_device import cuda_device_name, gpu_stack_problem
from runtime.policy.backends.jetpack import tegra_release
from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend, available_providers
from runtime.policy.backends.tensorrt import TensorRTBackend

BACKENDS = ("auto", "trt", "ort-trt", "ort-cuda", "ort-cpu")


def is_jetson() -> bool:
    return tegra_release().is_file()


def trt_problem(bundle) -> str | None:
    """Why the native TensorRT backend cannot run this bundle here; None when it can."""
    problem = gpu_stack_problem()
    if problem:
        return f"the trt backend needs tensorrt and pycuda: {problem}"
    if not bundle.manifest.get("engines"):
        return f"{bundle.root}: no TensorRT engines in the bundle. Fix: bash jetson/build_engines.sh {bundle.root}"
    try:
        cuda_device_name()
    except BackendError as e:
        return str(e)
    return None


def resolve_backend_name(bundle, name: str) -> str:
    """`auto` -> the fastest backend usable here: native TensorRT engines, then ORT TensorRT/CUDA, then CPU."""
    if name not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name != "auto":
        return name
    problem = trt_problem(bundle)
    if problem is None:
        return "trt"

    have = available_providers()
    if "TensorrtExecutionProvider" in have:
        return "ort-trt"
    if "CUDAExecutionProvider" in have:
        return "ort-cuda"
    if is_jetson():
        raise BackendError(f"--backend auto: this is a Jetson ({tegra_release()} exists) but no GPU backend works "
                           f"here, and auto never drives a Jetson on its CPU. {problem}. To run on the CPU "
                           f"anyway, ask for it by name: --backend ort-cpu")
    return "ort-cpu"


def make_backend(bundle, name: str = "auto", variant: str = "fp32", threads: int | None = None,
                 batched: bool = False) -> Backend:
    """`batched`: the bundle's batch graphs of vision and language (a policy server's --max-batch)."""
    resolved = resolve_backend_name(bundle, name)
    if resolved == "trt":
        if batched:
            raise BackendError("--max-batch: the native TensorRT backend runs the batch-1 engines; batch the ONNX "
                               "batch graphs on the GPU with --backend ort-cuda (or ort-trt) instead")
        return TensorRTBackend(bundle)

    provider = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}[resolved]
    return OnnxRuntimeBackend(bundle, provider=provider, variant=variant, threads=threads, batched=batched)


__all__ = ["BACKENDS", "Backend", "BackendError", "is_jetson", "make_backend", "resolve_backend_name", "trt_problem"]
