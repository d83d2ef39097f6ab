"""The project's commands started as a user starts them: `python -m MODULE ARGS` from the repository root.

    from tests.helpers.processes import drive_process, finish, run_drive, run_python

    done = run_drive("--bundle", str(bundle), "--dry-run", "--camera", str(episode), "--quiet")  # waits
    assert done.returncode == 0, done.stderr
    with drive_process("--bundle", str(bundle), "--serial", port) as proc:  # a Popen: signals, live stderr
        ...
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc, timeout=10)
    # the block's end kills the process if it still runs (a failed assertion never leaves a drive behind)

Every helper takes `env` (added to this process's environment, which the `ros2_loopback` fixture has set
to loopback-only ROS for the subprocesses too); run_* take a `timeout`, start_drive/drive_process `stdin`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVE = "runtime.drive"


def _env(env: dict | None) -> dict:
    return {**os.environ, **(env or {})}


def run_python(*args, cwd=ROOT, timeout=300, env=None):
    """Run `python ARGS` to the end; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env(env))


def run_drive(*args, module=DRIVE, timeout=120, env=None):
    """Run `python -m runtime.drive ARGS` (or another `module`) to the end; returns the CompletedProcess."""
    return run_python("-m", module, *args, timeout=timeout, env=env)


def start_drive(*args, module=DRIVE, env=None, stdin=None, stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start `python -m runtime.drive ARGS` (or another `module`); stdout and stderr are text pipes.
    Prefer `drive_process` (it cannot leave the process running); read stderr only through `finish`
    or a reader thread."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, text=True, env=_env(env))


@contextmanager
def drive_process(*args, module=DRIVE, env=None, stdin=None, stdout=subprocess.PIPE):
    """`start_drive` for a with-block: whatever happens in the block, the process is killed if it still
    runs at its end, then waited for and its pipes closed."""
    with start_drive(*args, module=module, env=env, stdin=stdin, stdout=stdout) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[str, str]:
    """(stdout, stderr) once the process ends; killed (and TimeoutExpired raised) if it outlives `timeout`."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
