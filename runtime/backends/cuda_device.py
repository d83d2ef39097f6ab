"""The name of the CUDA device, the one string that ties an engine to the GPU it was built on.

    python -m runtime.backends.cuda_device          # prints e.g. "Orin" (exit 1 and the fix if no CUDA here)
    from runtime.backends.cuda_device import cuda_device_name

Engine builds record it (`python -m export.to_trt`, `jetson/build_engines.sh`)
and the runtime compares it with what it finds (`TensorRTBackend`,
`runtime.preflight`), so both sides must ask the same question the same way:
the CUDA driver's name of device 0, through pycuda. Not the board model from
/proc/device-tree (it names the carrier board, not the GPU, and would never
match what the runtime reads from pycuda).
"""

from __future__ import annotations

import argparse
import sys

from runtime.backends.base import BackendError
from runtime.cli import exits_on

PYCUDA_FIX = ("pycuda is not installed in this environment: on a Jetson run bash jetson/setup.sh "
              "(it builds pycuda against /usr/local/cuda); on a desktop GPU: pip install pycuda")


def cuda_device_name(cuda=None, index: int = 0) -> str:
    """Name of CUDA device `index` as the driver reports it. `cuda`: pycuda.driver (injectable for tests)."""
    if cuda is None:
        try:
            import pycuda.driver as cuda
        except ImportError as e:
            raise BackendError(f"{PYCUDA_FIX} ({e})") from e
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
