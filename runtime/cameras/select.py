"""Which camera `--camera SOURCE` names, opened: the one place a new kind of camera is registered.

    cam = open_camera("0")                      # OpenCV device index (V4L2 on Linux): runtime/cameras/live.py
    cam = open_camera("/dev/video0", width=1280, height=720, fps=30)
    cam = open_camera("csi")                    # Jetson CSI camera, rotated 180 degrees like the original rig
    cam = open_camera("nvarguscamerasrc ! ... ! appsink")   # any GStreamer pipeline
    cam = open_camera("run.mp4") / open_camera("frames/") / open_camera("episode.h5")   # runtime/cameras/replay.py
    cam = open_camera("ros2:/camera/image_raw")             # sensor_msgs/Image topic (runtime/cameras/ros2.py)
    cam = open_camera("ros2:/camera/image_raw/compressed")  # sensor_msgs/CompressedImage (by the suffix)
    cam = CameraSpec.from_args(args).open(max_age=0.5)      # what runtime.drive and runtime.record do

Every source is a `runtime.hardware.Camera`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from runtime.cameras.live import LiveCamera, live_capture
from runtime.cameras.replay import hdf5_episode, image_folder, video_file
from runtime.hardware import Camera, CameraError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


@dataclass(frozen=True)
class CameraSpec:
    source: str = "csi"  # device index, /dev/videoN, csi, a GStreamer pipeline, a replay, or ros2:/topic
    width: int | None = None  # live cameras: requested width; None: 1280 (the recordings' size)
    height: int | None = None  # live cameras: requested height; None: 720
    fps: int = 30  # live cameras: requested frame rate

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CameraSpec:
        return cls(args.camera, args.width, args.height, args.fps)

    def open(self, max_age: float = 0.5) -> Camera:
        """The camera, delivering frames; a frame older than `max_age` seconds is refused (FrameTooOld)."""
        return open_camera(self.source, self.width or 1280, self.height or 720, self.fps, max_age=max_age)


def add_camera_arguments(ap: argparse.ArgumentParser) -> None:
    d = CameraSpec
    ap.add_argument("--camera", default=d.source,
                    help="device index, /dev/videoN, 'csi', a GStreamer pipeline, a video, an image folder, an .h5 "
                         "episode, or ros2:/topic (sensor_msgs/Image; a topic ending in /compressed: CompressedImage)")
    ap.add_argument("--width", type=int, help="camera width (default 1280)")
    ap.add_argument("--height", type=int, help="camera height (default 720)")
    ap.add_argument("--fps", type=int, default=d.fps)


def open_camera(spec: str, width: int | None = None, height: int | None = None, fps: int | None = None,
                max_age: float = 0.5):
    """A camera from a device index, /dev path, 'csi', GStreamer pipeline, video, image folder, .h5 episode
    or `ros2:/topic` (a ROS 2 image topic; `.../compressed` for sensor_msgs/CompressedImage)."""
    spec = str(spec)
    if spec.startswith("ros2:"):
        from runtime.cameras.ros2 import Ros2Camera  # noqa: PLC0415  ROS 2 only; start-up of robot commands

        return Ros2Camera(spec[len("ros2:"):], max_age=max_age).connect()
    path = Path(spec)
    if path.suffix == ".h5" or path.suffix == ".hdf5":
        if not path.is_file():
            raise CameraError(f"{path}: episode file not found")
        return hdf5_episode(path)
    if path.is_dir():
        return image_folder(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if not path.is_file():
            raise CameraError(f"{path}: video file not found")
        return video_file(path)
    if spec.startswith("/dev/") and not path.exists():
        raise CameraError(f"camera {spec} not found: is it plugged in? (v4l2-ctl --list-devices; ls /dev/video*)")
    cap, name = live_capture(spec, width, height, fps)
    # a device (USB) can be unplugged and come back; a GStreamer pipeline (CSI) is not reopened here
    reopen = None if "!" in name or name == "csi" else (lambda: live_capture(spec, width, height, fps)[0])
    return LiveCamera(cap, name, max_age, reopen=reopen)
