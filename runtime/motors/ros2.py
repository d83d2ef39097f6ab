"""A ROS 2 base as the motor side: velocity commands out on `/cmd_vel`.

    python -m runtime.drive --bundle b/ --motor ros2 --camera episode.h5                  # geometry_msgs/Twist
    python -m runtime.drive --bundle b/ --motor ros2 --cmd-vel-stamped --cmd-vel-frame base_link

`Ros2MotorController` publishes Twist (Humble's base controllers) or
TwistStamped with a frame id (Jazzy's) each time the drive loop sends, i.e.
at the control rate, with reliable QoS (what base controllers subscribe
with), on the process's shared node (runtime/ros2/node.py). The drive loop's
safety applies unchanged: zeros on command timeout, camera stall, NaN,
exception, signal and exit. At the end, `disconnect()` publishes the zero
three times 20 ms apart and then waits (at most `flush_timeout`, 0.5 s) for
every matched subscription to acknowledge it (`Publisher.wait_for_all_acked`)
before it destroys the node: Fast DDS publishes small messages synchronously,
but it acknowledges (and repairs a lost sample) only on its heartbeat, about
every 3 s, so waiting for the acknowledgement alone would hold the exit for
seconds, and a destroyed writer repairs nothing; the repeats make the zero's
arrival independent of one packet. `connect()` waits up to 2 s for a
subscriber, then 0.5 s for discovery to finish both ways (until then DDS
drops what is published). An invalid topic name is a DeviceError naming the
topic.

With `--quiet-when-disarmed` on the drive (`DriveConfig.quiet_when_disarmed`),
`Ros2MotorController.set_quiet(True)` stops publishing after the zero went
out `zero_repeats` times: behind twist_mux (docs/motors.md) a silent input
times out and a lower-priority one (teleop) takes the base.
"""

from __future__ import annotations

import logging
import sys
import time

from runtime.hardware import MotorController, SentCommand
from runtime.ros2.node import Ros2Error, RosNode

log = logging.getLogger(__name__)


def no_subscriber_message(node, topic: str, stamped: bool, waited: float) -> str:
    """Why nobody listens on `topic`, with the common cause named: a Twist publisher and a TwistStamped
    subscriber (Jazzy's controllers) never match, and the other way round."""
    ours = "geometry_msgs/msg/TwistStamped" if stamped else "geometry_msgs/msg/Twist"
    other = "geometry_msgs/msg/Twist" if stamped else "geometry_msgs/msg/TwistStamped"
    types = {t for name, ts in node.get_topic_names_and_types() if name == topic for t in ts} - {ours}
    base = f"ros2: no subscriber on {topic} after {waited:.1f} s"
    if other in types:
        flag = "without --cmd-vel-stamped" if stamped else "with --cmd-vel-stamped"
        return (f"{base}: the topic carries {other}, this drive publishes {ours}, and different types never "
                f"match (Jazzy's ros2_control controllers take TwistStamped, Humble's Twist): run {flag}")
    if types:
        return f"{base}: the topic carries {', '.join(sorted(types))}, this drive publishes {ours}"
    return (f"{base} (is the base driver running, on this ROS_DOMAIN_ID? a Jazzy controller expects "
            f"TwistStamped: --cmd-vel-stamped; remapped topic or namespace?)")


TIMEOUT_PARAMETERS = ("cmd_vel_timeout", "timeout")  # diff_drive_controller / twist_mux (topics.NAME.timeout)


