"""The name of the CUDA device, the one string that ties an engine to the GPU it was built on.

    python -m runtime.policy.backends.cuda_device          # prints e.g. "Orin" (exit 1 and the fix if no CUDA here)
    from runtime.policy.backends.cuda_device import cuda_device_name

Engine builds record it (`python -m export.to_trt`, `jetson/build_engines.sh`)
and the runtime compares it with what it finds (`TensorRTBackend`,
`runtime.preflight`), so both sides must ask the same question the same way:
the CUDA driver's name of device 0, through pycuda. Not the board model from
/proc/device-tree (it names the carrier board, not the GPU, and would never
match what the runtime reads from pycuda).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from runtime.cli import exits_on
from runtime.policy.backends.base import BackendError

# How to get the GPU stack, said once for every command that needs it.
GPU_STACK_FIX = ("on a Jetson: bash jetson/setup.sh (JetPack ships tensorrt for the system Python; setup.sh builds "
                 "pycuda against /usr/local/cuda); on a desktop GPU: pip install -e '.[jetson]' "
                 "(tensorrt-cu12 and pycuda; pycuda compiles against the CUDA toolkit, see jetson/README.md)")


def gpu_stack_problem(modules=("tensorrt", "pycuda.driver")) -> str | None:
    """Why `import tensorrt` / `import pycuda.driver` fails here, with the fix; None when both import."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            return f"{name} does not import in this environment ({e}). Fix: {GPU_STACK_FIX}"
    return None


def cuda_device_name(cuda=None, index: int = 0) -> str:
    """Name of CUDA device `index` as the driver reports it. `cuda`: pycuda.driver (injectable for tests)."""
    if cuda is None:
        problem = gpu_stack_problem(("pycuda.driver",))
        if problem:
            raise BackendError(problem)
        import pycuda.driver as cuda

    try:
        cuda.init()
        return str(cuda.Device(index).name())
    except Exception as e:  # pycuda raises its own LogicError/RuntimeError for a missing driver or device
        raise BackendError(f"CUDA device {index} is not usable here: {type(e).__name__}: {e}; "
                           f"check the driver (nvidia-smi, or tegrastats on a Jetson)") from e


@exits_on(BackendError)
def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(cuda_device_name())
    return 0


if __name__ == "__main__":
    sys.exit(main())
