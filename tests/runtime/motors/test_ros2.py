"""A ROS 2 base as the motor side (runtime/motors/ros2.py), with real rclpy on loopback: `/cmd_vel` as Twist
or TwistStamped from this process and from a drive process, a test node listening. Every wait is bounded."""

import time

import numpy as np
import pytest

from tests.helpers.policy import offline_moves
from tests.helpers.processes import finish
from tests.helpers.ros2 import drive, velocity, wait_for

pytestmark = pytest.mark.usefixtures("ros2_loopback")

SLACK = 0.15  # DDS delivery + thread scheduling on a loaded 2-core CI machine
STARTUP = 60  # s: a drive process loads the bundle and joins the ROS graph


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


def test_motor_publishes_commands_and_disconnect_leaves_a_zero(peer, topic):
    from geometry_msgs.msg import Twist

    from runtime.motors.ros2 import Ros2MotorController

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


def test_no_subscriber_names_the_twist_and_twiststamped_mismatch(ros_args, peer, topic):
    from geometry_msgs.msg import TwistStamped

    from runtime.motors.ros2 import Ros2MotorController

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

    from runtime.motors.ros2 import Ros2MotorController

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


def test_preflight_warns_without_a_subscriber_and_reports_the_base_side_timeout(ros_args, peer, topic):
    from geometry_msgs.msg import Twist, TwistStamped

    from runtime.motors.select import MotorSpec
    from runtime.preflight import check_motor

    peer.listen(TwistStamped, topic + "_jazzy")  # a Jazzy controller: never matches a Twist publisher
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic + "_jazzy"))
    assert status == "WARN" and "run with --cmd-vel-stamped" in msg, msg
    peer.listen(Twist, topic)  # a base without a command timeout
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic))
    assert status == "WARN" and "none exposing a base-side command timeout" in msg, msg
    assert "nothing stops the base" in msg
    peer.node.declare_parameter("cmd_vel_timeout", 0.5)  # diff_drive_controller's
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic))
    assert status == "OK", msg
    assert f"base-side command timeout: {peer.node.get_fully_qualified_name()} cmd_vel_timeout=0.5 s" in msg


def test_preflight_does_not_count_a_twist_mux_input_timeout_as_a_base_side_one(ros_args, peer, topic):
    # Issue 29, item 7: twist_mux's topics.NAME.timeout stops forwarding a silent input; the base behind it keeps
    # the last command. Until issue 29 pre-flight reported it as the base-side timeout (OK).
    from geometry_msgs.msg import Twist

    from runtime.motors.select import MotorSpec
    from runtime.preflight import check_motor

    peer.listen(Twist, topic)  # twist_mux's input for the drive (--cmd-vel-topic cmd_vel_vla in docs/motors.md)
    peer.node.declare_parameter("topics.autonomy.timeout", 0.5)
    peer.node.declare_parameter("topics.autonomy.priority", 10)
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic))
    name = peer.node.get_fully_qualified_name()
    assert status == "WARN" and "none exposing a base-side command timeout" in msg, msg
    assert (f"{name} topics.autonomy.timeout=0.5 s: twist_mux's input timeout stops forwarding a silent input, it "
            f"does not zero the base") in msg and "nothing stops the base" in msg
    peer.node.declare_parameter("cmd_vel_timeout", 0.5)  # the base's own (a mux and a controller in one node here)
    status, msg = check_motor(MotorSpec(motor="ros2", cmd_vel_topic=topic))
    assert status == "OK" and f"base-side command timeout: {name} cmd_vel_timeout=0.5 s;" in msg, msg
