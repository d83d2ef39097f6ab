"""Start the drive with `ros2 launch`, as ROS users start everything else.

    ros2 launch jetson/ros2/mobile_vla_drive.launch.py bundle:=/opt/mobile-vla/bundle
    ros2 launch jetson/ros2/mobile_vla_drive.launch.py bundle:=/opt/mobile-vla/bundle namespace:=robot1 \
        camera:=ros2:camera/image_raw drive_args:="--cmd-vel-stamped --cmd-vel-topic cmd_vel_vla"

The drive is a Python module, not a ROS package, so it starts as a process
(`python -m runtime.drive`) with its ROS side configured the ROS way:
`--ros-args --params-file mobile_vla_drive.yaml -r __ns:=/NAMESPACE -r
__node:=NAME`. Its motor side is `--motor ros2` and it starts disarmed
(`ros2 service call /NAMESPACE/NAME/arm std_srvs/srv/Trigger` arms it). The
process gets SIGINT on shutdown (launch's default), which zeroes the motors.
Launch arguments: bundle (required), python (the venv's interpreter),
camera, namespace, node_name, params_file, drive_args (any other
runtime.drive options).
"""

import os
import shlex

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULTS = {"python": "/opt/mobile-vla/venv/bin/python", "camera": "ros2:camera/image_raw", "namespace": "",
            "node_name": "mobile_vla_drive", "params_file": os.path.join(HERE, "mobile_vla_drive.yaml"),
            "drive_args": ""}


def drive_command(bundle, python=DEFAULTS["python"], camera=DEFAULTS["camera"], namespace=DEFAULTS["namespace"],
                  node_name=DEFAULTS["node_name"], params_file=DEFAULTS["params_file"],
                  drive_args=DEFAULTS["drive_args"]):
    """The drive's command line for these launch arguments (a plain function: tests check it parses)."""
    ros = ["--ros-args", "--params-file", params_file, "-r", f"__node:={node_name}"]
    if namespace:
        ros += ["-r", f"__ns:=/{namespace.strip('/')}"]
    return [python, "-m", "runtime.drive", "--bundle", bundle, "--motor", "ros2", "--camera", camera,
            "--start-disarmed", "--quiet", *shlex.split(drive_args), *ros]


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def start(context):
        values = {k: LaunchConfiguration(k).perform(context) for k in ("bundle", *DEFAULTS)}
        cwd = values.get("bundle") and os.path.dirname(os.path.dirname(HERE))  # the checkout, for `-m runtime`
        return [ExecuteProcess(cmd=drive_command(**values), cwd=cwd, output="screen", sigterm_timeout="5")]

    return LaunchDescription(
        [DeclareLaunchArgument("bundle", description="bundle folder (export.to_onnx)")]
        + [DeclareLaunchArgument(k, default_value=v) for k, v in DEFAULTS.items()]
        + [OpaqueFunction(function=start)])
