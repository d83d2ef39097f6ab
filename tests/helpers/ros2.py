"""The other side of the ROS 2 wire in tests, written with plain rclpy (not with runtime.ros2).

    from tests.helpers.ros2 import Peer   # or the `peer` fixture of tests/runtime/conftest.py
    peer = Peer()
    got = peer.listen(Twist, "/cmd_vel")  # [(arrival time.monotonic(), message)], filled as they arrive
    peer.close()

Its own rclpy context and a spinning thread; run it under the `ros2_loopback` fixture (loopback only).
"""

import threading
import time
import uuid


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
