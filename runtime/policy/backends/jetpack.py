"""Is this Jetson's software what the runtime needs? L4T vs TensorRT, pycuda, an OpenCV with GStreamer.

    python -m runtime.jetpack            # one line per check; exit 1 if one failed (jetson/setup.sh, check.sh)
    python -m runtime.jetpack --venv     # also: pycuda.driver and tensorrt import, cv2 has GStreamer

Stdlib only at import, so setup.sh can run it with the system python3 before
anything is installed. TEGRA_RELEASE overrides /etc/nv_tegra_release (tests).

Facts it rests on (jetson/README.md, "JetPack versions"): JetPack 6.0 is L4T R36.3 with
TensorRT 8.6; JetPack 6.1 and 6.2 are L4T R36.4 with TensorRT 10.3. Engines
and TensorRT's Python bindings only work with the TensorRT their L4T ships
(a container from an r36.3 image on an r36.4 host, or a pip TensorRT, is the
usual mismatch). JetPack's OpenCV is built with GStreamer, which the CSI
camera (nvarguscamerasrc) needs; the registry's opencv-python wheels are not,
and in a venv with system site-packages they shadow JetPack's.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

TENSORRT_FOR_L4T = {(36, 3): "8.6", (36, 4): "10.3"}
JETPACK_FOR_L4T = {(36, 3): "6.0", (36, 4): "6.1/6.2"}
DOCKER_TAG_FOR_L4T = {(36, 3): "r36.3.0", (36, 4): "r36.4.0"}


def tegra_release() -> Path:
    return Path(os.environ.get("TEGRA_RELEASE", "/etc/nv_tegra_release"))


def read_l4t(path: Path) -> tuple[int, int, int] | None:
    """'# R36 (release), REVISION: 4.0, ...' -> (36, 4, 0); None when the line is not there."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", Path(path).read_text())
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(tensorrt.__version__)


def check_l4t_tensorrt(release: Path | None = None, trt_version: str | None = "detect") -> tuple[str, str]:
    """("OK"|"FAIL"|"WARN"|"SKIP", message): the L4T revision against the TensorRT version found."""
    release = release or tegra_release()
    if not release.is_file():
        return "SKIP", f"{release} not found: not a Jetson (a desktop GPU or CPU machine)"
    l4t = read_l4t(release)
    if l4t is None:
        return "WARN", f"could not read the L4T version from {release}"
    name = f"L4T R{l4t[0]}.{l4t[1]}.{l4t[2]}"
    if l4t[0] < 36:
        return "FAIL", (f"{name} is JetPack 5 or older; this kit is tested on JetPack 6 (L4T R36): "
                        f"reflash with SDK Manager")
    trt = tensorrt_version() if trt_version == "detect" else trt_version
    if trt is None:
        return "FAIL", (f"{name}: python3 cannot import tensorrt; JetPack ships it: "
                        f"sudo apt install nvidia-tensorrt python3-libnvinfer")
    want = TENSORRT_FOR_L4T.get(l4t[:2])
    if want is None:
        return "WARN", (f"{name} is not one this kit knows; TensorRT {trt} found "
                        "(engines are built here, so it may work)")
    if not (trt == want or trt.startswith(want + ".")):
        return "FAIL", (f"{name} (JetPack {JETPACK_FOR_L4T[l4t[:2]]}) ships TensorRT {want}, but TensorRT {trt} is "
                        f"what python imports here. A container built FROM another L4T tag, or a pip TensorRT, "
                        f"shadows JetPack's: rebuild the container with --build-arg "
                        f"L4T={DOCKER_TAG_FOR_L4T[l4t[:2]]}, or pip uninstall tensorrt in the venv")
    return "OK", f"{name} (JetPack {JETPACK_FOR_L4T[l4t[:2]]}) with its TensorRT {trt}"


def gstreamer_status(build_info: str) -> str | None:
    """The 'GStreamer: YES (1.20.3)' value of cv2.getBuildInformation(); None if the line is missing."""
    for line in build_info.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "GStreamer":
            return value.strip()
    return None


def check_opencv(camera: str | None = None, build_info: str | None = None, where: str | None = None):
    """Does cv2 have GStreamer? FAIL when the camera needs it (csi, or a pipeline with '!'), else WARN."""
    if build_info is None:
        try:
            import cv2  # noqa: PLC0415  the check reports a cv2 that fails to import
        except ImportError as e:
            return "FAIL", f"cannot import cv2 ({e}): on a Jetson it comes with JetPack (python3-opencv)"
        build_info, where = cv2.getBuildInformation(), f"cv2 {cv2.__version__} from {Path(cv2.__file__).parent}"
    status = gstreamer_status(build_info) or "not in the build information"
    where = where or "cv2"
    if status.upper().startswith("YES"):
        return "OK", f"{where}: GStreamer {status}"
    needs = camera is not None and (camera == "csi" or "!" in camera)
    fix = ("an OpenCV wheel from the registry (no GStreamer) shadows JetPack's: "
           "pip uninstall opencv-python opencv-python-headless in the venv (bash jetson/setup.sh does)")
    effect = f"--camera {camera} cannot open" if needs else "the CSI camera would not open"
    return ("FAIL" if needs else "WARN"), f"{where}: GStreamer {status}; {effect}; {fix}"


def check_imports() -> tuple[str, str]:
    problems = []
    for mod in ("pycuda.driver", "tensorrt"):
        try:
            __import__(mod)
        except ImportError as e:
            problems.append(f"import {mod}: {e}")
    if problems:
        return "FAIL", "; ".join(problems) + " (bash jetson/setup.sh builds pycuda; JetPack ships tensorrt)"
    return "OK", "import pycuda.driver; import tensorrt"

