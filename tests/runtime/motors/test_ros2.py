"""The ROS 2 bridge with real rclpy on loopback: the drive process publishes /cmd_vel, a test node listens;
a test node publishes images, the drive process drives from them. Every wait is bounded."""

import signal
import threading
import time
import uuid

import cv2
import numpy as np
import pytest

from runtime.camera import CameraStalled, FrameTooOld
from runtime.steplog import read_log
from tests.helpers.policy import offline_moves
from tests.helpers.processes import ROOT, drive_process, finish, run_drive

pytestmark = pytest.mark.usefixtures("ros2_loopback")

SLACK = 0.15  # DDS delivery + thread scheduling on a loaded 2-core CI machine
STARTUP = 60  # s: a drive process loads the bundle and joins the ROS graph


@pytest.fixture
def topic():
    return f"/test_{uuid.uuid4().hex[:8]}"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


def velocity(msg):
    twist = getattr(msg, "twist", msg)
    return (twist.linear.x, twist.linear.y, twist.angular.z)


def image_message(peer, image, encoding="bgr8", stamp=None):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = (stamp or peer.node.get_clock().now()).to_msg()
    msg.header.frame_id = "camera"
    msg.height, msg.width = image.shape[:2]
    msg.encoding = encoding
    msg.step = image.shape[1] * (1 if image.ndim == 2 else image.shape[2])
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg


def drive(tiny_bundle_dir, *args):
    """The drive process, quiet, for a with-block (killed at its end if it still runs)."""
    return drive_process("--bundle", str(tiny_bundle_dir), "--quiet", *args)


@pytest.mark.parametrize("stamped", [False, True], ids=["Twist", "TwistStamped"])
def test_drive_publishes_the_policys_actions_after_limits_on_cmd_vel(tiny_bundle_dir, episode_file, peer, topic,
                                                                    stamped):
    from geometry_msgs.msg import Twist, TwistStamped

    got = peer.listen(TwistStamped if stamped else Twist, topic)
    flags = ["--cmd-vel-stamped", "--cmd-vel-frame", "base_footprint"] if stamped else []
    with drive(tiny_bundle_dir, "--motor", "ros2", "--cmd-vel-topic", topic, *flags, "--camera", str(episode_file),
               "--mode", "step", "--step-duration", "0.05", "--rate", "50", "--max-accel", "inf", "inf", "inf") as proc:
        out, err = finish(proc, timeout=STARTUP)
    assert proc.returncode == 0, err
    assert "stopped after 12 steps (end of camera stream)" in err
    time.sleep(0.2)  # the last zero was acknowledged before exit; let the callback run
    moves = [velocity(m) for _, m in got if any(velocity(m))]
    distinct = [v for i, v in enumerate(moves) if i == 0 or v != moves[i - 1]]
    expected = offline_moves(tiny_bundle_dir, episode_file, 12)
    assert len(distinct) == 12, (len(got), [(round(t, 3), velocity(m)) for t, m in got][:8], err)
    np.testing.assert_allclose(np.array(distinct), expected, atol=1e-6)
    assert velocity(got[-1][1]) == (0.0, 0.0, 0.0)
    if stamped:
        assert {m.header.frame_id for _, m in got} == {"base_footprint"}
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in got]
        assert stamps == sorted(stamps) and abs(stamps[-1] - time.time()) < 30


def publish_frames(peer, topic, frames, period, stop):
    """Publish frames (cycling) every `period` s until `stop` is set; returns the last publish time."""
    from sensor_msgs.msg import Image

    pub = peer.node.create_publisher(Image, topic, 10)
    last = [None]

    def run():
        i = 0
        while not stop.is_set():
            pub.publish(image_message(peer, frames[i % len(frames)]))
            last[0] = time.monotonic()
            i += 1
            time.sleep(period)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, last


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


# -- the camera and motor classes in this process --------------------------------------------

@pytest.fixture
def camera_on(topic):
    cams = []

    def make(suffix="/image_raw", **kw):
        from runtime.ros2 import Ros2Camera

        kw = {"wait_for_publisher": 0.0, "warn": lambda s: None, **kw}  # publish_until_read re-publishes instead
        cams.append(Ros2Camera(topic + suffix, **kw).connect())
        return cams[-1]

    yield make
    for c in cams:
        c.disconnect()


