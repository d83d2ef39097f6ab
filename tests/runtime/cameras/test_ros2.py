"""A ROS 2 image topic as the camera (runtime/cameras/ros2.py), with real rclpy on loopback: a test node
publishes images, in this process and to a drive process; every encoding camera drivers send. Every wait is bounded."""

import signal
import threading
import time

import cv2
import numpy as np
import pytest

from runtime.control.steplog import read_log
from runtime.hardware import CameraStalled, FrameTooOld
from tests.helpers.processes import finish, run_drive
from tests.helpers.ros2 import drive, image_message, publish_frames, publish_until_read, velocity, wait_for

pytestmark = pytest.mark.usefixtures("ros2_loopback")

SLACK = 0.15  # DDS delivery + thread scheduling on a loaded 2-core CI machine
STARTUP = 60  # s: a drive process loads the bundle and joins the ROS graph


def test_a_camera_that_stops_gives_a_zero_within_cmd_timeout_and_sigterm_a_zero_before_exit(
        tiny_bundle_dir, episode_file, peer, topic):
    """The drive reads a ROS image topic. When the publisher stops, the action of the last frame must be
    zeroed within --cmd-timeout of that frame's capture (+ one control period), long before the camera
    read times out (--camera-timeout 3). Then SIGTERM: the process publishes a zero before it exits."""
    import h5py
    from geometry_msgs.msg import Twist

    with h5py.File(episode_file) as f:
        frames = f["images"][()]
    got = peer.listen(Twist, f"{topic}/cmd_vel")
    cmd_timeout, rate = 0.3, 50.0
    stop = threading.Event()
    with drive(tiny_bundle_dir, "--motor", "ros2", "--cmd-vel-topic", f"{topic}/cmd_vel",
               "--camera", f"ros2:{topic}/image_raw", "--rate", str(rate), "--cmd-timeout", str(cmd_timeout),
               "--camera-timeout", "3", "--max-accel", "inf", "inf", "inf") as proc:
        try:
            publisher, last = publish_frames(peer, f"{topic}/image_raw", frames, 0.05, stop)
            wait_for(lambda: any(any(velocity(m)) for _, m in got) or proc.poll() is not None, STARTUP, "a move")
            assert proc.poll() is None, finish(proc)[1]
            time.sleep(0.5)  # drive a while
            stop.set()
            publisher.join(timeout=2)
            last_frame = last[0]
            wait_for(lambda: got and got[-1][0] > last_frame and velocity(got[-1][1]) == (0.0, 0.0, 0.0),
                     cmd_timeout + 2, "a zero after the camera stopped")
            last_move = max(t for t, m in got if any(velocity(m)))
            zero_at = next(t for t, m in list(got) if t > max(last_move, last_frame) and not any(velocity(m)))
            assert zero_at - last_frame <= cmd_timeout + 1 / rate + SLACK
            # SIGTERM while stopped-but-running; then once more while moving
            stop.clear()
            publisher, last = publish_frames(peer, f"{topic}/image_raw", frames, 0.05, stop)
            resumed = time.monotonic()
            wait_for(lambda: any(t > resumed and any(velocity(m)) for t, m in got), 10, "moving again")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = finish(proc, timeout=10)
        finally:
            stop.set()
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "motors at zero" in err
    wait_for(lambda: got[-1][0] >= sent, 1.0, "the last message")
    assert velocity(got[-1][1]) == (0.0, 0.0, 0.0)
    assert got[-1][0] - sent <= 1.0


def test_ros2_camera_drives_the_same_actions_as_the_same_frames_from_a_file(tiny_bundle_dir, episode_file, peer,
                                                                            topic, tmp_path):
    """Frames published one at a time (the next once the drive logged the previous step) on a topic
    give exactly the actions and commands that the same frames give from the HDF5 file."""
    import h5py
    from sensor_msgs.msg import Image

    with h5py.File(episode_file) as f:
        frames = f["images"][()]
    # step mode: every step's command goes out (continuous mode may replace an action before a tick sends it)
    common = ["--dry-run", "--max-steps", str(len(frames)), "--max-accel", "inf", "inf", "inf",
              "--camera-timeout", "5", "--mode", "step", "--step-duration", "0.02", "--rate", "100"]
    from_file = run_drive("--bundle", str(tiny_bundle_dir), "--quiet", *common, "--camera", str(episode_file),
                          "--log", str(tmp_path / "file.jsonl"), timeout=STARTUP)
    assert from_file.returncode == 0, from_file.stderr
    log = tmp_path / "topic.jsonl"
    pub = peer.node.create_publisher(Image, f"{topic}/image_raw", 10)
    lines = []

    def steps_logged():
        return len([r for r in read_log(log) if r["type"] == "step"]) if log.exists() else 0

    with drive(tiny_bundle_dir, *common, "--camera", f"ros2:{topic}/image_raw", "--log", str(log)) as proc:
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        # "driving with" is printed once the camera is open, i.e. its subscription has matched our publisher
        wait_for(lambda: any(line.startswith("driving with") for line in lines) or proc.poll() is not None,
                 STARTUP, "the drive to open its camera")
        assert proc.poll() is None, "".join(lines)
        for i, frame in enumerate(frames):
            pub.publish(image_message(peer, frame))
            wait_for(lambda i=i: steps_logged() > i or proc.poll() is not None, 20, f"step {i} in the log")
        proc.wait(timeout=20)
        reader.join(timeout=5)
    assert proc.returncode == 0, "".join(lines)
    file_steps = [r for r in read_log(tmp_path / "file.jsonl") if r["type"] == "step"]
    topic_steps = [r for r in read_log(log) if r["type"] == "step"]
    assert len(topic_steps) == len(file_steps) == len(frames)
    assert [r["action"] for r in topic_steps] == [r["action"] for r in file_steps]
    assert [r["command"] for r in topic_steps] == [r["command"] for r in file_steps]


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8"])
def test_image_encodings_become_bgr(peer, topic, camera_on, encoding):
    from sensor_msgs.msg import Image

    bgr = np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8)
    sent = {"bgr8": bgr, "rgb8": bgr[..., ::-1], "mono8": bgr[..., 1]}[encoding]
    cam = camera_on()
    frame = publish_until_read(peer, cam, topic + "/image_raw", Image, lambda: image_message(peer, sent, encoding))
    expected = np.repeat(bgr[..., 1:2], 3, axis=2) if encoding == "mono8" else bgr
    assert frame.image.dtype == np.uint8 and np.array_equal(frame.image, expected)
    assert time.monotonic() - frame.stamp < 0.5


