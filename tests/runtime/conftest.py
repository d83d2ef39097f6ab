"""Fixtures of the runtime tests: `peer`, a plain-rclpy node on loopback (the other side of the ROS wire)."""

import pytest


@pytest.fixture
def peer(ros2_loopback):
    from tests.helpers.ros2 import Peer

    p = Peer()
    yield p
    p.close()
