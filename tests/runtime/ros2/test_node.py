"""The shared ROS 2 node (runtime/ros2/node.py): --ros-args, one node per process, remaps, clear errors; real
rclpy on loopback. Every wait is bounded."""


import uuid

import numpy as np
import pytest

from tests.helpers.ros2 import image_message, publish_until_read, velocity, wait_for

pytestmark = pytest.mark.usefixtures("ros2_loopback")

SLACK = 0.15  # DDS delivery + thread scheduling on a loaded 2-core CI machine
STARTUP = 60  # s: a drive process loads the bundle and joins the ROS graph


def test_ros_args_are_split_off_as_ros_tools_do():
    from runtime.ros2.node import split_ros_args

    assert split_ros_args(["--bundle", "b", "--ros-args", "-r", "__ns:=/r1"]) == (["--bundle", "b"],
                                                                                 ["--ros-args", "-r", "__ns:=/r1"])
    assert split_ros_args(["--ros-args", "-p", "a:=1", "--", "--quiet"]) == (["--quiet"], ["--ros-args", "-p", "a:=1"])
    assert split_ros_args(["--quiet"]) == (["--quiet"], [])


def test_one_node_per_process_named_uniquely_and_renamed_by_remap(ros_args, topic):
    import os

    from runtime.cameras.ros2 import Ros2Camera
    from runtime.motors.ros2 import Ros2MotorController

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

    from runtime.cameras.ros2 import Ros2Camera
    from runtime.motors.ros2 import Ros2MotorController

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


def test_bad_ros_arguments_and_topic_names_are_clear_errors_that_release_the_node(ros_args):
    from runtime.cameras.ros2 import Ros2Camera
    from runtime.hardware import CameraError
    from runtime.motors.ros2 import Ros2MotorController
    from runtime.ros2.node import Ros2Error, RosNode

    with pytest.raises(CameraError, match=r"--camera ros2:bad topic!: not a valid ROS 2 topic name"):
        Ros2Camera("bad topic!", wait_for_publisher=0).connect()
    assert RosNode._shared is None
    with pytest.raises(Ros2Error, match=r"--cmd-vel-topic 'cmd vel' is not a valid ROS 2 topic name"):
        Ros2MotorController(topic="cmd vel").connect()
    assert RosNode._shared is None
    ros_args(["--ros-args", "-p"])
    with pytest.raises(CameraError, match=r"ROS 2 refused the arguments '--ros-args -p'"):
        Ros2Camera("/cam").connect()