def test_compressed_topic_is_decoded(peer, topic, camera_on):
    from sensor_msgs.msg import CompressedImage

    bgr = np.random.default_rng(1).integers(0, 255, (24, 32, 3), np.uint8)

    def msg():
        m = CompressedImage()
        m.header.stamp = peer.node.get_clock().now().to_msg()
        m.format = "png"
        m.data = cv2.imencode(".png", bgr)[1].tobytes()
        return m

    cam = camera_on("/image_raw/compressed")
    assert cam.compressed
    frame = publish_until_read(peer, cam, topic + "/image_raw/compressed", CompressedImage, msg)
    assert np.array_equal(frame.image, bgr)


def test_other_encodings_are_refused_naming_encoding_and_topic(peer, topic, camera_on):
    from sensor_msgs.msg import Image

    from runtime.cameras.ros2_images import UnsupportedImage

    cam = camera_on()
    raw = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(UnsupportedImage, match=rf"{topic}/image_raw: image encoding '32FC1'"):
        publish_until_read(peer, cam, topic + "/image_raw", Image, lambda: image_message(peer, raw, "32FC1"))


def test_stale_stamps_and_a_silent_topic_count_as_a_lost_camera(peer, topic, camera_on):
    from rclpy.duration import Duration
    from sensor_msgs.msg import Image

    image = np.zeros((8, 8, 3), np.uint8)
    cam = camera_on(max_age=0.3)
    old = lambda: image_message(peer, image, stamp=peer.node.get_clock().now() - Duration(seconds=1))  # noqa: E731
    with pytest.raises(FrameTooOld, match="old by its header stamp"):
        publish_until_read(peer, cam, topic + "/image_raw", Image, old)
    with pytest.raises(CameraStalled, match=f"ros2:{topic}/image_raw"):
        cam.read(timeout=0.1)


def test_only_the_newest_image_is_kept(peer, topic, camera_on):
    from sensor_msgs.msg import Image

    cam = camera_on()
    pub = peer.node.create_publisher(Image, topic + "/image_raw", 10)
    first = publish_until_read(peer, cam, topic + "/image_raw", Image,
                               lambda: image_message(peer, np.zeros((8, 8, 3), np.uint8)))
    for value in (1, 2, 3):
        pub.publish(image_message(peer, np.full((8, 8, 3), value, np.uint8)))
        time.sleep(0.05)
    frame = cam.read(timeout=1)
    assert frame.image[0, 0, 0] == 3 and frame.index > first.index + 1
    with pytest.raises(CameraStalled):
        cam.read(timeout=0.1)


