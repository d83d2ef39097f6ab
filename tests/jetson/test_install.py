"""The JetPack 6 install without a Jetson: setup.sh's plan (pycuda from source, no OpenCV wheel), the
runtime extra's metadata as pip evaluates it on aarch64, the container's L4T argument."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

JETSON = ROOT / "jetson"


def setup_dry_run(tmp_path, release_text=None):
    env = {**os.environ, "PYTHON": sys.executable, "VENV": str(tmp_path / "venv"), "CUDA_ROOT": "/usr/local/cuda"}
    if release_text is not None:
        release = tmp_path / "nv_tegra_release"
        release.write_text(release_text)
        env["TEGRA_RELEASE"] = str(release)
    else:
        env["TEGRA_RELEASE"] = str(tmp_path / "absent")
    return subprocess.run(["bash", str(JETSON / "setup.sh"), "--dry-run"], capture_output=True, text=True, env=env)


def test_setup_dry_run_builds_pycuda_against_cuda_and_pulls_no_opencv_wheel(tmp_path):
    proc = setup_dry_run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = [l for l in proc.stdout.splitlines() if l.startswith("would run:")]
    pycuda = [l for l in planned if "pycuda" in l and "pip install" in l]
    assert len(pycuda) == 1
    for needed in ("CUDA_ROOT=/usr/local/cuda", "PATH=/usr/local/cuda/bin:", "CPATH=/usr/local/cuda/include",
                   "--no-binary pycuda"):
        assert needed in pycuda[0]
    assert not [l for l in planned if "opencv" in l.lower() and "install" in l and "uninstall" not in l]
    assert any(l.endswith("[runtime]") for l in planned)  # the extra whose aarch64 metadata has no OpenCV
    assert any("runtime.jetpack --venv" in l and "import pycuda.driver; import tensorrt" in l for l in planned)


def test_setup_refuses_an_l4t_tensorrt_mismatch(tmp_path):
    proc = setup_dry_run(tmp_path, "# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    # no tensorrt here: on a Jetson that is itself a failure, and a dry run says so with the fix
    assert proc.returncode == 1 and "FAIL l4t" in proc.stdout and "python3-libnvinfer" in proc.stdout


def test_runtime_extra_has_no_opencv_wheel_on_a_jetson_and_has_it_elsewhere():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["runtime"]
    reqs = [Requirement(r) for r in extra]

    def names(machine):
        env = {"platform_machine": machine, "sys_platform": "linux", "platform_system": "Linux"}
        return {r.name for r in reqs if r.marker is None or r.marker.evaluate(env)}

    assert not {n for n in names("aarch64") if n.startswith("opencv")}
    assert "opencv-python-headless" in names("x86_64")
    assert {"onnxruntime", "pyserial", "tokenizers", "numpy"} <= names("aarch64")


def test_numpy_stays_below_2_on_a_jetson_where_jetpacks_opencv_needs_it():
    """JetPack's cv2 (OpenCV 4.8, built against numpy 1.x) fails to import beside numpy 2."""
    tomllib = pytest.importorskip("tomllib")
    deps = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]

    def numpy_spec(machine):
        env = {"platform_machine": machine, "sys_platform": "linux", "platform_system": "Linux"}
        return [r.specifier for r in deps if r.name == "numpy" and (r.marker is None or r.marker.evaluate(env))]

    (jetson,), (desktop,) = numpy_spec("aarch64"), numpy_spec("x86_64")
    assert not jetson.contains("2.0.0") and jetson.contains("1.26.4")
    assert desktop.contains("2.0.0")


