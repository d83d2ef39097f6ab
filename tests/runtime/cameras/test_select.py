import threading
import time

import cv2
import numpy as np
import pytest

from runtime.cameras.live import LiveCamera, csi_pipeline
from runtime.cameras.sample_frames import sample_frames
from runtime.cameras.select import open_camera
from runtime.hardware import CameraError, CameraStalled, EndOfStream, FrameTooOld


def test_hdf5_episode_replays_every_frame_in_order(episode_file):
    import h5py

    cam = open_camera(str(episode_file))
    with h5py.File(episode_file) as f:
        images = f["images"][()]
    got = [cam.read().image for _ in range(len(images))]
    assert all(np.array_equal(a, b) for a, b in zip(got, images))
    with pytest.raises(EndOfStream):
        cam.read()


def test_image_folder_and_video_file(tmp_path):
    frames = sample_frames(4, height=120, width=160)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    cam = open_camera(str(folder))
    assert np.array_equal(cam.read().image, frames[0]) and cam.read().index == 1
    video = tmp_path / "run.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for f in frames:
        writer.write(f)
    writer.release()
    cam = open_camera(str(video))
    assert len(cam) == 4 and cam.read().image.shape == (120, 160, 3)


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(CameraError, match="episode file not found"):
        open_camera(str(tmp_path / "nope.h5"))
    with pytest.raises(CameraError, match=r"/dev/video9 not found.*plugged in"):
        open_camera("/dev/video9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no images"):
        open_camera(str(tmp_path / "empty"))


def test_csi_pipeline_rotates_180():
    p = csi_pipeline(1280, 720, 30)
    assert p.startswith("nvarguscamerasrc") and "flip-method=2" in p and "width=1280, height=720" in p
    assert "appsink drop=true max-buffers=1" in p


class FakeCapture:
    """A device that delivers frames until told to stall (the lowest level: cv2.VideoCapture's read)."""

    def __init__(self, period=0.005):
        self.period, self.stalled, self.count = period, threading.Event(), 0

    def read(self):
        time.sleep(self.period)
        if self.stalled.is_set():
            return False, None
        self.count += 1
        return True, np.full((4, 4, 3), self.count % 255, np.uint8)

    def release(self):
        pass


def test_live_camera_keeps_only_the_newest_frame_and_detects_a_stall():
    cap = FakeCapture()
    cam = LiveCamera(cap, "fake", max_age=0.5)
    try:
        first = cam.read(timeout=1)
        time.sleep(0.05)  # several frames arrive meanwhile; only the newest is handed out
        second = cam.read(timeout=1)
        assert second.index > first.index + 1
        assert time.monotonic() - second.stamp < 0.05
        cap.stalled.set()
        with pytest.raises(CameraStalled):
            cam.read(timeout=0.1)
    finally:
        cam.disconnect()


def test_live_camera_refuses_an_old_frame():
    cap = FakeCapture()
    cam = LiveCamera(cap, "fake", max_age=0.01)
    try:
        cam.read(timeout=1)
        cap.stalled.set()
        time.sleep(0.03)
        cam._read_index = -1  # pretend the last frame was not read yet
        with pytest.raises(FrameTooOld):
            cam.read(timeout=0.1)
    finally:
        cam.disconnect()


class StampingCapture(FakeCapture):
    """A V4L2 device as OpenCV's backend shows it: CAP_PROP_POS_MSEC is the buffer's timestamp (here the
    monotonic clock `lag` seconds before read() returns: a frame that waited in the driver's queue)."""

    def __init__(self, lag=0.0, position=False):
        super().__init__()
        self.lag, self.position = lag, position

    def get(self, prop):
        assert prop == cv2.CAP_PROP_POS_MSEC
        if self.position:  # a GStreamer/file backend: a position in the stream, not a clock
            return self.count * 33.3
        return (time.monotonic() - self.lag) * 1000.0


def test_live_camera_stamps_with_the_drivers_timestamp_and_refuses_a_queued_frame():
    cam = LiveCamera(StampingCapture(lag=0.15), "v4l2", max_age=0.5)
    try:
        frame = cam.read(timeout=1)
        assert cam.clock == "driver"
        assert 0.14 < time.monotonic() - frame.stamp < 0.25  # as old as the driver says, not "just now"
    finally:
        cam.disconnect()
    cam = LiveCamera(StampingCapture(lag=0.15), "v4l2", max_age=0.1)
    try:
        with pytest.raises(FrameTooOld):
            cam.read(timeout=1)
    finally:
        cam.disconnect()


def test_a_stream_position_is_not_taken_for_a_capture_time():
    cam = LiveCamera(StampingCapture(position=True), "gstreamer", max_age=0.5)
    try:
        frame = cam.read(timeout=1)
        assert cam.clock == "read" and time.monotonic() - frame.stamp < 0.05
    finally:
        cam.disconnect()


def test_an_unplugged_usb_camera_is_reopened():
    unplugged = FakeCapture()
    unplugged.stalled.set()  # read() fails: the device is gone
    attempts = []

    def reopen():
        attempts.append(time.monotonic())
        if len(attempts) < 2:
            raise CameraError("camera '/dev/video0' could not be opened")  # still unplugged
        return FakeCapture()

    cam = LiveCamera(unplugged, "/dev/video0", max_age=0.5, reopen=reopen, reopen_s=0.2)
    try:
        with pytest.raises(CameraStalled):
            cam.read(timeout=0.1)
        frame = cam.read(timeout=2.0)  # back after the second reopen
        assert cam.reopens == 1 and len(attempts) == 2 and frame.image.shape == (4, 4, 3)
        assert attempts[1] - attempts[0] >= 0.2  # not a busy loop
    finally:
        cam.disconnect()
