"""Camera sources for the drive loop: live devices, the Jetson CSI camera, and replays.

    cam = open_camera("0")                      # OpenCV device index (V4L2 on Linux)
    cam = open_camera("/dev/video0", width=1280, height=720, fps=30)
    cam = open_camera("csi")                    # Jetson CSI camera, rotated 180 degrees like the original rig
    cam = open_camera("nvarguscamerasrc ! ... ! appsink")   # any GStreamer pipeline
    cam = open_camera("run.mp4") / open_camera("frames/") / open_camera("episode.h5")   # replays
    cam = open_camera("ros2:/camera/image_raw")             # sensor_msgs/Image topic (runtime/ros2.py)
    cam = open_camera("ros2:/camera/image_raw/compressed")  # sensor_msgs/CompressedImage (by the suffix)
    frame = cam.read(timeout=0.5)               # Frame(image BGR uint8, stamp, index)

Live sources run a background thread that keeps only the newest frame with
its capture time (a control loop wants the present, not a queue of the past);
on a V4L2 device (USB cameras) that time is the driver's own buffer
timestamp, which OpenCV's V4L2 backend reports as CAP_PROP_POS_MSEC (the
kernel's CLOCK_MONOTONIC at capture, the clock of time.monotonic()), so a
frame that sat in the driver's queue looks as old as it is. Elsewhere
CAP_PROP_POS_MSEC is a stream position, not a clock (GStreamer, files), and
a V4L2 driver may stamp with another clock: a timestamp is used only when it
is plausible (within 2 s before the read returned, never after it), and the
read's return time otherwise (`LiveCamera.clock` says which: "driver" or
"read"). The CSI camera (GStreamer, appsink drop=true max-buffers=1) is
stamped at read: at most one frame period late. A USB camera that
disappears (unplugged, a USB reset) reads as a stall and is reopened every
`reopen_s` (1 s) until it is back (`reopens` counts).
`read` returns a frame newer than the last one, raises `CameraStalled` when
none arrives within the timeout and `FrameTooOld` when the newest is older
than `max_age`. Replays (video file, image folder, HDF5 episode) hand out
their frames one per `read`, in order, stamped when read, and raise
`EndOfStream` at the end. Every source is a `runtime.hardware.Camera`.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.hardware import Camera, CameraError, CameraStalled, EndOfStream, Frame, FrameTooOld

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm"}


__all__ = ["Camera", "CameraError", "CameraSpec", "CameraStalled", "EndOfStream", "Frame", "FrameTooOld",
           "LiveCamera", "ReplaySource", "add_camera_arguments", "csi_pipeline", "open_camera"]


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


def csi_pipeline(width: int = 1280, height: int = 720, fps: int = 30, sensor_id: int = 0, flip_method: int = 2) -> str:
    """nvarguscamerasrc -> BGR appsink; flip-method=2 rotates 180 degrees (the original rig's mounting)."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1, format=NV12 ! nvvidconv flip-method={flip_method} ! video/x-raw, format=BGRx ! "
            f"videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


class LiveCamera(Camera):
    """OpenCV capture in a background thread that keeps only the newest frame, stamped at capture where the
    driver says when; `reopen` (a callable returning a new capture) brings back an unplugged device."""

    PLAUSIBLE_S = 2.0  # a driver timestamp older than this at read (or after the read) is not the monotonic clock

    def __init__(self, capture, name: str, max_age: float = 0.5, reopen=None, reopen_s: float = 1.0):
        self.capture, self.name, self.max_age = capture, name, max_age
        self.reopen, self.reopen_s = reopen, reopen_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._read_index = -1
        self._stop = threading.Event()
        self.failures = 0
        self.reopens = 0
        self.clock = ""  # "driver" (the V4L2 buffer timestamp) or "read" (when read() returned)
        self._thread = threading.Thread(target=self._grab, name=f"camera:{name}", daemon=True)
        self._thread.start()

    def _stamp(self, returned: float) -> float:
        """The capture time on time.monotonic()'s clock: the driver's timestamp where it is one, else `returned`."""
        try:
            ms = float(self.capture.get(cv2_pos_msec()))
        except Exception:
            ms = 0.0
        driver = ms / 1000.0
        if ms > 0 and returned - self.PLAUSIBLE_S <= driver <= returned:
            self.clock = "driver"
            return driver
        self.clock = "read"
        return returned

    def _try_reopen(self) -> None:
        try:
            capture = self.reopen()
        except Exception as e:  # still unplugged: a CameraError from live_capture, or OpenCV's own
            log.debug("camera %s: reopen failed: %s", self.name, e)
            return
        try:
            self.capture.release()
        except Exception:
            pass
        self.capture = capture
        self.reopens += 1
        log.warning("camera %s: reopened (reopen %d)", self.name, self.reopens)

    def _grab(self) -> None:
        index = 0
        last_good = last_try = time.monotonic()
        while not self._stop.is_set():
            ok, image = self.capture.read()
            returned = time.monotonic()
            if not ok or image is None:
                self.failures += 1
                if self.reopen is not None and returned - last_good >= self.reopen_s \
                        and returned - last_try >= self.reopen_s:
                    last_try = returned
                    self._try_reopen()
                time.sleep(0.01)
                continue
            last_good = returned
            with self._cond:
                self._latest = Frame(image, self._stamp(returned), index)
                self._cond.notify_all()
            index += 1

    def read(self, timeout: float = 0.5) -> Frame:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest.index <= self._read_index:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CameraStalled(f"camera {self.name}: no new frame for {timeout:.2f} s")
                self._cond.wait(left)
            frame = self._latest
        self._read_index = frame.index
        age = time.monotonic() - frame.stamp
        if age > self.max_age:
            raise FrameTooOld(f"camera {self.name}: newest frame is {age * 1e3:.0f} ms old "
                              f"(limit {self.max_age * 1e3:.0f} ms)")
        return frame

    def disconnect(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=1)
        self.capture.release()


def cv2_pos_msec() -> int:
    import cv2  # noqa: PLC0415  cv2: only the sources that decode images

    return cv2.CAP_PROP_POS_MSEC


class ReplaySource(Camera):
    """Frames from memory, one per read; subclasses load them."""

    def __init__(self, frames, name: str):
        self.frames, self.name = frames, name
        self.index = 0

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, timeout: float = 0.5) -> Frame:
        if self.index >= len(self.frames):
            raise EndOfStream(f"{self.name}: end of replay after {self.index} frames")
        image = np.ascontiguousarray(self.frames[self.index])
        frame = Frame(image, time.monotonic(), self.index)
        self.index += 1
        return frame

    def disconnect(self) -> None:
        pass