def publish_until_read(peer, camera, topic, msg_type, make_msg, timeout=10):
    """Publish (re-publishing while discovery settles) until the camera hands out a frame."""
    pub = peer.node.create_publisher(msg_type, topic, 10)
    wait_for(lambda: pub.get_subscription_count() > 0, timeout, f"a subscriber on {topic}")
    deadline = time.monotonic() + timeout
    while True:
        pub.publish(make_msg())
        try:
            return camera.read(timeout=0.2)
        except CameraStalled:
            assert time.monotonic() < deadline, f"no image arrived on {topic}"


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

    from runtime.ros2 import UnsupportedImage

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


def test_motor_publishes_commands_and_disconnect_leaves_a_zero(peer, topic):
    from geometry_msgs.msg import Twist

    from runtime.ros2 import Ros2MotorController

    got = peer.listen(Twist, topic)
    motor = Ros2MotorController(topic=topic, wait_for_subscriber=5).connect()
    try:
        # connect() proved the link with an acknowledged zero
        wait_for(lambda: got, 1, "the link's zero")
        assert velocity(got[0][1]) == (0.0, 0.0, 0.0)
        result = motor.send_velocity(0.2, -0.1, 0.3)
        assert result.sent and result.acknowledged is None and result.velocity == (0.2, -0.1, 0.3)
        wait_for(lambda: len(got) >= 2, 1, "the command")
        assert velocity(got[1][1]) == pytest.approx((0.2, -0.1, 0.3))
    finally:
        motor.disconnect()
    wait_for(lambda: len(got) >= 3, 1, "the zero")
    assert velocity(got[-1][1]) == (0.0, 0.0, 0.0)
    assert not motor.is_connected and not motor.send_velocity(0.1, 0, 0).sent


# -- what camera drivers commonly send (converted in runtime/ros2_images.py; no rclpy needed) ---------
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
    from runtime.ros2_images import image_to_bgr

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


# -- ROS users' ways: --ros-args, namespaces, simulated time, names, errors ------------------------------
@pytest.fixture
def ros_args():
    """set_ros_args for this test, the process default restored after (the shared node is rebuilt)."""
    from runtime import ros2

    yield ros2.set_ros_args
    assert ros2.RosNode._shared is None, "a test left the shared ROS node open"
    ros2.set_ros_args(())


def test_ros_args_are_split_off_as_ros_tools_do():
    from runtime.ros2 import split_ros_args

    assert split_ros_args(["--bundle", "b", "--ros-args", "-r", "__ns:=/r1"]) == (["--bundle", "b"],
                                                                                 ["--ros-args", "-r", "__ns:=/r1"])
    assert split_ros_args(["--ros-args", "-p", "a:=1", "--", "--quiet"]) == (["--quiet"], ["--ros-args", "-p", "a:=1"])
    assert split_ros_args(["--quiet"]) == (["--quiet"], [])


def test_one_node_per_process_named_uniquely_and_renamed_by_remap(ros_args, topic):
    import os

    from runtime.ros2 import Ros2Camera, Ros2MotorController

    motor = Ros2MotorController(topic=topic, wait_for_subscriber=0, warn=lambda s: None).connect()
    cam = Ros2Camera(topic + "/image", wait_for_publisher=0, warn=lambda s: None).connect()
    try:
        assert motor._ros is cam._ros and cam._ros.name == f"/mobile_vla_drive_{os.getpid()}"
    finally:
        cam.disconnect()
        motor.disconnect()
    ros_args(["--ros-args", "-r", "__node:=vla_front"])
    cam = Ros2Camera(topic + "/image", wait_for_publisher=0, warn=lambda s: None).connect()
    try:
        assert cam._ros.name == "/vla_front"
    finally:
        cam.disconnect()


def test_a_namespace_remap_moves_every_relative_topic(ros_args, peer):
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import Image

    from runtime.ros2 import Ros2Camera, Ros2MotorController

    ns = f"/robot_{uuid.uuid4().hex[:6]}"
    ros_args(["--ros-args", "-r", f"__ns:={ns}"])
    got = peer.listen(Twist, f"{ns}/cmd_vel")
    motor = Ros2MotorController(wait_for_subscriber=5, warn=lambda s: None).connect()  # default topic: cmd_vel
    cam = Ros2Camera("camera/image_raw", wait_for_publisher=0, warn=lambda s: None).connect()
    try:
        assert motor.resolved_topic == f"{ns}/cmd_vel" and cam.resolved_topic == f"{ns}/camera/image_raw"
        assert cam._ros.name.startswith(f"{ns}/mobile_vla_drive_")
        assert motor.send_velocity(0.1, 0.0, 0.0).sent
        wait_for(lambda: any(velocity(m) == pytest.approx((0.1, 0, 0)) for _, m in got), 5, f"{ns}/cmd_vel")
        frame = publish_until_read(peer, cam, f"{ns}/camera/image_raw", Image,
                                   lambda: image_message(peer, np.zeros((4, 4, 3), np.uint8)))
        assert frame.image.shape == (4, 4, 3)
    finally:
        cam.disconnect()
        motor.disconnect()


