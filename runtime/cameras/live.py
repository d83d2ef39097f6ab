"""Live cameras: an OpenCV device (USB, V4L2), the Jetson CSI camera, any GStreamer pipeline.

    cam = open_camera("0")                      # OpenCV device index (V4L2 on Linux): runtime/cameras/select.py
    cam = open_camera("/dev/video0", width=1280, height=720, fps=30)
    cam = open_camera("csi")                    # Jetson CSI camera, rotated 180 degrees like the original rig
    cam = open_camera("nvarguscamerasrc ! ... ! appsink")   # any GStreamer pipeline
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
than `max_age`.
"""

from __future__ import annotations

import logging
import threading
import time

from runtime.hardware import Camera, CameraError, CameraStalled, Frame, FrameTooOld

log = logging.getLogger(__name__)


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

