"""ros2/: the ROS 2 plumbing every ROS part of the robot shares.

What lives here
    node.py (`RosNode`: the process's one rclpy context and node with its spin thread; the run's `--ros-args`).
    Each kind keeps its ROS 2 implementation in its own room, as ros2.py: motors/ros2.py (`/cmd_vel`),
    cameras/ros2.py (image topics), teleop/ros2.py (Joy and Twist teleop), control/ros2.py (the drive's
    services, e-stop topic and /diagnostics). One rule: a ROS part lives with its kind, and meets the others here.

What it may import
    rclpy and the message packages, only inside functions (ruff's TID253), and runtime.hardware. Never
    another room (tests/test_architecture.py checks it).

How to add one more (say, a ROS 2 odometry input)
    odometry.py in the room of its kind, built on `RosNode.acquire(...)` / `release(...)`; copy
    tests/runtime/motors/test_ros2.py (real rclpy over loopback: tests/helpers/ros2.py).
"""
