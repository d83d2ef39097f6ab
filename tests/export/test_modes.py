"""What the export and the engine builds write is readable by other users: the boot service drives as its own account.

    python -m pytest -q tests/export/test_modes.py

jetson/README.md copies the bundle to /opt/mobile-vla/ and the systemd unit runs the drive as DRIVE_USER, not as
the bundle's author. `tempfile` makes its names 0700 / 0600 whatever the umask, so a bundle written through it
would refuse that account (PermissionError at start). Under the usual umask 022 every folder must come out 0755
and every file 0644, as `mkdir` and `open` would make them; under a stricter umask, what that umask allows.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.fakes import gpu as fake_gpu

READER = "mvla-modes-test"  # an unprivileged account made for the test (root only) and removed after it


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def shared_dir():
    """A folder other accounts may enter (pytest's tmp_path is 0700): the bundle's own modes are what is tested."""
    path = Path(tempfile.mkdtemp(prefix="mvla-modes-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def export_and_build(tiny_model, tiny_tokenizer, where: Path, monkeypatch) -> Path:
    """A tiny bundle as export.to_onnx writes it, engines by export.to_trt (fake GPU), then recorded again the way
    jetson/build_engines.sh records trtexec's engines (python -m runtime.engines --record: a bundle.json rewrite)."""
    from export.to_onnx import ExportOptions, export_bundle
    from export.to_trt import build_all
    from runtime.policy.engines import record_engines

    bundle = export_bundle(tiny_model, tiny_tokenizer, where / "bundle", ExportOptions(verify=False))
    fake_gpu.install(monkeypatch)
    build_all(bundle)
    engines = {e["graph"]: e["file"] for e in json.loads((bundle / "bundle.json").read_text())["engines"]}
    record_engines(bundle, engines, "10.3.0", "Orin", "trtexec")
    return bundle


def modes(bundle: Path) -> dict[str, str]:
    out = {".": oct(stat.S_IMODE(bundle.stat().st_mode))}
    out.update({p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in bundle.iterdir()})
    return out


def test_every_file_the_export_and_the_engine_builds_write_is_0644_in_a_0755_folder(tiny_model, tiny_tokenizer,
                                                                                       shared_dir, umask_022,
                                                                                       monkeypatch):
    bundle = export_and_build(tiny_model, tiny_tokenizer, shared_dir, monkeypatch)
    found = modes(bundle)
    assert {"bundle.json", "vision.fp16.onnx", "language.fp16.onnx", "vision.fp16.engine", "timing.cache"} <= \
        set(found), sorted(found)
    wrong = {name: mode for name, mode in found.items() if mode != ("0o755" if name == "." else "0o644")}
    assert not wrong, f"not readable by the drive's account (want 0755 folders, 0644 files): {wrong}"


def test_a_stricter_umask_is_respected(tmp_path, monkeypatch):
    from runtime.atomic import atomic_directory, atomic_write_text

    old = os.umask(0o077)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            atomic_write_text(tmp / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "out" / "a.json").stat().st_mode) == 0o600


def _can_add_users() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create an unprivileged account (useradd); run as root, e.g. in CI"
    if not (shutil.which("useradd") and shutil.which("runuser") and shutil.which("userdel")):
        return "useradd, runuser or userdel missing"
    return None


@pytest.fixture
def reader():
    why = _can_add_users()
    if why:
        pytest.skip(why)
    made = subprocess.run(["id", READER], capture_output=True).returncode != 0
    if made:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", READER],
                       check=True, capture_output=True)
    yield READER
    if made:
        subprocess.run(["userdel", READER], capture_output=True)


def test_another_unprivileged_account_reads_every_file_of_the_bundle(tiny_model, tiny_tokenizer, shared_dir,
                                                                      umask_022, monkeypatch, reader):
    bundle = export_and_build(tiny_model, tiny_tokenizer, shared_dir, monkeypatch)
    files = sorted(p for p in bundle.iterdir() if p.is_file())
    proc = subprocess.run(["runuser", "-u", reader, "--", "sha256sum", *map(str, files)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"{reader} cannot read the bundle: {proc.stderr}"
    read = {Path(line.split(None, 1)[1]).name: line.split()[0] for line in proc.stdout.splitlines()}
    assert read == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    listed = subprocess.run(["runuser", "-u", reader, "--", "ls", str(bundle)], capture_output=True, text=True)
    assert listed.returncode == 0 and set(listed.stdout.split()) >= {p.name for p in files if
                                                                      not p.name.startswith(".")}