def test_simulated_time_ages_images_on_the_ros_clock(ros_args, peer, topic):
    """Gazebo stamps images in simulated time: with use_sim_time and a /clock, their age is right; without,
    every one of them looks decades old."""
    from builtin_interfaces.msg import Time
    from rclpy.time import Time as RosTime
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from runtime.ros2 import Ros2Camera

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


def test_bad_ros_arguments_and_topic_names_are_clear_errors_that_release_the_node(ros_args):
    from runtime import ros2
    from runtime.hardware import CameraError

    with pytest.raises(CameraError, match=r"--camera ros2:bad topic!: not a valid ROS 2 topic name"):
        ros2.Ros2Camera("bad topic!", wait_for_publisher=0).connect()
    assert ros2.RosNode._shared is None
    with pytest.raises(ros2.Ros2Error, match=r"--cmd-vel-topic 'cmd vel' is not a valid ROS 2 topic name"):
        ros2.Ros2MotorController(topic="cmd vel").connect()
    assert ros2.RosNode._shared is None
    ros_args(["--ros-args", "-p"])
    with pytest.raises(CameraError, match=r"ROS 2 refused the arguments '--ros-args -p'"):
        ros2.Ros2Camera("/cam").connect()


def test_a_failing_camera_callback_is_an_error_not_a_silent_stall(ros_args, peer, topic, camera_on):
    from sensor_msgs.msg import Image

    from runtime.hardware import CameraError

    cam = camera_on()
    cam._clock = None  # the callback now raises AttributeError: as any bug in it would
    with pytest.raises(CameraError, match=r"a ROS 2 callback failed: AttributeError"):
        publish_until_read(peer, cam, topic + "/image_raw", Image,
                           lambda: image_message(peer, np.zeros((4, 4, 3), np.uint8)))


def test_no_subscriber_names_the_twist_and_twiststamped_mismatch(ros_args, peer, topic):
    from geometry_msgs.msg import TwistStamped

    from runtime.ros2 import Ros2MotorController

    peer.listen(TwistStamped, topic)  # a Jazzy controller
    warnings = []
    motor = Ros2MotorController(topic=topic, wait_for_subscriber=1.5, warn=warnings.append).connect()
    try:
        assert len(warnings) == 1
        assert "carries geometry_msgs/msg/TwistStamped, this drive publishes geometry_msgs/msg/Twist" in warnings[0]
        assert "run with --cmd-vel-stamped" in warnings[0]
    finally:
        motor.disconnect()


def test_quiet_motor_stops_publishing_zeros_so_a_mux_can_hand_over(ros_args, peer, topic):
    from geometry_msgs.msg import Twist

    from runtime.ros2 import Ros2MotorController

    got = peer.listen(Twist, topic)
    motor = Ros2MotorController(topic=topic, wait_for_subscriber=5, warn=lambda s: None).connect()
    try:
        wait_for(lambda: got, 2, "the link's zero")
        motor.set_quiet(True)
        assert motor.send_velocity(0.1, 0, 0).sent
        for _ in range(10):
            assert motor.send_velocity(0, 0, 0).sent
        wait_for(lambda: len(got) >= 5, 2, "the move and three zeros")
        time.sleep(0.3)
        assert [velocity(m) for _, m in got[1:]] == [pytest.approx((0.1, 0, 0))] + [(0.0, 0.0, 0.0)] * 3
    finally:
        motor.disconnect()