def base_command_timeouts(node, topic: str, wait_s: float = 2.0) -> dict[str, dict[str, float]]:
    """For each node subscribed to `topic`: its parameters named like a command timeout (diff_drive_controller's
    cmd_vel_timeout, twist_mux's topics.*.timeout) and their values in seconds; {} for a node that exposes
    none or does not answer its parameter services within `wait_s`."""
    from rcl_interfaces.srv import GetParameters, ListParameters

    found = {}
    deadline = time.monotonic() + wait_s
    infos = node.get_subscriptions_info_by_topic(topic)
    # an endpoint is seen before its node's name (discovery sends them apart): wait for the names
    while any("_UNKNOWN_" in i.node_name for i in infos) and time.monotonic() < deadline:
        time.sleep(0.05)
        infos = node.get_subscriptions_info_by_topic(topic)
    for info in infos:
        name = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
        if "_UNKNOWN_" in name:
            continue
        if name == node.get_fully_qualified_name():
            continue
        found[name] = {}
        lister = node.create_client(ListParameters, f"{name}/list_parameters")
        getter = node.create_client(GetParameters, f"{name}/get_parameters")
        try:
            if not lister.wait_for_service(timeout_sec=wait_s):
                continue
            names = _call(lister, ListParameters.Request(), wait_s)
            wanted = [n for n in (names.result.names if names else []) if n.split(".")[-1] in TIMEOUT_PARAMETERS]
            if not wanted or not getter.wait_for_service(timeout_sec=wait_s):
                continue
            values = _call(getter, GetParameters.Request(names=wanted), wait_s)
            for key, value in zip(wanted, values.values if values else []):
                number = value.double_value if value.type == 3 else value.integer_value if value.type == 2 else None
                if number is not None:
                    found[name][key] = float(number)
        finally:
            node.destroy_client(lister)
            node.destroy_client(getter)
    return found


def _call(client, request, wait_s: float):
    """A service call answered on the shared node's spin thread; None after `wait_s`."""
    future = client.call_async(request)
    deadline = time.monotonic() + wait_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return future.result() if future.done() else None


class Ros2MotorController(MotorController):
    """Body velocity -> geometry_msgs/Twist (or TwistStamped) on a topic."""

    name = "ros2"

    def __init__(self, topic: str = "cmd_vel", stamped: bool = False, frame_id: str = "base_link",
                 wait_for_subscriber: float = 5.0, link_timeout: float = 4.0,
                 flush_timeout: float = 0.5, zero_repeats: int = 3, warn=None):
        self.topic, self.stamped, self.frame_id = topic, stamped, frame_id
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
        self.quiet = False  # set_quiet(True): no zeros published after the first zero_repeats
        self._zeros = 0  # zeros published in a row

    @property
    def is_connected(self) -> bool:
        return self._publisher is not None

    @property
    def resolved_topic(self) -> str:
        """The topic after the node's namespace and remaps (what `ros2 topic list` shows)."""
        return self._publisher.topic_name if self._publisher is not None else self.topic

    def subscribers(self) -> int:
        return self._publisher.get_subscription_count() if self._publisher is not None else 0

    def explain(self) -> dict:
        """For pre-flight: who listens on the topic, why nobody does, and the base-side timeouts exposed."""
        topic = self.resolved_topic
        if self.subscribers() == 0:
            return {"subscribers": 0, "why": no_subscriber_message(self._ros.node, topic, self.stamped, 0.0)}
        return {"subscribers": self.subscribers(), "timeouts": base_command_timeouts(self._ros.node, topic)}

    def set_quiet(self, quiet: bool) -> None:
        """True: after the zero went out zero_repeats times, publish nothing more until a non-zero command
        (a disarmed drive behind twist_mux: its input times out and a lower-priority input takes the base)."""
        self.quiet = bool(quiet)

    def connect(self) -> Ros2MotorController:
        if self.is_connected:
            return self
        self._ros = RosNode.acquire("geometry_msgs")
        from geometry_msgs.msg import Twist, TwistStamped
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        self._twist, self._stamped_type = Twist, TwistStamped  # looked up once: send_velocity runs every tick
        msg_type = TwistStamped if self.stamped else Twist
        qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        try:
            self._publisher = self._ros.node.create_publisher(msg_type, self.topic, qos)
        except Exception as e:  # InvalidTopicNameException and kin: a user's typo, said plainly
            self._ros.release()
            self._ros = None
            raise Ros2Error(f"--cmd-vel-topic {self.topic!r} is not a valid ROS 2 topic name: "
                            f"{str(e).splitlines()[0]}") from None
        deadline = time.monotonic() + self.wait_for_subscriber
        while self._publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._publisher.get_subscription_count() == 0:
            self.warn(no_subscriber_message(self._ros.node, self.resolved_topic, self.stamped,
                                            self.wait_for_subscriber) + "; publishing anyway")
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
        if any(velocity):
            self._zeros = 0
        else:
            self._zeros += 1
            if self.quiet and self._zeros > self.zero_repeats:
                return SentCommand(velocity, sent=True, acknowledged=None)  # the zero stands (set_quiet)
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
        self.quiet = False  # the last zeros always go out
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
            self._ros.release()
            self._ros = None


