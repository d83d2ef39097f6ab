"""The other side of the ROS 2 wire in tests, written with plain rclpy (not with runtime.ros2), and the waits
and messages the ROS tests of every room share (tests/runtime/*/test_ros2.py).

    from tests.helpers.ros2 import Peer   # or the `peer` fixture of tests/runtime/conftest.py
    peer = Peer()
    got = peer.listen(Twist, "/cmd_vel")  # [(arrival time.monotonic(), message)], filled as they arrive
    peer.close()

Its own rclpy context and a spinning thread; run it under the `ros2_loopback` fixture (loopback only).
"""

import threading
import time
import uuid

import numpy as np

from runtime.hardware import CameraStalled
from tests.helpers.processes import drive_process


class Peer:
    """The other side of the wire, written with plain rclpy (not with runtime.ros2)."""

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"test_peer_{uuid.uuid4().hex[:8]}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            while not self.stop.is_set() and self.context.ok():
                self.executor.spin_once(timeout_sec=0.02)
        except Exception:
            pass

    def listen(self, msg_type, topic):
        """[(time.monotonic() on arrival, message)], filled as messages arrive."""
        got = []
        self.node.create_subscription(msg_type, topic, lambda m: got.append((time.monotonic(), m)), 100)
        return got

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)  # out of the executor before it goes away
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        self.context.try_shutdown()


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
