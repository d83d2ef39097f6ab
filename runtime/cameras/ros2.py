"""A ROS 2 image topic as the camera.

    python -m runtime.drive --bundle b/ --motor ros2 --camera ros2:/camera/image_raw      # sensor_msgs/Image
    python -m runtime.drive --bundle b/ --dry-run --camera ros2:/camera/image_raw/compressed

`Ros2Camera` subscribes with sensor-data QoS (best effort, depth 1: a
reliable camera publisher matches too) and keeps only the newest message, on
the process's shared node (runtime/ros2/node.py). Its capture time is the
message's header stamp: the stamp's age is measured with the node's clock
(ROS time, so simulated time works too) on arrival and turned into a
`time.monotonic()` time, so a stale topic reads as `FrameTooOld` and a silent
one as `CameraStalled`, and the drive loop zeroes. The image encodings camera
drivers commonly send are converted to BGR (runtime/cameras/ros2_images.py);
others are refused with the encoding and the topic named. A topic ending in
`/compressed` is read as sensor_msgs/CompressedImage and decoded with OpenCV
(JPEG, PNG).
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from runtime.cameras.ros2_images import UnsupportedImage, compressed_to_bgr, image_to_bgr
from runtime.hardware import Camera, CameraError, CameraStalled, Frame, FrameTooOld
from runtime.ros2.node import Ros2Error, RosNode

log = logging.getLogger(__name__)


class Ros2Camera(Camera):
    """Newest sensor_msgs/Image or CompressedImage on a topic, stamped with its header's capture time."""

    def __init__(self, topic: str, compressed: bool | None = None, max_age: float = 0.5,
                 wait_for_publisher: float = 5.0, warn=None):
        if not topic:
            raise CameraError("ros2 camera: no topic: ros2:/camera/image_raw (absolute) or ros2:camera/image_raw "
                              "(in the node's namespace)")
        self.topic, self.max_age = topic, max_age
        self.compressed = topic.rstrip("/").endswith("/compressed") if compressed is None else compressed
        self.name = f"ros2:{topic}"
        self.wait_for_publisher = wait_for_publisher  # s at open; the camera driver may still be starting
        self.warn = warn or (lambda s: print(s, file=sys.stderr))
        self._cond = threading.Condition()
        self._latest = None  # (message, stamp on time.monotonic(), index)
        self._received = 0
        self._read_index = -1
        self._ros: RosNode | None = None
        self._subscription = None
        self._clock = None

    @property
    def resolved_topic(self) -> str:
        """The topic after the node's namespace and remaps."""
        return self._subscription.topic_name if self._subscription is not None else self.topic

    def connect(self) -> Ros2Camera:
        if self._ros is not None:
            return self
        try:
            self._ros = RosNode.acquire("sensor_msgs")
        except Ros2Error as e:
            raise CameraError(str(e)) from e
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self._clock = self._ros.node.get_clock()  # ROS time: simulated time with use_sim_time:=true
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        try:
            self._subscription = self._ros.node.create_subscription(
                CompressedImage if self.compressed else Image, self.topic, self._ros.guarded(self._on_image), qos)
        except Exception as e:  # InvalidTopicNameException and kin: a user's typo, said plainly
            self.disconnect()
            raise CameraError(f"--camera ros2:{self.topic}: not a valid ROS 2 topic name: "
                              f"{str(e).splitlines()[0]}") from None
        self.name = f"ros2:{self.resolved_topic}"
        # Our node seeing the publisher means our subscription has matched it: images published from
        # now on arrive (before that, DDS drops them; discovery took up to 3.5 s on a busy machine).
        deadline = time.monotonic() + self.wait_for_publisher
        while self._ros.node.count_publishers(self.resolved_topic) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._ros.node.count_publishers(self.resolved_topic) == 0:
            self.warn(f"ros2: no publisher on {self.resolved_topic} after {self.wait_for_publisher:.1f} s (is the "
                      f"camera driver running, on this ROS_DOMAIN_ID?); waiting for images")
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
                self._ros.check(f"camera {self.name}")  # a failed callback is an error, not a stall
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CameraStalled(f"camera {self.name}: no new image for {timeout:.2f} s "
                                        f"({self._received} received so far)")
                self._cond.wait(min(left, 0.1))
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
            subscription, self._subscription = self._subscription, None
            ros.release(subscription)