def test_the_scripts_use_the_venv_setup_sh_made(tmp_path):
    """pycuda is built into setup.sh's venv only: check.sh and the engine scripts must run that Python."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"
    fake.write_text("#!/bin/sh\necho \"venv python $*\"\n")
    fake.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "VENV": str(venv)}
    proc = subprocess.run(["bash", str(JETSON / "check.sh"), str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=30)
    assert proc.stdout.startswith("venv python -m runtime.preflight"), proc.stdout + proc.stderr


def test_dockerfile_takes_the_l4t_tag_and_copies_no_export_or_train():
    text = (JETSON / "Dockerfile").read_text()
    assert re.search(r"^ARG L4T=r36\.4\.0$", text, re.M)
    assert "FROM nvcr.io/nvidia/l4t-jetpack:${L4T}" in text
    assert "--build-arg L4T=r36.3.0" in text and "--build-arg L4T=r36.4.0" in text  # documented, both
    copies = [l for l in text.splitlines() if l.startswith("COPY")]
    assert not [c for c in copies if "export" in c or "train" in c]
    assert "opencv-python" not in text  # no wheel: the base image's GStreamer OpenCV


def test_gpu_check_script_is_documented_in_the_readme():
    readme = (JETSON / "README.md").read_text()
    assert "jetson/gpu_check.sh" in readme and "benchmarks.gpu_check" in readme


def test_docker_entrypoint_refuses_without_the_hosts_release_file_and_runs_the_drive_with_it(tmp_path):
    """The image's own /etc/nv_tegra_release describes the image: without the host's file mounted, no start."""
    script = JETSON / "docker-entrypoint.sh"
    missing = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30,
                             env={"PATH": os.environ["PATH"], "TEGRA_RELEASE": str(tmp_path / "absent")})
    assert missing.returncode == 2
    assert "-v /etc/nv_tegra_release:" in missing.stderr and ":ro" in missing.stderr
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0\n")
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "python $* TEGRA_RELEASE=$TEGRA_RELEASE"\n')
    fake.chmod(0o755)
    ok = subprocess.run(["bash", str(script), "--bundle", "/bundle"], capture_output=True, text=True, timeout=30,
                        env={"PATH": os.environ["PATH"], "TEGRA_RELEASE": str(release), "PYTHON": str(fake)})
    assert ok.returncode == 0
    assert ok.stdout.strip() == f"python -m runtime.drive --bundle /bundle TEGRA_RELEASE={release}"
    dockerfile = (JETSON / "Dockerfile").read_text()
    assert "ENV TEGRA_RELEASE=/etc/host/nv_tegra_release" in dockerfile and "docker-entrypoint.sh" in dockerfile
    readme = (JETSON / "README.md").read_text()
    assert "-v /etc/nv_tegra_release:/etc/host/nv_tegra_release:ro" in readme


def test_setup_makes_the_drive_account_when_missing_and_the_unit_refuses_a_missing_one_by_name(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "VENV": str(tmp_path / "venv"), "TEGRA_RELEASE": str(tmp_path / "x")}
    missing = subprocess.run(["bash", str(JETSON / "setup.sh"), "--dry-run"], capture_output=True, text=True,
                             env={**env, "DRIVE_USER": "mvla-no-such-user"})
    made = [l for l in missing.stdout.splitlines() if l.startswith("would run:") and "useradd" in l]
    assert len(made) == 1 and made[0].split()[-1] == "mvla-no-such-user" and "--system" in made[0], missing.stdout
    assert "dialout" in made[0]
    existing = subprocess.run(["bash", str(JETSON / "setup.sh"), "--dry-run"], capture_output=True, text=True,
                              env={**env, "DRIVE_USER": "root"})
    assert "useradd" not in existing.stdout and "drive account root exists" in existing.stdout
    unit = (JETSON / "mobile-vla-drive.service").read_text()
    check, chown = unit.index('id -u "$DRIVE_USER"'), unit.index("/bin/chown -R ${DRIVE_USER}")
    assert check < chown and "jetson/setup.sh creates it" in unit


def test_make_install_takes_torch_from_the_cpu_index_first_and_says_so(tmp_path):
    proc = subprocess.run(["make", "-n", "-B", "install", f"VENV={tmp_path / 'v'}"], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    installs = [l for l in proc.stdout.splitlines() if "pip install" in l and "torch==" in l]
    assert installs and "--index-url https://download.pytorch.org/whl/cpu" in installs[0], proc.stdout
    assert "make install: torch" in proc.stdout and "the CPU build" in proc.stdout  # said, not silent
    # the registry's torch only as the fallback, after the CPU index, announced
    assert len(installs) == 2 and "--index-url" not in installs[1] and "cannot be reached" in proc.stdout
    extras = [l for l in proc.stdout.splitlines() if "pip install" in l and "-e '." in l]
    assert extras and proc.stdout.index(installs[0]) < proc.stdout.index(extras[0])


def gpu_check_plan(tmp_path, driver=None, jetson=False):
    env = {"PATH": "/usr/bin:/bin", "TEGRA_RELEASE": str(tmp_path / "absent")}
    if driver:
        env["DRIVER_CUDA"] = driver
    if jetson:
        release = tmp_path / "nv_tegra_release"
        release.write_text("# R36 (release), REVISION: 4.3, GCID: 1, BOARD: generic, EABI: aarch64\n")
        env["TEGRA_RELEASE"] = str(release)
    return subprocess.run(["bash", str(JETSON / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("driver, index", [("12.4", "cu126"), ("12.8", "cu126"), ("13.0", "cu130"), ("13.2", "cu130")])
def test_gpu_check_dry_run_picks_the_torch_build_for_the_driver(tmp_path, driver, index):
    """NVIDIA's minor-version compatibility: any CUDA 12.x build runs on a 12.x driver (a 12.4 driver takes cu126);
    CUDA 13 builds need a 13.x driver. Pinned to the release CI tests, the Makefile's."""
    proc = gpu_check_plan(tmp_path, driver)
    assert proc.returncode == 0, proc.stderr
    pin = re.search(r"^TORCH_VERSION := ([0-9.]+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    torch = [l for l in proc.stdout.splitlines() if "pip install torch" in l]
    assert torch == [f".venv-gpu/bin/python -m pip install torch=={pin} --index-url "
                     f"https://download.pytorch.org/whl/{index}"], proc.stdout


def test_gpu_check_dry_run_refuses_a_pre_cuda_12_driver_and_plans_no_torch_on_a_jetson(tmp_path):
    old = gpu_check_plan(tmp_path, "11.8")
    assert old.returncode == 1 and "CUDA 11.8" in old.stderr
    jetson = gpu_check_plan(tmp_path, jetson=True)
    assert jetson.returncode == 0, jetson.stderr
    commands = [l for l in jetson.stdout.splitlines() if l and not l.startswith("#")]
    assert not [c for c in commands if "torch" in c or "[train" in c or "export" in c], commands
    assert any("gpu_check.sh --bundle" in c for c in commands) and "JetPack ships no torch" in jetson.stdout


def test_the_gpu_check_runs_the_real_size_only_where_memory_holds_it(tmp_path):
    from benchmarks.gpu_check import build_parser, default_sizes

    def meminfo(gib):
        path = tmp_path / f"meminfo-{gib}"
        path.write_text(f"MemTotal: {int(gib * 1024 * 1024)} kB\nSwapTotal: 0 kB\n")
        return path

    assert default_sizes(meminfo(7.4)) == ["tiny"] == default_sizes(meminfo(15.3))  # 8 and 16 GB Orins
    assert default_sizes(meminfo(30.0)) == ["tiny", "kosmos2"]  # AGX Orin 32 GB, a workstation
    assert build_parser().parse_args(["--out", "x.json", "--bundle", "b/"]).bundle == Path("b/")
