"""ROS 2 teleop sources with real rclpy on loopback: Joy and Twist record the same episode as the keyboard on a
pseudo-terminal, given the same moves."""

import os
import threading
import time
import uuid

import numpy as np
import pytest

from runtime.control.safety import SafetyConfig, SafetyGate
from runtime.recording.recorder import RecordConfig, Recorder
from runtime.teleop.keyboard import KeyboardTeleop
from sim.world import SimMotor, SimWorld, random_layout

pytestmark = pytest.mark.usefixtures("ros2_loopback")

TOP = (0.5, 0.5, 1.0)
MOVES = [(1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, -1)]  # forward, left, diagonal, turn right (fractions of TOP)
KEYS = b"waqt"
GAP = 0.55  # s between moves: a 0.4 s move runs, then the next one starts


def record(source, tmp_path, send):
    """Record one episode while `send(move)` delivers each of MOVES; returns (actions, event types)."""
    import h5py

    world = SimWorld(random_layout(3))
    motor = SimMotor(world).connect()
    config = RecordConfig(out=tmp_path / source.name, mode="step", episodes=1, status=False,
                          episode_seconds=GAP * len(MOVES) + 0.1)
    recorder = Recorder(world.camera(64, 36), motor, source, SafetyGate(SafetyConfig()), config)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", recorder.run()), daemon=True)
    thread.start()
    for move in MOVES:
        send(move)
        time.sleep(GAP)
    thread.join(timeout=10)
    source.close()
    assert result.get("code") == 0
    with h5py.File(tmp_path / source.name / "episode_0000.h5", "r") as f:
        return f["actions"][()], [e.decode() for e in f["action_event_types"][()]]


def wait_matched(source, timeout=10.0):
    deadline = time.monotonic() + timeout
    while source.publishers == 0:
        assert time.monotonic() < deadline, "the test's publisher was never discovered"
        time.sleep(0.02)
    time.sleep(0.3)  # discovery finishes both ways


def test_joy_and_twist_record_the_same_episode_as_the_keyboard(peer, tmp_path):
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import Joy

    from runtime.teleop.ros2 import JOY_MAP, Ros2JoyTeleop, Ros2TwistTeleop

    master, slave = os.openpty()
    try:
        keyboard = KeyboardTeleop(os.ttyname(slave)).open(TOP)
        by_key = dict(zip(MOVES, KEYS))
        expected = record(keyboard, tmp_path, lambda move: os.write(master, bytes([by_key[move]])))
    finally:
        os.close(master)
        os.close(slave)
    assert expected[0].tolist() == [[0.5, 0, 0], [0, 0.5, 0], [0.5, 0.5, 0], [0, 0, -1.0]]

    twist_topic = f"/teleop_{uuid.uuid4().hex[:8]}"
    twist = Ros2TwistTeleop(twist_topic).open(TOP)
    publisher = peer.node.create_publisher(Twist, twist_topic, 10)
    wait_matched(twist)

    def send_twist(move):
        msg = Twist()
        msg.linear.x, msg.linear.y, msg.angular.z = (float(f * s) for f, s in zip(move, TOP))
        publisher.publish(msg)

    got = record(twist, tmp_path, send_twist)
    assert np.array_equal(got[0], expected[0]) and got[1] == expected[1]

    joy_topic = f"/joy_{uuid.uuid4().hex[:8]}"
    joy = Ros2JoyTeleop(joy_topic).open(TOP)
    joy_publisher = peer.node.create_publisher(Joy, joy_topic, 10)
    wait_matched(joy)

    def joy_message(move, held):
        msg = Joy()
        axes = [0.0] * 8
        for axis, sign, fraction in zip(JOY_MAP.axes, JOY_MAP.signs, move):
            axes[axis] = float(fraction * sign)
        buttons = [0] * 11
        buttons[JOY_MAP.deadman] = 1 if held else 0
        msg.axes, msg.buttons = axes, buttons
        return msg

    def send_joy(move):
        joy_publisher.publish(joy_message(move, True))  # pushed with the dead-man held...
        time.sleep(0.1)
        joy_publisher.publish(joy_message((0, 0, 0), False))  # ...and let go

    got = record(joy, tmp_path, send_joy)
    assert np.array_equal(got[0], expected[0]) and got[1] == expected[1]
