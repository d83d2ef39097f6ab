"""Secure by default: no exposed server without a key, keys never needed on a command line, TLS served directly."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import numpy as np
import pytest

from runtime.policy.wire import API_KEY_ENV


def server_args(*argv: str) -> argparse.Namespace:
    from serve.options import add_server_arguments

    ap = argparse.ArgumentParser()
    add_server_arguments(ap)
    return ap.parse_args(list(argv))


def test_python_m_serve_on_every_interface_without_a_key_exits_with_a_clear_error(tiny_bundle_dir):
    from tests.helpers.processes import run_python

    out = run_python("-m", "serve", "--bundle", str(tiny_bundle_dir), "--host", "0.0.0.0", timeout=60,
                     env={API_KEY_ENV: ""})
    assert out.returncode == 1
    assert "error: --host 0.0.0.0 listens beyond this machine, and no key is set" in out.stderr
    assert "--api-key-file" in out.stderr and "--insecure" in out.stderr


def test_an_exposed_server_takes_its_key_from_a_file_or_the_environment_or_runs_insecure_when_told(tmp_path,
                                                                                                   monkeypatch):
    from runtime.cli import CommandError
    from serve.options import server_config_from_args

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    assert server_config_from_args(server_args("--host", "0.0.0.0", "--api-key-file", str(key))).api_key == "s3cret"
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert server_config_from_args(server_args("--host", "10.1.2.3")).api_key == "from-env"
    monkeypatch.delenv(API_KEY_ENV)
    assert server_config_from_args(server_args("--host", "0.0.0.0", "--insecure")).api_key is None
    assert server_config_from_args(server_args("--host", "::1")).api_key is None  # loopback: no key needed
    with pytest.raises(CommandError, match="no key is set"):
        server_config_from_args(server_args("--host", "robot-server.lan"))  # a name may resolve to anything
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CommandError, match="empty"):
        server_config_from_args(server_args("--host", "0.0.0.0", "--api-key-file", str(tmp_path / "empty")))


def test_the_robot_reads_the_key_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from runtime.policy.remote import add_remote_arguments, remote_config_from_args

    ap = argparse.ArgumentParser()
    add_remote_arguments(ap)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    (tmp_path / "key").write_text("k1\n")
    args = ap.parse_args(["--policy", "ws://h:8000", "--policy-api-key-file", str(tmp_path / "key")])
    assert remote_config_from_args(args).api_key == "k1"
    monkeypatch.setenv(API_KEY_ENV, "k2")
    assert remote_config_from_args(ap.parse_args(["--policy", "ws://h:8000"])).api_key == "k2"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl, as docs/serving.md makes one)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: it makes the test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def test_tls_is_served_directly_and_the_robot_drives_over_wss(engine, tiny_bundle, onboard, certificate):
    """--certfile/--keyfile: the robot's client connects with wss:// and the certificate as its CA; features equal
    the onboard ones; the health check answers over https; a plain ws:// client gets nothing."""
    import ssl
    import urllib.request

    from runtime.policy.remote import RemotePolicy
    from runtime.policy.remote_encoder import OnboardReference, RemoteConfig, RemoteEncoder
    from runtime.policy.wire import model_identity
    from serve.server import ServerConfig, ServerThread
    from tests.serve.conftest import robot_frames

    cert, key = certificate
    with ServerThread(engine, ServerConfig(port=0, certfile=str(cert), keyfile=str(key))) as running:
        assert running.url.startswith("wss://")
        reference_policy = onboard()
        encoder = RemoteEncoder(RemoteConfig(running.url, ca_file=str(cert), timeout=2.0, max_slowdown=float("inf"),
                                             connect_timeout=10.0),  # a TLS handshake on a loaded machine
                                model_identity(tiny_bundle.manifest),
                                OnboardReference(tiny_bundle, reference_policy.backend)).start()
        try:
            assert encoder.connected, encoder.why
            policy = RemotePolicy(tiny_bundle, reference_policy.backend, encoder)
            for frame in robot_frames(31, 3):
                assert np.array_equal(policy.infer(frame).chunk, reference_policy.infer(frame).chunk)
                assert policy.source == "remote"
        finally:
            encoder.close()
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(running.url.replace("wss://", "https://") + "/healthz", context=context) as r:
            assert r.read() == b"OK\n"
        plain = RemoteEncoder(RemoteConfig(running.url.replace("wss://", "ws://"), connect_timeout=1.0)).start()
        assert not plain.connected
        plain.close()
