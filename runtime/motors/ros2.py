"""The ROS 2 side of the robot: velocity commands out on `/cmd_vel`, camera images in.

    python -m runtime.drive --bundle b/ --motor ros2 --camera episode.h5                  # geometry_msgs/Twist
    python -m runtime.drive --bundle b/ --motor ros2 --cmd-vel-stamped --cmd-vel-frame base_link
    python -m runtime.drive --bundle b/ --motor ros2 --camera ros2:/camera/image_raw      # sensor_msgs/Image
    python -m runtime.drive --bundle b/ --dry-run --camera ros2:/camera/image_raw/compressed

    python -m runtime.drive --bundle b/ --motor ros2 --camera ros2:camera/image_raw \
        --ros-args -p use_sim_time:=true -r __ns:=/robot1 -r __node:=vla       # ROS arguments pass through

rclpy is imported here only, and only when one of these classes is used:
on the robot it comes from the system's ROS install (`source
/opt/ros/humble/setup.bash` on JetPack 6, Jazzy on Ubuntu 24.04); on a
desktop or in CI from the `ros2` extra (`pip install '.[ros2]'`, Python 3.11
wheels). The camera, the motor side and the drive's ROS interfaces share one
rclpy context and one node per process (`RosNode.acquire`), initialised with
the run's `--ros-args` (`set_ros_args`: parameters such as use_sim_time,
remaps such as `__ns` and `__node`) and without rclpy's signal handlers, so
that the drive loop's handlers (which zero the motors) stay in charge. The
node is named `mobile_vla_drive_<pid>` (unique per instance; `-r
__node:=NAME` renames it). Topic names without a leading slash
(`cmd_vel`, `ros2:camera/image_raw`) resolve in the node's namespace, so
`-r __ns:=/robot1` moves them all. A spin thread serves the node's
callbacks; an exception in one is kept and raised, as a CameraError naming
it, by the next camera read (the drive then ends with motors at zero), never
swallowed. An invalid topic name is a DeviceError naming the topic.

`Ros2MotorController` publishes Twist (Humble's base controllers) or
TwistStamped with a frame id (Jazzy's) each time the drive loop sends, i.e.
at the control rate, with reliable QoS (what base controllers subscribe
with). The drive loop's safety applies unchanged: zeros on command timeout,
camera stall, NaN, exception, signal and exit. At the end, `disconnect()`
publishes the zero three times 20 ms apart and then waits (at most
`flush_timeout`, 0.5 s) for every matched subscription to acknowledge it
(`Publisher.wait_for_all_acked`) before it destroys the node: Fast DDS
publishes small messages synchronously, but it acknowledges (and repairs a
lost sample) only on its heartbeat, about every 3 s, so waiting for the
acknowledgement alone would hold the exit for seconds, and a destroyed
writer repairs nothing; the repeats make the zero's arrival independent of
one packet. `connect()` waits up to 2 s for a subscriber, then 0.5 s for
discovery to finish both ways (until then DDS drops what is published).

`Ros2Camera` subscribes with sensor-data QoS (best effort, depth 1: a
reliable camera publisher matches too) and keeps only the newest message.
Its capture time is the message's header stamp: the stamp's age is measured
with the node's clock (ROS time, so simulated time works too) on arrival and
turned into a `time.monotonic()` time, so a stale topic reads as
`FrameTooOld` and a silent one as `CameraStalled`, and the drive loop zeroes.
The image encodings camera drivers commonly send are converted to BGR
(runtime/ros2_images.py); others are refused with the encoding and the
topic named. A topic ending in `/compressed` is read as
sensor_msgs/CompressedImage and decoded with OpenCV (JPEG, PNG).

With `--quiet-when-disarmed` on the drive (`DriveConfig.quiet_when_disarmed`),
`Ros2MotorController.set_quiet(True)` stops publishing after the zero went
out `zero_repeats` times: behind twist_mux (docs/motors.md) a silent input
times out and a lower-priority one (teleop) takes the base.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time

from runtime.hardware import (
    Camera,
    CameraError,
    CameraStalled,
    DeviceError,
    Frame,
    FrameTooOld,
    MotorController,
    SentCommand,
)
from runtime.ros2_images import IMAGE_ENCODINGS, UnsupportedImage, compressed_to_bgr, image_to_bgr

__all__ = ["IMAGE_ENCODINGS", "UnsupportedImage", "compressed_to_bgr", "image_to_bgr", "Ros2Error", "RosNode",
           "Ros2MotorController", "Ros2Camera", "set_ros_args", "split_ros_args"]
log = logging.getLogger(__name__)
NODE_NAME = "mobile_vla_drive"  # + _<pid>: two drives in one ROS graph never share a name
_ros_args: tuple[str, ...] = ()  # this process's --ros-args (set_ros_args), applied to the shared node


class Ros2Error(DeviceError):
    """rclpy missing or a node that cannot be created; the message says what to do."""


def split_ros_args(argv) -> tuple[list[str], list[str]]:
    """(our arguments, the ROS arguments): `--ros-args ...` up to a `--` or the end, as ROS tools take them."""
    argv = list(argv)
    if "--ros-args" not in argv:
        return argv, []
    i = argv.index("--ros-args")
    rest = argv[i:]
    if "--" in rest:
        j = rest.index("--")
        return argv[:i] + rest[j + 1:], rest[:j]
    return argv[:i], rest


def set_ros_args(args) -> None:
    """The ROS arguments (`--ros-args -p use_sim_time:=true -r __ns:=/robot1 ...`) every ROS part of this
    process uses; set before the first ROS part opens."""
    global _ros_args
    _ros_args = tuple(args)


def import_rclpy(*message_packages: str):
    """rclpy (and e.g. "geometry_msgs"), or a Ros2Error that says how to get them."""
    try:
        import rclpy
        from rclpy.context import Context  # noqa: F401

        for package in message_packages:
            importlib.import_module(package if "." in package else f"{package}.msg")
    except ImportError as e:
        raise Ros2Error(f"ROS 2 needs rclpy, which is not importable ({e}): on the robot, source the ROS setup "
                        f"first (source /opt/ros/humble/setup.bash); elsewhere pip install '.[ros2]' "
                        f"(ros-jazzy-* wheels, Python 3.11)") from e
    return rclpy


class RosNode:
    """The process's one rclpy context and node (`acquire` / `release`, counted), with a spin thread that
    serves its callbacks. A callback that raises is recorded in `error` (and logged), not lost."""

    _shared: RosNode | None = None
    _lock = threading.Lock()

    @classmethod
    def acquire(cls, *message_packages: str) -> RosNode:
        with cls._lock:
            import_rclpy(*message_packages)
            if cls._shared is None:
                cls._shared = cls(f"{NODE_NAME}_{os.getpid()}", _ros_args)
            cls._shared.users += 1
            return cls._shared

    def release(self, *subscriptions) -> None:
        """Destroy the caller's `subscriptions` (None: skipped) while the node still lives, then give it up: the
        last user's release closes it."""
        if self.context is not None:
            for subscription in subscriptions:
                if subscription is not None:
                    self.node.destroy_subscription(subscription)
        with RosNode._lock:
            self.users -= 1
            if self.users > 0:
                return
            if RosNode._shared is self:
                RosNode._shared = None
        self.close()

    def __init__(self, name: str, ros_args=()):
        rclpy = import_rclpy()
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.users = 0
        self.error: BaseException | None = None
        self.context = Context()
        args = ["mobile_vla", *ros_args] if ros_args else None
        try:
            # No rclpy signal handlers: the drive loop's own handlers must run (they zero the motors).
            rclpy.init(args=args, context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        except Exception as e:
            raise Ros2Error(f"ROS 2 refused the arguments {' '.join(ros_args)!r}: {e}".split(", at /")[0]) from e
        try:
            self.node = rclpy.create_node(name, context=self.context)
        except Exception as e:
            self.context.try_shutdown()
            raise Ros2Error(f"cannot create ROS 2 node {name}: {type(e).__name__}: {e}") from e
        self._stop = threading.Event()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"ros2:{name}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.node.get_fully_qualified_name()

    def guarded(self, callback):
        """`callback` for a subscription or service: an exception is recorded in `error`, never raised into the
        executor (where it would end the spin thread and every other callback with it)."""
        def call(*args):
            try:
                return callback(*args)
            except Exception as e:
                if self.error is None:
                    self.error = e
                    log.error("ros2: %s in a callback of %s: %s", type(e).__name__, self.name, e)
                return None
        return call

    def _spin(self) -> None:
        context = self.context
        try:
            while not self._stop.is_set() and context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception as e:
            if not self._stop.is_set() and context.ok():  # not a shutdown under us: a real failure
                self.error = self.error or e
                log.error("ros2: the spin thread of %s stopped: %s: %s", self.name, type(e).__name__, e)

    def check(self, what: str) -> None:
        """Raise CameraError if a callback failed or the spin thread died: the drive ends with this message."""
        if self.error is not None:
            raise CameraError(f"{what}: a ROS 2 callback failed: {type(self.error).__name__}: {self.error}")
        if not self._thread.is_alive() and not self._stop.is_set():
            raise CameraError(f"{what}: the ROS 2 spin thread of {self.name} stopped")

    def close(self) -> None:
        if self.context is None:
            return
        context, self.context = self.context, None
        # The spinning thread must be out of the executor before it and the node go away (tearing them
        # down under a waiting executor aborts the process: "terminate called without an active exception").
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        context.try_shutdown()


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