def test_the_drives_ros_interface_arms_estops_takes_instructions_and_reports(ros_args, peer):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    from runtime.arming import ArmSwitch
    from runtime.ros2_drive import DIAGNOSTIC_NAME, Ros2DriveInterface

    ros_args(["--ros-args", "-r", f"__node:=vla_{uuid.uuid4().hex[:6]}"])
    switch, instructions = ArmSwitch(armed=False), []
    face = Ros2DriveInterface(switch, on_instruction=instructions.append).open()
    name = face.node_name
    diagnostics = peer.listen(DiagnosticArray, "/diagnostics")
    try:
        def call(verb):
            client = peer.node.create_client(Trigger, f"{name}/{verb}")
            assert client.wait_for_service(timeout_sec=10), f"{name}/{verb}"
            future = client.call_async(Trigger.Request())
            wait_for(future.done, 10, f"{verb} answered")
            return future.result()

        assert call("arm").message == "armed" and switch.armed
        estop = peer.node.create_publisher(Bool, f"{name}/estop", 10)
        wait_for(lambda: estop.get_subscription_count() > 0, 10, "the e-stop topic")
        estop.publish(Bool(data=True))
        wait_for(lambda: not switch.armed, 5, "the e-stop")
        assert switch.state == "e-stop (ROS topic ~/estop)"
        assert call("arm").success and switch.armed
        assert call("estop").message == "e-stop (ROS service ~/estop)"
        text = peer.node.create_publisher(String, f"{name}/instruction", 10)
        wait_for(lambda: text.get_subscription_count() > 0, 10, "the instruction topic")
        text.publish(String(data="go to the bottle on the left"))
        wait_for(lambda: instructions, 5, "the instruction")
        assert instructions == ["go to the bottle on the left"]
        face.publish_diagnostics("warn", "zero: camera stale", {"armed": False, "rate_hz": 19.8})
        wait_for(lambda: any(s.name == DIAGNOSTIC_NAME for _, m in diagnostics for s in m.status), 5, "diagnostics")
        status = next(s for _, m in diagnostics for s in m.status if s.name == DIAGNOSTIC_NAME)
        assert status.level == b"\x01" and status.message == "zero: camera stale" and status.hardware_id == name
        assert {kv.key: kv.value for kv in status.values} == {"armed": "False", "rate_hz": "19.8"}
    finally:
        face.close()


