"""The drive's ROS 2 interface (runtime/control/ros2.py) and the drive as a ROS user runs it (launch file,
parameters file, namespaces, simulated time), with real rclpy on loopback. Every wait is bounded."""

import signal
import threading
import time
import uuid

import numpy as np
import pytest

from tests.helpers.processes import ROOT, finish
from tests.helpers.ros2 import drive, image_message, velocity, wait_for

pytestmark = pytest.mark.usefixtures("ros2_loopback")

SLACK = 0.15  # DDS delivery + thread scheduling on a loaded 2-core CI machine
STARTUP = 60  # s: a drive process loads the bundle and joins the ROS graph


def test_the_drives_ros_interface_arms_estops_takes_instructions_and_reports(ros_args, peer):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    from runtime.control.authority import MotionAuthority
    from runtime.control.ros2 import DIAGNOSTIC_NAME, Ros2DriveInterface

    ros_args(["--ros-args", "-r", f"__node:=vla_{uuid.uuid4().hex[:6]}"])
    authority, instructions = MotionAuthority(armed=False), []
    face = Ros2DriveInterface(authority, on_instruction=instructions.append).open()
    name = face.node_name
    diagnostics = peer.listen(DiagnosticArray, "/diagnostics")
    try:
        def call(verb):
            client = peer.node.create_client(Trigger, f"{name}/{verb}")
            assert client.wait_for_service(timeout_sec=10), f"{name}/{verb}"
            future = client.call_async(Trigger.Request())
            wait_for(future.done, 10, f"{verb} answered")
            return future.result()

        assert call("arm").message == "armed" and authority.armed
        estop = peer.node.create_publisher(Bool, f"{name}/estop", 10)
        wait_for(lambda: estop.get_subscription_count() > 0, 10, "the e-stop topic")
        estop.publish(Bool(data=True))
        wait_for(lambda: not authority.armed, 5, "the e-stop")
        assert authority.describe() == "e-stop (ROS topic ~/estop)"
        refused = call("arm")  # finding 1: an arm never clears a latched e-stop
        assert not refused.success and "reset the e-stop first" in refused.message and not authority.armed
        assert call("reset_estop").success and authority.state == "disarmed"
        assert call("arm").success and authority.armed
        assert call("estop").message == "e-stop (ROS service ~/estop)"
        text = peer.node.create_publisher(String, f"{name}/instruction", 10)
        wait_for(lambda: text.get_subscription_count() > 0, 10, "the instruction topic")
        text.publish(String(data="go to the bottle on the left"))
        wait_for(lambda: instructions, 5, "the instruction")
        assert instructions == ["go to the bottle on the left"]
        face.publish_diagnostics("warn", "zero: camera stale", {"armed": False, "rate_hz": 19.8})
        wait_for(lambda: any(s.name == DIAGNOSTIC_NAME for _, m in diagnostics for s in m.status), 5, "diagnostics")
        status = next(s for _, m in diagnostics for s in m.status if s.name == DIAGNOSTIC_NAME)
        assert status.level == b"\x01" and status.message == "zero: camera stale" and status.hardware_id == name
        assert {kv.key: kv.value for kv in status.values} == {"armed": "False", "rate_hz": "19.8"}
    finally:
        face.close()


def test_a_ros_estop_with_a_heartbeat_latches_when_its_messages_stop(ros_args, peer):
    """Finding 3: the ROS ~/estop had no liveness. With --ros-estop-period the topic is an e-stop input: released
    only while 'false' keeps arriving; silent longer than the period, the e-stop latches and arming is refused."""
    from std_msgs.msg import Bool

    from runtime.control.authority import MotionAuthority
    from runtime.control.ros2 import Ros2DriveInterface

    ros_args(["--ros-args", "-r", f"__node:=vla_{uuid.uuid4().hex[:6]}"])
    authority = MotionAuthority(armed=False)
    face = Ros2DriveInterface(authority, estop_period=0.3).open()
    try:
        estop = peer.node.create_publisher(Bool, f"{face.node_name}/estop", 10)
        wait_for(lambda: estop.get_subscription_count() > 0, 10, "the e-stop topic")
        stop = threading.Event()

        def heartbeat():
            while not stop.is_set():
                estop.publish(Bool(data=False))
                time.sleep(0.05)

        beating = threading.Thread(target=heartbeat, daemon=True)
        beating.start()
        wait_for(lambda: (authority.inputs[0].updated or 0.0) > time.monotonic() - 0.1, 5, "the heartbeat")
        assert authority.arm("test") == "" and authority.armed
        for _ in range(10):  # heartbeats keep it armed
            authority.check_inputs()
            time.sleep(0.05)
        assert authority.armed
        stop.set()
        beating.join()
        wait_for(lambda: (authority.check_inputs() or authority.state) == "e-stop", 2, "the silent e-stop topic")
        assert "silent for" in authority.describe()
        assert "silent for" in authority.reset_estop("test")
    finally:
        face.close()


