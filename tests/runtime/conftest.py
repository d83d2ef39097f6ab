"""Fixtures of the runtime tests: `peer`, a plain-rclpy node on loopback (the other side of the ROS wire), a fresh
`topic` name, `camera_on` (a Ros2Camera on that topic) and `ros_args` (the process's --ros-args for one test)."""

import uuid

import pytest


@pytest.fixture
def peer(ros2_loopback):
    from tests.helpers.ros2 import Peer

    p = Peer()
    yield p
    p.close()


@pytest.fixture
def topic():
    return f"/test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def camera_on(topic):
    cams = []

    def make(suffix="/image_raw", **kw):
        from runtime.cameras.ros2 import Ros2Camera

        kw = {"wait_for_publisher": 0.0, "warn": lambda s: None, **kw}  # publish_until_read re-publishes instead
        cams.append(Ros2Camera(topic + suffix, **kw).connect())
        return cams[-1]

    yield make
    for c in cams:
        c.disconnect()


@pytest.fixture
def ros_args():
    """set_ros_args for this test, the process default restored after (the shared node is rebuilt)."""
    from runtime.ros2 import node

    yield node.set_ros_args
    assert node.RosNode._shared is None, "a test left the shared ROS node open"
    node.set_ros_args(())
