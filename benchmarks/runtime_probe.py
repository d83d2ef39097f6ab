"""Start-up time and peak memory of the runtime alone (no torch), as the robot would start it.

    python -m benchmarks.runtime_probe --bundle bundle/ --steps 20 --t0 $(date +%s.%N)
    python -m benchmarks.runtime_probe --bundle bundle/ --verify full    # as every start was before issue 12

Prints one JSON line: startup_s (from --t0, the moment the parent launched
this process, to the first action), peak_rss_mb, steps.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from runtime.logs import add_log_level_argument, setup_logging

T_IMPORT = time.time()


def peak_rss_mb() -> float:
    """VmHWM of this process. Not ru_maxrss: Linux carries that across exec from the (torch-sized) parent."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--t0", type=float, help="wall-clock time the parent started this process")
    ap.add_argument("--verify", choices=("quick", "full"), default="quick", help="the bundle check at start")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    from runtime.cameras.sample_frames import sample_frame  # noqa: PLC0415  timed: part of the start-up measured
    from runtime.policy.backends.registry import make_backend  # noqa: PLC0415  timed: part of the start-up measured
    from runtime.policy.bundle import load_bundle  # noqa: PLC0415  timed: part of the start-up measured
    from runtime.policy.onboard import Policy  # noqa: PLC0415  timed: part of the start-up measured

    frame = sample_frame(0)
    t_load = time.time()
    bundle = load_bundle(args.bundle, verify=args.verify)
    load_s = time.time() - t_load
    with make_backend(bundle, args.backend, variant=args.variant) as backend:
        policy = Policy(bundle, backend)
        policy.infer(frame)
        first = time.time()
        for _ in range(args.steps - 1):
            policy.infer(frame)
    peak = peak_rss_mb()
    heavy = [m for m in ("torch", "transformers") if m in sys.modules]
    print(json.dumps({"startup_s": first - (args.t0 or T_IMPORT), "bundle_check_s": load_s,
                      "verify": args.verify, "peak_rss_mb": peak, "steps": args.steps,
                      "backend": backend.name, "heavy_modules": heavy}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