def yuv_message(bgr, encoding):
    """A packed 4:2:2 image as a driver sends it, built with OpenCV's own BGR -> YUV (I420) conversion."""
    import types

    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h]
    u = i420[h:h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4:].reshape(h // 2, w // 2)
    u, v = np.repeat(u, 2, axis=0), np.repeat(v, 2, axis=0)  # 4:2:0 -> 4:2:2 (each row its chroma)
    packed = np.empty((h, w, 2), np.uint8)
    if encoding in ("yuv422_yuy2", "yuyv"):  # Y0 U Y1 V
        packed[..., 0] = y
        packed[:, 0::2, 1], packed[:, 1::2, 1] = u, v
    else:  # UYVY: U Y0 V Y1
        packed[..., 1] = y
        packed[:, 0::2, 0], packed[:, 1::2, 0] = u, v
    return types.SimpleNamespace(encoding=encoding, height=h, width=w, step=w * 2, data=packed.tobytes(),
                                 is_bigendian=0)


@pytest.mark.parametrize("encoding", ["yuv422_yuy2", "uyvy"])
def test_packed_yuv_becomes_the_same_bgr(encoding):
    from runtime.cameras.ros2_images import image_to_bgr

    rng = np.random.default_rng(3)
    blocks = rng.integers(30, 225, (12, 16, 3), np.uint8)
    bgr = np.repeat(np.repeat(blocks, 2, axis=0), 2, axis=1)  # one colour per 2x2 block: 4:2:x loses nothing
    got = image_to_bgr(yuv_message(bgr, encoding), "/cam")
    assert got.shape == bgr.shape and got.dtype == np.uint8
    err = np.abs(got.astype(int) - bgr)
    assert err.mean() < 3 and err.max() < 16, (err.mean(), err.max())  # YUV rounding only
    other = "uyvy" if encoding == "yuv422_yuy2" else "yuv422_yuy2"
    assert np.abs(image_to_bgr(yuv_message(bgr, encoding), "/cam").astype(int)
                  - image_to_bgr(yuv_message(bgr, other), "/cam")).mean() < 3  # same picture either layout
    swapped = yuv_message(bgr, encoding)
    swapped.encoding = other  # the other layout's bytes read as this one: not the picture
    assert np.abs(image_to_bgr(swapped, "/cam").astype(int) - bgr).mean() > 20


@pytest.mark.parametrize("encoding", ["bgra8", "rgba8", "mono16", "16UC1"])
def test_alpha_and_sixteen_bit_encodings_become_bgr(peer, topic, camera_on, encoding):
    from sensor_msgs.msg import Image

    bgr = np.random.default_rng(2).integers(0, 255, (24, 32, 3), np.uint8)
    alpha = np.full((24, 32, 1), 77, np.uint8)
    sixteen = (bgr[..., 1].astype(np.uint16) << 8) | 0x5A  # the high byte is the picture
    sent = {"bgra8": np.concatenate([bgr, alpha], 2), "rgba8": np.concatenate([bgr[..., ::-1], alpha], 2),
            "mono16": sixteen.astype("<u2").view(np.uint8).reshape(24, 32, 2),
            "16UC1": sixteen.astype("<u2").view(np.uint8).reshape(24, 32, 2)}[encoding]
    cam = camera_on()
    frame = publish_until_read(peer, cam, topic + "/image_raw", Image, lambda: image_message(peer, sent, encoding))
    expected = np.repeat(bgr[..., 1:2], 3, axis=2) if encoding in ("mono16", "16UC1") else bgr
    assert np.array_equal(frame.image, expected)


def test_simulated_time_ages_images_on_the_ros_clock(ros_args, peer, topic):
    """Gazebo stamps images in simulated time: with use_sim_time and a /clock, their age is right; without,
    every one of them looks decades old."""
    from builtin_interfaces.msg import Time
    from rclpy.time import Time as RosTime
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from runtime.cameras.ros2 import Ros2Camera

    sim_now = [1000.0]
    clock = peer.node.create_publisher(Clock, "/clock", 10)
    ticking = threading.Event()

    def tick():
        while not ticking.is_set():
            sim_now[0] += 0.01
            msg = Clock()
            msg.clock = Time(sec=int(sim_now[0]), nanosec=int(sim_now[0] % 1 * 1e9))
            clock.publish(msg)
            time.sleep(0.01)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    image = np.zeros((4, 4, 3), np.uint8)

    def sim_stamped(age):
        return lambda: image_message(peer, image, stamp=RosTime(seconds=sim_now[0] - age))

    try:
        ros_args(["--ros-args", "-p", "use_sim_time:=true"])
        cam = Ros2Camera(topic, max_age=0.5, wait_for_publisher=0, warn=lambda s: None).connect()
        try:
            wait_for(lambda: cam._clock.now().nanoseconds > 999e9, 10, "the simulated clock")
            frame = publish_until_read(peer, cam, topic, Image, sim_stamped(0.1))
            assert 0.05 < time.monotonic() - frame.stamp < 0.4
            with pytest.raises(FrameTooOld):
                publish_until_read(peer, cam, topic, Image, sim_stamped(2.0))
        finally:
            cam.disconnect()
        ros_args(())  # wall time: a stamp of 1000 s after 1970 is decades old
        cam = Ros2Camera(topic, max_age=0.5, wait_for_publisher=0, warn=lambda s: None).connect()
        try:
            with pytest.raises(FrameTooOld, match="old by its header stamp"):
                publish_until_read(peer, cam, topic, Image, sim_stamped(0.1))
        finally:
            cam.disconnect()
    finally:
        ticking.set()
        thread.join(timeout=2)


def test_a_failing_camera_callback_is_an_error_not_a_silent_stall(ros_args, peer, topic, camera_on):
    from sensor_msgs.msg import Image

    from runtime.hardware import CameraError

    cam = camera_on()
    cam._clock = None  # the callback now raises AttributeError: as any bug in it would
    with pytest.raises(CameraError, match=r"a ROS 2 callback failed: AttributeError"):
        publish_until_read(peer, cam, topic + "/image_raw", Image,
                           lambda: image_message(peer, np.zeros((4, 4, 3), np.uint8)))
