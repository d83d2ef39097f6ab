"""The robot side, and only that: bundle, preprocessing, prompt, backends, policy and its behaviours,
cameras, motor controllers, safety, the drive loop, pre-flight and the step log.

Imports numpy, OpenCV, pyserial, tokenizers and ONNX Runtime / TensorRT only (rclpy lazily, for ROS 2),
never torch, transformers, peft, lightning, matplotlib, nor train/, export/, sim/ or benchmarks/
(docs/architecture.md; tests/test_architecture.py checks it): it must start fast and fit beside the
engines in Jetson memory.
"""
