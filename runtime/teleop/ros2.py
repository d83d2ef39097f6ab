"""Teleoperation from ROS 2: a gamepad through `sensor_msgs/Joy`, or any teleop node's `geometry_msgs/Twist`.

    python -m runtime.record --out rec/ --teleop ros2-joy:/joy --serial /dev/ttyUSB0 --camera csi
    python -m runtime.record --out rec/ --teleop ros2-twist:/cmd_vel_teleop --mode continuous --episode-seconds 30

rclpy comes from runtime/ros2/node.py's `RosNode` (the process's one node, shared
with the camera and the motor side, with the run's --ros-args and no rclpy
signal handlers: the recorder's handlers zero the motors). Messages are
received on the node's spinning thread and handed over under a lock.

- `ros2-joy:/joy`: `Joy.axes` (-1..1) and `Joy.buttons` through a
  `runtime.teleop.GamepadMap` (joy_node's layout: left stick up is +1 on
  axis 1; the dead-man is button 4; A/B/X/Start are start/end/discard/quit).
  Each message with a deflected stick (dead-man held) is one move in step
  mode; joy_node's autorepeat (20 Hz by default) keeps a held stick fresh.
- `ros2-twist:/topic`: each Twist (linear.x, linear.y, angular.z in m/s and
  rad/s, clipped by the safety gate to `--max-speed`) is one move in step
  mode. Twist carries no episode controls: end episodes with
  `--episode-seconds`, or drive with the keyboard or a gamepad instead.

A message older than `timeout_s` (0.5 s) no longer counts: the command in
force falls to zero, as the drive's command timeout does. Do not point
`ros2-twist` at the topic the robot's own `--motor ros2` publishes on: the
recorder would read its own commands back (use e.g. /cmd_vel_teleop, a
remapping of teleop_twist_keyboard's output).
"""

from __future__ import annotations

import threading
import time

from runtime.hardware import ZERO, TeleopCommand, TeleopError, TeleopEvent, TeleopSource
from runtime.ros2.node import Ros2Error, RosNode
from runtime.teleop.joystick import GamepadMap, StickState

JOY_MAP = GamepadMap(axes=(1, 0, 3), signs=(1, 1, 1))  # joy_node reports stick up and stick left as +1


class _Ros2Teleop(TeleopSource):
    """A subscription whose messages are queued on the node's thread and consumed by `poll`."""

    message_package = "sensor_msgs"

    def __init__(self, topic: str, timeout_s: float = 0.5):
        if not topic.startswith("/"):
            raise TeleopError(f"--teleop: ROS 2 topic {topic!r} must be absolute, e.g. /joy")
        self.topic, self.timeout_s = topic, timeout_s
        self._ros: RosNode | None = None
        self._subscription = None
        self._lock = threading.Lock()
        self._inbox: list = []  # (time.monotonic() on arrival, message)
        self._last_arrival = -float("inf")

    def _message_type(self):
        raise NotImplementedError

    def open(self, top_speed=(0.5, 0.5, 1.0)) -> _Ros2Teleop:
        super().open(top_speed)
        try:
            self._ros = RosNode.acquire(self.message_package)
        except Ros2Error as e:
            raise TeleopError(str(e)) from e

        def arrived(msg):
            with self._lock:
                self._inbox.append((time.monotonic(), msg))

        self._subscription = self._ros.node.create_subscription(self._message_type(), self.topic,
                                                                self._ros.guarded(arrived), 50)
        return self

    def close(self) -> None:
        if self._ros is not None:
            ros, self._ros = self._ros, None
            subscription, self._subscription = self._subscription, None
            ros.release(subscription)

    def _take(self) -> list:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        if inbox:
            self._last_arrival = inbox[-1][0]
        return inbox

    def fresh(self, now: float) -> bool:
        return now - self._last_arrival <= self.timeout_s

    @property
    def publishers(self) -> int:
        return 0 if self._ros is None else self._ros.node.count_publishers(self.topic)


class Ros2JoyTeleop(_Ros2Teleop):
    """sensor_msgs/Joy: sticks scaled to the top speed, a dead-man button, control buttons."""

    name = "ros2-joy"

    def __init__(self, topic: str = "/joy", mapping: GamepadMap = JOY_MAP, timeout_s: float = 0.5):
        super().__init__(topic, timeout_s)
        self.mapping = mapping
        self.state = StickState(mapping)

    def _message_type(self):
        from sensor_msgs.msg import Joy

        return Joy

    def poll(self, now: float) -> list[TeleopEvent]:
        events, moved = [], None
        for _arrival, msg in self._take():
            self.state.axes = {i: float(v) for i, v in enumerate(msg.axes)}
            for button, pressed in enumerate(msg.buttons):
                control = self.state.press(button, bool(pressed))
                if control:
                    events.append(TeleopEvent(control, ZERO, now))
            moved = self.state.deflection() or moved
        return events + self.moves(moved, now)

    def command(self, now: float) -> TeleopCommand:
        if not self.fresh(now):
            return TeleopCommand(ZERO, False)
        return TeleopCommand(self.scale(self.state.fraction()), self.state.held)


class Ros2TwistTeleop(_Ros2Teleop):
    """geometry_msgs/Twist from any teleop node: one message is one move; fresh messages are the command."""

    name = "ros2-twist"
    message_package = "geometry_msgs"

    def __init__(self, topic: str = "/cmd_vel_teleop", timeout_s: float = 0.5):
        super().__init__(topic, timeout_s)
        self._velocity = ZERO

    def _message_type(self):
        from geometry_msgs.msg import Twist

        return Twist

    def poll(self, now: float) -> list[TeleopEvent]:
        events = []
        for _arrival, msg in self._take():
            self._velocity = (float(msg.linear.x), float(msg.linear.y), float(msg.angular.z))
            if any(self._velocity):
                events.append(TeleopEvent("move", self._velocity, now))
        return events[-1:]  # messages between two polls: the newest is the move

    def command(self, now: float) -> TeleopCommand:
        if not self.fresh(now):
            return TeleopCommand(ZERO, False)
        return TeleopCommand(self._velocity, True)
