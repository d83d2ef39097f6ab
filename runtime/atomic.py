"""Write a folder so that readers see all of it or none of it.

    with atomic_directory(Path("bundle"), overwrite=False) as tmp:
        (tmp / "bundle.json").write_text(...)
    # here `bundle/` exists, complete; after an exception nothing was left behind

Used for checkpoints and bundles: an interrupted training run or a failed
export must never leave a half folder that the next stage would trust.

What they write is readable by other users as a plain `mkdir` / `open` would
make it (0755 folders, 0644 files under the usual umask 022): `tempfile`
creates its temporary names 0700 / 0600, and a bundle copied to the robot is
read by the boot service's own account (jetson/README.md), not its author.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read from /proc where Linux shows it (setting it to read it races other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def created_mode(directory: bool = False) -> int:
    """The mode mkdir / open would give a new folder or file under this process's umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def make_shareable(path: Path | int, directory: bool = False) -> None:
    """Give a tempfile-made name (0700 / 0600) the mode a plain mkdir / open would have; an int is an open fd."""
    if isinstance(path, int):
        os.fchmod(path, created_mode(directory))
    else:
        os.chmod(path, created_mode(directory))


@contextlib.contextmanager
def atomic_directory(out: Path, overwrite: bool = False):
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    make_shareable(tmp, directory=True)
    try:
        yield tmp
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Replace one file atomically (write a sibling, fsync, rename), with the mode open() would give it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        make_shareable(fd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