def test_a_ros_drive_in_simulated_time_under_a_namespace_armed_by_service(tiny_bundle_dir, peer):
    """What a ROS user runs: --ros-args with use_sim_time and a namespace (every topic moves), a Gazebo-like
    /clock and images stamped in simulated time, a disarmed start (nothing moves, and with
    --quiet-when-disarmed nothing is published, so twist_mux hands the base to teleop), armed by the
    ~/arm service; /diagnostics reports the drive."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Twist
    from rclpy.time import Time as RosTime
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    ns, node = f"/robot_{uuid.uuid4().hex[:6]}", "vla"
    sim_now = [5000.0]
    clock = peer.node.create_publisher(Clock, "/clock", 10)
    images = peer.node.create_publisher(Image, f"{ns}/camera/image_raw", 10)
    commands = peer.listen(Twist, f"{ns}/cmd_vel")
    diagnostics = peer.listen(DiagnosticArray, "/diagnostics")
    frame = np.random.default_rng(4).integers(0, 255, (48, 64, 3), np.uint8)
    running = threading.Event()

    def world():  # simulated time at 1x, a camera at 20 Hz stamped in it
        while not running.is_set():
            sim_now[0] += 0.05
            clock.publish(Clock(clock=Time(sec=int(sim_now[0]), nanosec=int(sim_now[0] % 1 * 1e9))))
            images.publish(image_message(peer, frame, stamp=RosTime(seconds=sim_now[0] - 0.02)))
            time.sleep(0.05)

    threading.Thread(target=world, daemon=True).start()
    with drive(tiny_bundle_dir, "--motor", "ros2", "--camera", "ros2:camera/image_raw", "--start-disarmed",
               "--quiet-when-disarmed", "--ros-args", "-p", "use_sim_time:=true", "-r", f"__ns:={ns}",
               "-r", f"__node:={node}") as proc:
        try:
            client = peer.node.create_client(Trigger, f"{ns}/{node}/arm")
            assert client.wait_for_service(timeout_sec=STARTUP), proc.stderr.read() if proc.poll() is not None else ""
            wait_for(lambda: any(s.name == "mobile_vla_drive: drive" for _, m in diagnostics for s in m.status), 10,
                     "the drive's diagnostics")
            time.sleep(1.0)
            assert all(velocity(m) == (0.0, 0.0, 0.0) for _, m in commands)  # disarmed: zeros only...
            quiet_since = time.monotonic()
            time.sleep(1.0)
            assert not [t for t, _ in commands if t > quiet_since]  # ...and then silence for the mux
            future = client.call_async(Trigger.Request())
            wait_for(future.done, 10, "the arm service")
            assert future.result().message == "armed"
            wait_for(lambda: any(velocity(m) != (0.0, 0.0, 0.0) for _, m in commands), 10, "a move in simulated time")
            time.sleep(1.2)
            status = [s for _, m in diagnostics for s in m.status if s.name == "mobile_vla_drive: drive"][-1]
            values = {kv.key: kv.value for kv in status.values}
            assert status.hardware_id == f"{ns}/{node}" and status.message == "driving" and status.level == b"\x00"
            assert values["armed"] == "True" and values["link"] == "up" and float(values["loop rate (Hz)"]) > 1
            assert 0 < float(values["camera age (ms)"]) < 500  # aged on the simulated clock, not 55 years
            assert float(values["inference (ms)"]) > 0 and "failed publishes" in values
        finally:
            running.set()
            proc.send_signal(signal.SIGINT)
            out, err = finish(proc)
    assert proc.returncode == 0, err[-3000:]


def test_preflight_warns_without_a_subscriber_and_reports_the_base_side_timeout(ros_args, peer, topic):
    from geometry_msgs.msg import Twist, TwistStamped

    from runtime.motor_select import MotorSpec
    from runtime.preflight import check_motor

    peer.listen(TwistStamped, topic + "_jazzy")  # a Jazzy controller: never matches a Twist publisher
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic + "_jazzy"))
    assert status == "WARN" and "run with --cmd-vel-stamped" in msg, msg
    peer.listen(Twist, topic)  # a base without a command timeout
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic))
    assert status == "WARN" and "none exposing a command timeout" in msg and "nothing stops the base" in msg, msg
    peer.node.declare_parameter("cmd_vel_timeout", 0.5)  # diff_drive_controller's
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic))
    assert status == "OK", msg
    assert f"base-side command timeout: {peer.node.get_fully_qualified_name()} cmd_vel_timeout=0.5 s" in msg


def test_the_launch_files_command_is_one_the_drive_takes():
    """The launch file (jetson/ros2/) builds `python -m runtime.drive ... --ros-args ...`: parsed here the way
    runtime.drive.main parses it. (The launch package itself is not on PyPI; its call is the last line.)"""
    import importlib.util

    from runtime.drive import DriveSpec, build_parser
    from runtime.ros2 import split_ros_args

    path = ROOT / "jetson" / "ros2" / "mobile_vla_drive.launch.py"
    spec = importlib.util.spec_from_file_location("mobile_vla_drive_launch", path)
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    cmd = launch.drive_command("/opt/b", namespace="robot1", drive_args="--cmd-vel-stamped --rate 15")
    assert cmd[1:3] == ["-m", "runtime.drive"]
    argv, ros = split_ros_args(cmd[3:])
    drive = DriveSpec.from_args(build_parser().parse_args(argv))
    assert drive.motor.motor == "ros2" and drive.motor.cmd_vel_stamped and drive.arm.start_disarmed
    assert drive.loop.rate == 15 and drive.camera.source == "ros2:camera/image_raw"
    assert ros == ["--ros-args", "--params-file", str(ROOT / "jetson" / "ros2" / "mobile_vla_drive.yaml"),
                   "-r", "__node:=mobile_vla_drive", "-r", "__ns:=/robot1"]
    import yaml

    params = yaml.safe_load((ROOT / "jetson" / "ros2" / "mobile_vla_drive.yaml").read_text())
    assert params["/**"]["ros__parameters"]["use_sim_time"] is False


def test_the_parameters_file_is_read_by_the_drives_node(ros_args, tmp_path):
    from runtime.ros2 import Ros2Camera

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "jetson" / "ros2" / "mobile_vla_drive.yaml").read_text().replace("false", "true"))
    ros_args(["--ros-args", "--params-file", str(params), "-r", "__node:=vla_params"])
    cam = Ros2Camera("camera/image_raw", wait_for_publisher=0, warn=lambda s: None).connect()
    try:
        assert cam._ros.node.get_parameter("use_sim_time").value is True
    finally:
        cam.disconnect()


def test_a_bad_topic_name_ends_the_drive_with_a_message_not_a_traceback(tiny_bundle_dir):
    with drive(tiny_bundle_dir, "--dry-run", "--camera", "ros2:bad topic!") as proc:
        out, err = finish(proc, timeout=STARTUP)
    assert proc.returncode == 1, err
    assert "--camera ros2:bad topic!: not a valid ROS 2 topic name" in err and "Traceback" not in err
    assert "cmd_vel +0.000 +0.000 +0.000" in out  # the motor side opened first was zeroed as it was released
