"""Is this Jetson's software what the runtime needs? L4T vs TensorRT, pycuda, an OpenCV with GStreamer.

    python -m runtime.jetpack            # one line per check; exit 1 if one failed (jetson/setup.sh, check.sh)
    python -m runtime.jetpack --venv     # also: pycuda.driver and tensorrt import, cv2 has GStreamer

Stdlib only at import, so setup.sh can run it with the system python3 before
anything is installed. The checks and the facts they rest on:
runtime/policy/backends/jetpack.py.
"""

from __future__ import annotations

import argparse
import sys

from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.backends.jetpack import check_imports, check_l4t_tensorrt, check_opencv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", action="store_true", help="also check pycuda/tensorrt imports and cv2's GStreamer")
    ap.add_argument("--camera", default="csi", help="with --venv: the camera the robot will use")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    results = [("l4t", *check_l4t_tensorrt())]
    if args.venv:
        results += [("imports", *check_imports()), ("opencv", *check_opencv(args.camera))]
    for name, status, msg in results:
        print(f"{status:<4} {name:<8} {msg}")
    return 1 if any(s == "FAIL" for _, s, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
