"""A disk that fills up: a small tmpfs mounted in a private mount namespace (`unshare -rm`, no root needed), a
command run with it, and what it left copied out before the namespace (and the tmpfs) goes.

    reason = small_disk_unavailable(tmp_path)          # None, or why this machine cannot (then skip)
    proc = run_on_small_disk(tmp_path / "disk", 40, [sys.executable, "-m", "runtime.record", ...], tmp_path / "after")
    proc.returncode                                     # the command's exit status (139: it crashed)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# $1 the mount point, $2 the size in MB, $3 where to copy it afterwards, then the command
SCRIPT = 'mount -t tmpfs -o size="$2"m tmpfs "$1" || exit 97; d="$1"; c="$3"; shift 3; "$@"; rc=$?; cp -a "$d" "$c"; ' \
         'exit $rc'


def small_disk_unavailable(scratch: Path) -> str | None:
    if not shutil.which("unshare"):
        return "needs util-linux unshare to mount a small tmpfs"
    probe = scratch / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                          capture_output=True, text=True)
    return None if proc.returncode == 0 else f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()}"


def run_on_small_disk(disk: Path, size_mb: int, command: list[str], copy_to: Path, timeout: float = 120,
                      env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `command` with a `size_mb` tmpfs at `disk`; the tmpfs's files end up in `copy_to` (text output)."""
    disk.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "-rm", "sh", "-c", SCRIPT, "sh", str(disk), str(size_mb), str(copy_to),
                           *command], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
