"""L4T revision vs TensorRT version, and whether cv2 has GStreamer (stand-in build strings)."""

import pytest

from runtime.policy.backends.jetpack import check_l4t_tensorrt, check_opencv, gstreamer_status, read_l4t

R36_3 = ("# R36 (release), REVISION: 3.0, GCID: 36106755, BOARD: generic, EABI: aarch64, "
         "DATE: Thu Apr 25 03:14:05 UTC 2024\n")
R36_4 = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
         "DATE: Wed Jan  8 01:49:37 UTC 2025\n")


@pytest.mark.parametrize("release, trt, status, words", [
    (R36_3, "8.6.2.3", "OK", "JetPack 6.0"),
    (R36_4, "10.3.0", "OK", "JetPack 6.1/6.2"),
    (R36_4, "8.6.2", "FAIL", "ships TensorRT 10.3, but TensorRT 8.6.2"),
    (R36_3, "10.3.0", "FAIL", "L4T=r36.3.0"),
    (R36_4, None, "FAIL", "cannot import tensorrt"),
    ("# R35 (release), REVISION: 4.1, GCID: 1\n", "8.5.2", "FAIL", "JetPack 5 or older"),
])
def test_l4t_against_tensorrt(tmp_path, release, trt, status, words):
    path = tmp_path / "nv_tegra_release"
    path.write_text(release)
    got, msg = check_l4t_tensorrt(path, trt)
    assert got == status and words in msg


def test_not_a_jetson_is_skipped(tmp_path):
    assert check_l4t_tensorrt(tmp_path / "absent", "10.3.0")[0] == "SKIP"
    p = tmp_path / "r"
    p.write_text(R36_4)
    assert read_l4t(p) == (36, 4, 3)


JETPACK_CV2 = """
General configuration for OpenCV 4.8.0 =====================================
  Video I/O:
    FFMPEG:                      YES
    GStreamer:                   YES (1.20.3)
    v4l/v4l2:                    YES (linux/videodev2.h)
"""
WHEEL_CV2 = JETPACK_CV2.replace("GStreamer:                   YES (1.20.3)", "GStreamer:                   NO")


def test_gstreamer_check_against_stand_in_build_strings():
    assert gstreamer_status(JETPACK_CV2) == "YES (1.20.3)" and gstreamer_status(WHEEL_CV2) == "NO"
    assert check_opencv("csi", JETPACK_CV2)[0] == "OK"
    status, msg = check_opencv("csi", WHEEL_CV2)
    assert status == "FAIL" and "--camera csi cannot open" in msg and "pip uninstall opencv-python" in msg
    assert check_opencv("nvarguscamerasrc ! appsink", WHEEL_CV2)[0] == "FAIL"
    assert check_opencv("episode.h5", WHEEL_CV2)[0] == "WARN"  # not needed for this camera, still said
    assert check_opencv("csi", "no video section at all")[0] == "FAIL"


def test_preflight_reports_the_opencv_and_jetpack_lines(tiny_bundle_dir, episode_file):
    from tests.conftest import run_python

    proc = run_python("-m", "runtime.preflight", "--bundle", str(tiny_bundle_dir), "--camera", "csi", timeout=120)
    lines = {ln.split()[1]: ln for ln in proc.stdout.splitlines() if len(ln.split()) > 1}
    import cv2

    has = (gstreamer_status(cv2.getBuildInformation()) or "").upper().startswith("YES")
    assert lines["opencv"].startswith("OK" if has else "FAIL") and "GStreamer" in lines["opencv"]
    assert "jetpack" in lines


def test_check_sh_refuses_a_tensorrt_that_is_not_its_l4ts(tiny_bundle_dir, episode_file, tmp_path):
    """TensorRT 10.3 (the fake module, importable) on an L4T R36.3 (JetPack 6.0, ships 8.6): FAIL with the fix."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.fakes import gpu as fake_gpu

    release = tmp_path / "nv_tegra_release"
    release.write_text(R36_3)
    env = {**os.environ, "PYTHON": sys.executable, "FPS": "0", "TEGRA_RELEASE": str(release),
           "PYTHONPATH": fake_gpu.subprocess_pythonpath()}
    proc = subprocess.run(["bash", str(ROOT / "jetson" / "check.sh"), str(tiny_bundle_dir), str(episode_file),
                           str(tmp_path / "no-port")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    line = next(ln for ln in proc.stdout.splitlines() if ln.split()[1:2] == ["jetpack"])
    assert proc.returncode == 1 and line.startswith("FAIL")
    assert "ships TensorRT 8.6, but TensorRT 10.3.0" in line and "L4T=r36.3.0" in line