def test_a_ros_drive_in_simulated_time_under_a_namespace_armed_by_service(tiny_bundle_dir, peer):
    """What a ROS user runs: --ros-args with use_sim_time and a namespace (every topic moves), a Gazebo-like
    /clock and images stamped in simulated time, a disarmed start (nothing moves, and with
    --quiet-when-disarmed nothing is published, so twist_mux hands the base to teleop), armed by the
    ~/arm service; /diagnostics reports the drive."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Twist
    from rclpy.time import Time as RosTime
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    ns, node = f"/robot_{uuid.uuid4().hex[:6]}", "vla"
    sim_now = [5000.0]
    clock = peer.node.create_publisher(Clock, "/clock", 10)
    images = peer.node.create_publisher(Image, f"{ns}/camera/image_raw", 10)
    commands = peer.listen(Twist, f"{ns}/cmd_vel")
    diagnostics = peer.listen(DiagnosticArray, "/diagnostics")
    frame = np.random.default_rng(4).integers(0, 255, (48, 64, 3), np.uint8)
    running = threading.Event()

    def world():  # simulated time at 1x, a camera at 20 Hz stamped in it
        while not running.is_set():
            sim_now[0] += 0.05
            clock.publish(Clock(clock=Time(sec=int(sim_now[0]), nanosec=int(sim_now[0] % 1 * 1e9))))
            images.publish(image_message(peer, frame, stamp=RosTime(seconds=sim_now[0] - 0.02)))
            time.sleep(0.05)

    threading.Thread(target=world, daemon=True).start()
    with drive(tiny_bundle_dir, "--motor", "ros2", "--camera", "ros2:camera/image_raw", "--start-disarmed",
               "--quiet-when-disarmed", "--ros-args", "-p", "use_sim_time:=true", "-r", f"__ns:={ns}",
               "-r", f"__node:={node}") as proc:
        try:
            client = peer.node.create_client(Trigger, f"{ns}/{node}/arm")
            assert client.wait_for_service(timeout_sec=STARTUP), proc.stderr.read() if proc.poll() is not None else ""
            wait_for(lambda: any(s.name == "mobile_vla_drive: drive" for _, m in diagnostics for s in m.status), 10,
                     "the drive's diagnostics")
            time.sleep(1.0)
            assert all(velocity(m) == (0.0, 0.0, 0.0) for _, m in commands)  # disarmed: zeros only...
            quiet_since = time.monotonic()
            time.sleep(1.0)
            assert not [t for t, _ in commands if t > quiet_since]  # ...and then silence for the mux
            future = client.call_async(Trigger.Request())
            wait_for(future.done, 10, "the arm service")
            assert future.result().message == "armed"
            wait_for(lambda: any(velocity(m) != (0.0, 0.0, 0.0) for _, m in commands), 10, "a move in simulated time")
            time.sleep(1.2)
            status = [s for _, m in diagnostics for s in m.status if s.name == "mobile_vla_drive: drive"][-1]
            values = {kv.key: kv.value for kv in status.values}
            assert status.hardware_id == f"{ns}/{node}" and status.message == "driving" and status.level == b"\x00"
            assert values["armed"] == "True" and values["link"] == "up" and float(values["loop rate (Hz)"]) > 1
            assert 0 < float(values["camera age (ms)"]) < 500  # aged on the simulated clock, not 55 years
            assert float(values["inference (ms)"]) > 0 and "failed publishes" in values
        finally:
            running.set()
            proc.send_signal(signal.SIGINT)
            out, err = finish(proc)
    assert proc.returncode == 0, err[-3000:]


def test_the_launch_files_command_is_one_the_drive_takes():
    """The launch file (jetson/ros2/) builds `python -m runtime.drive ... --ros-args ...`: parsed here the way
    runtime.drive.main parses it. (The launch package itself is not on PyPI; its call is the last line.)"""
    import importlib.util

    from runtime.control.session import DriveSpec, build_parser
    from runtime.ros2.node import split_ros_args

    path = ROOT / "jetson" / "ros2" / "mobile_vla_drive.launch.py"
    spec = importlib.util.spec_from_file_location("mobile_vla_drive_launch", path)
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    cmd = launch.drive_command("/opt/b", namespace="robot1", drive_args="--cmd-vel-stamped --rate 15")
    assert cmd[1:3] == ["-m", "runtime.drive"]
    argv, ros = split_ros_args(cmd[3:])
    drive = DriveSpec.from_args(build_parser().parse_args(argv))
    assert drive.motor.motor == "ros2" and drive.motor.cmd_vel_stamped and drive.arm.start_disarmed
    assert drive.loop.rate == 15 and drive.camera.source == "ros2:camera/image_raw"
    assert ros == ["--ros-args", "--params-file", str(ROOT / "jetson" / "ros2" / "mobile_vla_drive.yaml"),
                   "-r", "__node:=mobile_vla_drive", "-r", "__ns:=/robot1"]
    import yaml

    params = yaml.safe_load((ROOT / "jetson" / "ros2" / "mobile_vla_drive.yaml").read_text())
    assert params["/**"]["ros__parameters"]["use_sim_time"] is False


def test_the_parameters_file_is_read_by_the_drives_node(ros_args, tmp_path):
    from runtime.cameras.ros2 import Ros2Camera

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "jetson" / "ros2" / "mobile_vla_drive.yaml").read_text().replace("false", "true"))
    ros_args(["--ros-args", "--params-file", str(params), "-r", "__node:=vla_params"])
    cam = Ros2Camera("camera/image_raw", wait_for_publisher=0, warn=lambda s: None).connect()
    try:
        assert cam._ros.node.get_parameter("use_sim_time").value is True
    finally:
        cam.disconnect()


def test_a_bad_topic_name_ends_the_drive_with_a_message_not_a_traceback(tiny_bundle_dir):
    with drive(tiny_bundle_dir, "--dry-run", "--camera", "ros2:bad topic!") as proc:
        out, err = finish(proc, timeout=STARTUP)
    assert proc.returncode == 1, err
    assert "--camera ros2:bad topic!: not a valid ROS 2 topic name" in err and "Traceback" not in err
    assert "cmd_vel +0.000 +0.000 +0.000" in out  # the motor side opened first was zeroed as it was released
