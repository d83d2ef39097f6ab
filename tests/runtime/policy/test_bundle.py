"""Fast starts that keep the integrity guarantee: big files are hashed once, then checked by size and times."""

import builtins
import io
import json
import os
import shutil

import pytest

import runtime.policy.bundle as bundle_mod
from runtime.policy.bundle import BundleError, load_bundle, verification_record_path
from tests.conftest import run_python

LARGE = 300_000  # bytes: makes the tiny bundle's bigger graphs count as "large" (the real ones are GBs)


@pytest.fixture
def bundle(tiny_bundle_dir, tmp_path, monkeypatch):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, dst)
    (dst / ".verified.json").unlink(missing_ok=True)  # a copy is a new bundle: nothing verified yet
    monkeypatch.setattr(bundle_mod, "SMALL_FILE_BYTES", LARGE)
    return dst


def large_files(root):
    return sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.name != "bundle.json" and p.stat().st_size > LARGE)


@pytest.fixture
def opens(monkeypatch):
    """Names of every file opened through open()/io.open while the test runs."""
    seen = []
    real = builtins.open

    def counting(file, *a, **k):
        seen.append(os.path.basename(os.fspath(file)) if not isinstance(file, int) else file)
        return real(file, *a, **k)

    monkeypatch.setattr(builtins, "open", counting)
    monkeypatch.setattr(io, "open", counting)
    return seen


def test_second_start_reads_none_of_the_large_files(bundle, opens):
    large = large_files(bundle)
    assert len(large) >= 2, "the fixture needs large files"
    first = load_bundle(bundle)
    assert sorted(first.verified["hashed"]) == sorted(load_bundle(bundle, verify="none").manifest["files"])
    assert set(large) <= set(opens)  # the first start hashes everything, and records it
    assert verification_record_path(bundle).is_file()
    opens.clear()
    second = load_bundle(bundle)
    assert not set(large) & set(opens), f"opened {set(large) & set(opens)} on the second start"
    assert sorted(second.verified["trusted"]) == large
    assert "tokenizer.json" in second.verified["hashed"]  # small files are always hashed


@pytest.mark.parametrize("change", ["append", "same-size-rewrite"])
def test_a_changed_large_file_is_still_caught(bundle, change):
    load_bundle(bundle)
    victim = bundle / large_files(bundle)[0]
    data = bytearray(victim.read_bytes())
    if change == "append":
        data += b"x"
    else:
        data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{victim.name}: sha256"):
        load_bundle(bundle)


def test_same_size_change_with_mtime_restored_is_caught_by_verify_full(bundle):
    load_bundle(bundle)
    victim = bundle / large_files(bundle)[0]
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert victim.stat().st_size == st.st_size and victim.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(BundleError, match=f"{victim.name}: sha256"):
        load_bundle(bundle, verify="full")
    # quick catches it too: the record also holds ctime, which utime cannot set back
    with pytest.raises(BundleError, match=f"{victim.name}: sha256"):
        load_bundle(bundle)


def test_verify_full_hashes_everything_even_with_a_valid_record(bundle):
    load_bundle(bundle)
    full = load_bundle(bundle, verify="full")
    assert full.verified["trusted"] == [] and len(full.verified["hashed"]) == len(full.manifest["files"])


def test_bundle_and_drive_clis_take_verify_full(bundle):
    proc = run_python("-m", "runtime.bundle", str(bundle), "--verify", "full", timeout=60)
    files = len(load_bundle(bundle, verify="none").manifest["files"])
    assert proc.returncode == 0 and f"sha256 of {files} files" in proc.stdout


def test_record_of_a_read_only_bundle_goes_to_the_cache_folder(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILE_VLA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bundle_mod.os, "access", lambda path, mode: False)  # as the service user sees /opt
    path = verification_record_path(bundle)
    assert path.parent == tmp_path / "cache" and bundle.name in path.name
    load_bundle(bundle)
    assert path.is_file() and not (bundle / ".verified.json").exists()
    assert load_bundle(bundle).verified["trusted"] == large_files(bundle)


def test_drive_verify_full_ignores_the_record(bundle, episode_file, capsys, signal_handlers):
    """A record that vouches for a changed file (written by hand, or by a bug) fools the quick check only."""
    import json

    from runtime.drive import main

    load_bundle(bundle)
    record_path = verification_record_path(bundle)
    victim = bundle / large_files(bundle)[0]
    data = bytearray(victim.read_bytes())
    data[7] ^= 0xFF
    victim.write_bytes(bytes(data))
    record = json.loads(record_path.read_text())
    st = victim.stat()
    record["files"][victim.name].update(bytes=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                                        ino=st.st_ino)
    record_path.write_text(json.dumps(record))
    args = ["--bundle", str(bundle), "--dry-run", "--camera", str(episode_file), "--max-steps", "1", "--quiet"]
    # in this process, where SMALL_FILE_BYTES makes the victim a "large" file
    assert main(args) == 0  # the quick check believed the record
    capsys.readouterr()
    assert main(args + ["--verify", "full"]) == 1
    assert f"{victim.name}: sha256" in capsys.readouterr().err


def test_changed_file_fails_sha256_naming_it(tiny_bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle_dir, bad)
    with open(bad / "language.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"language\.onnx: sha256 .* does not match"):
        load_bundle(bad)
    proc = run_python("-m", "runtime.bundle", str(bad))
    assert proc.returncode == 1 and "language.onnx" in proc.stderr


def test_missing_field_is_named(tiny_bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle_dir, bad)
    m = json.loads((bad / "bundle.json").read_text())
    del m["policy"]["chunk"]
    (bad / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"missing field 'policy\.chunk'"):
        load_bundle(bad)
