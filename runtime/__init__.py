"""The robot side, and only that, in rooms by kind; the commands a user types sit on top.

    python -m runtime.drive --bundle bundle/ --serial /dev/ttyUSB0 --camera csi    # drive.py
    python -m runtime.record --out rec/ --teleop keyboard --serial /dev/ttyUSB0     # record.py
    python -m runtime.preflight --bundle bundle/ --serial /dev/ttyUSB0              # preflight.py
    python -m runtime.motor_stop --serial /dev/ttyUSB0                              # motor_stop.py
    python -m runtime.bundle bundle/                                                # bundle.py
    python -m runtime.engines BUNDLE --head-shape; python -m runtime.jetpack        # for jetson/*.sh

Rooms: policy/ (frame -> action: bundle, prompt, preprocess, backends, policy, behaviours, remote client),
cameras/, motors/, teleop/ (the devices), control/ (what decides what reaches the motors: the drive loop, safety,
arming), recording/ (episodes, the recorder, take-over), ros2/ (the shared ROS 2 node). Shared by all:
hardware.py (the seams: Camera, MotorController), cli.py, logs.py, atomic.py. Each room's __init__ says what
lives there, what it may import and how to add one more of its kind (docs/architecture.md has the table).

Imports numpy, OpenCV, pyserial, tokenizers and ONNX Runtime / TensorRT only (rclpy lazily, for ROS 2),
never torch, transformers, peft, lightning, matplotlib, nor train/, export/, sim/ or benchmarks/
(docs/architecture.md; tests/test_architecture.py checks it): it must start fast and fit beside the
engines in Jetson memory.
"""
