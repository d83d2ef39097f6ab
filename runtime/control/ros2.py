"""The drive's own ROS 2 interface: diagnostics out, instruction, arm and e-stop in.

    python -m runtime.drive --bundle b/ --motor ros2 --camera ros2:camera/image_raw --start-disarmed
    ros2 service call /mobile_vla_drive_<pid>/arm std_srvs/srv/Trigger    # or ~/disarm, ~/estop, ~/reset_estop
    ros2 topic pub --once /mobile_vla_drive_<pid>/estop std_msgs/msg/Bool "{data: true}"
    ros2 topic pub -r 10 /mobile_vla_drive_<pid>/estop std_msgs/msg/Bool "{data: false}"   # --ros-estop-period 0.5
    ros2 topic pub --once /mobile_vla_drive_<pid>/instruction std_msgs/msg/String "{data: 'go to the bottle'}"
    ros2 topic echo /diagnostics

On the process's shared node (runtime/ros2/node.py, so `-r __node:=vla` gives
`/vla/arm`): `/diagnostics` (diagnostic_msgs/DiagnosticArray, the topic the
diagnostic aggregator and rqt_robot_monitor read, absolute as every ROS
driver publishes it) carries one status named `mobile_vla_drive: drive`
whose values are the loop rate, the inference time, the camera age, the link
state, the armed state and the counters the status line shows; its level is
OK while driving, WARN while zeroed for a reason, ERROR on an e-stop or a
link that is down. The services `~/arm`, `~/disarm`, `~/estop`,
`~/reset_estop` (std_srvs/Trigger; `success` false with the refusal, such as
the pre-arm check that failed) and the topic `~/estop` (std_msgs/Bool, true =
pressed) act on the drive's motion authority (runtime/control/authority.py).
With `--ros-estop-period S` the topic is an e-stop input with a heartbeat: a
message must arrive at least every S seconds (false = released), or the
e-stop latches, and an arm is refused until it does; `~/instruction`
(std_msgs/String) hands a new instruction to the drive, which applies it
between two frames and starts a new episode (behaviours and ring reset).
"""

from __future__ import annotations

import logging

from runtime.ros2.node import RosNode

log = logging.getLogger(__name__)
DIAGNOSTIC_NAME = "mobile_vla_drive: drive"
LEVELS = {"ok": b"\x00", "warn": b"\x01", "error": b"\x02", "stale": b"\x03"}  # DiagnosticStatus levels


class Ros2DriveInterface:
    def __init__(self, authority=None, on_instruction=None, estop_period: float | None = None):
        self.authority = authority  # runtime.control.authority.MotionAuthority, or None: no arm/e-stop services
        self.on_instruction = on_instruction  # callback(str), called on the ROS spin thread
        self.estop_period = estop_period  # s: ~/estop is a heartbeat input (None: an event on true only)
        self.estop_input = None
        self._ros: RosNode | None = None
        self._diagnostics = None
        self._entities = []

    @property
    def node_name(self) -> str:
        return self._ros.name if self._ros else ""

    def open(self) -> Ros2DriveInterface:
        if self._ros is not None:
            return self
        self._ros = RosNode.acquire("diagnostic_msgs", "std_msgs", "std_srvs.srv")
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger

        node = self._ros.node
        self._diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.on_instruction is not None:
            self._entities.append(node.create_subscription(
                String, "~/instruction", self._ros.guarded(lambda m: self.on_instruction(m.data)), 10))
        if self.authority is not None:
            if self.estop_period is not None:  # an input before any service: no arm can come first
                self.estop_input = self.authority.add_input(f"ROS topic {self._ros.name}/estop", "estop",
                                                            max_age=self.estop_period)
            self._entities.append(node.create_subscription(Bool, "~/estop", self._ros.guarded(self._estop), 10))
            for verb in ("arm", "disarm", "estop", "reset_estop"):
                self._entities.append(node.create_service(Trigger, f"~/{verb}",
                                                          self._ros.guarded(self._trigger(verb))))
        return self

    def problem(self) -> str:
        """"" while the interface works; else why its topics and services are gone (a callback failed, the spin
        thread stopped): the drive latches its e-stop, since ~/estop could no longer reach it."""
        if self._ros is None:
            return ""
        try:
            self._ros.check("the drive's ROS 2 interface")
        except Exception as e:
            return str(e)
        return ""

    def _estop(self, msg) -> None:
        if self.estop_input is not None:
            self.authority.report(self.estop_input, pressed=bool(msg.data))
        elif msg.data:
            self.authority.estop("ROS topic ~/estop")

    def _trigger(self, verb: str):
        def serve(request, response):
            refusal = getattr(self.authority, verb)(f"ROS service ~/{verb}") or ""
            response.success = not refusal
            response.message = refusal or self.authority.describe()
            return response
        return serve

    def publish_diagnostics(self, level: str, message: str, values: dict) -> None:
        """One DiagnosticStatus: level ok/warn/error, the drive's state as its message, `values` as key/values."""
        if self._diagnostics is None:
            return
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        status = DiagnosticStatus(level=LEVELS[level], name=DIAGNOSTIC_NAME, message=message,
                                  hardware_id=self.node_name,
                                  values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._ros.node.get_clock().now().to_msg()
        try:
            self._diagnostics.publish(array)
        except Exception as e:  # never into the control loop: diagnostics are a report, not a control path
            log.debug("diagnostics not published: %s", e)

    def close(self) -> None:
        if self._ros is None:
            return
        ros, self._ros = self._ros, None
        if ros.context is not None:
            for entity in self._entities:
                destroy = ros.node.destroy_service if hasattr(entity, "srv_type") else ros.node.destroy_subscription
                destroy(entity)
            ros.node.destroy_publisher(self._diagnostics)
        self._entities, self._diagnostics = [], None
        ros.release()