def image_folder(path: Path) -> ReplaySource:
    import cv2  # noqa: PLC0415  cv2: only the sources that decode images

    files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CameraError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")

    class _Lazy:
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            image = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if image is None:
                raise CameraError(f"{files[i]}: not a readable image")
            return image

    return ReplaySource(_Lazy(), str(path))


def video_file(path: Path) -> ReplaySource:
    import cv2  # noqa: PLC0415  cv2: only the sources that decode images

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CameraError(f"{path}: OpenCV cannot open this video")
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    if not frames:
        raise CameraError(f"{path}: no frames could be decoded")
    return ReplaySource(frames, str(path))


def hdf5_episode(path: Path) -> ReplaySource:
    """The collector's `images` dataset (T, H, W, 3) uint8, BGR as it was written."""
    from runtime.episodes import EpisodeFileError, read_episode_arrays  # noqa: PLC0415  replay only; drive start-up

    try:
        images, _, _ = read_episode_arrays(path, need_actions=False)
    except EpisodeFileError as e:
        raise CameraError(str(e)) from e
    return ReplaySource(images, str(path))


def live_capture(spec: str, width: int | None, height: int | None, fps: int | None):
    import cv2  # noqa: PLC0415  cv2: only the sources that decode images

    if spec == "csi":
        spec = csi_pipeline(width or 1280, height or 720, fps or 30)
    if "!" in spec:
        cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        hint = "check the pipeline with gst-launch-1.0 and that OpenCV was built with GStreamer"
    else:
        device = int(spec) if spec.isdigit() else spec
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2) if hasattr(cv2, "CAP_V4L2") else cv2.VideoCapture(device)
        hint = "is the camera plugged in? (v4l2-ctl --list-devices; ls /dev/video*)"
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if not cap.isOpened():
        raise CameraError(f"camera {spec!r} could not be opened: {hint}")
    return cap, spec


def open_camera(spec: str, width: int | None = None, height: int | None = None, fps: int | None = None,
                max_age: float = 0.5):
    """A camera from a device index, /dev path, 'csi', GStreamer pipeline, video, image folder, .h5 episode
    or `ros2:/topic` (a ROS 2 image topic; `.../compressed` for sensor_msgs/CompressedImage)."""
    spec = str(spec)
    if spec.startswith("ros2:"):
        from runtime.ros2 import Ros2Camera  # noqa: PLC0415  ROS 2 only; start-up of robot commands

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
