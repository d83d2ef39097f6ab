"""Check a bundle and print what it holds: fields, sha256 of every file, graphs, variants, engines.

    python -m runtime.bundle bundle/                  # quick: big files checked against the last full verification
    python -m runtime.bundle bundle/ --verify full    # sha256 of every file; exit 1 if a check fails

The bundle format and its checks: runtime/policy/bundle.py, docs/bundle-format.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import exits_on
from runtime.logs import add_log_level_argument, setup_logging
from runtime.policy.bundle import GRAPHS, BundleError, load_bundle


@exits_on(BundleError)
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--verify", choices=("quick", "full"), default="quick",
                    help="full: sha256 of every file; quick: big files checked against the last full verification")
    add_log_level_argument(ap)
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    b = load_bundle(args.bundle, verify=args.verify)
    m = b.manifest
    print(f"bundle    {b.root}  (ok: fields; sha256 of {len(b.verified['hashed'])} files, "
          f"{len(b.verified['trusted'])} unchanged since their last verification)")
    print(f"model     {m.get('model', {}).get('preset', '?')}  W={b.window} N={b.chunk} axes={b.action_axes}")
    d = b.driving
    print(f"driving   mode {d.mode}, {'discrete moves' if d.discrete else 'raw actions'}, frames "
          f"{d.frame_spacing_s:g} s apart ({d.source})")
    for g in GRAPHS:
        ins = ", ".join(f"{s.name}{list(s.shape)}" for s in b.inputs(g))
        outs = ", ".join(f"{s.name}{list(s.shape)}" for s in b.outputs(g))
        print(f"{g:<12}{ins} -> {outs}")
    for v, info in m["variants"].items():
        parity = info.get("parity", {})
        print(f"variant   {v:<5} parity {'passed' if parity.get('passed') else 'not checked'}")
    for e in m.get("engines", []):
        print(f"engine    {e['graph']} {e['file']} (TensorRT {e['tensorrt_version']}, {e['gpu']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
