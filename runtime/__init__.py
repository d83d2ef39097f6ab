"""The robot side: bundle loading, preprocessing, backends, policy, camera, motor, safety.

Imports numpy, OpenCV, pyserial, tokenizers and ONNX Runtime / TensorRT only,
never torch, transformers, peft or lightning (DESIGN.md): it must start fast
and fit beside the engines in Jetson memory.
"""
