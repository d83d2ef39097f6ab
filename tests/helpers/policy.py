"""What a drive must send, computed in this process: the tiny policy on an episode's frames.

    from tests.helpers.policy import offline_moves
    expected = offline_moves(tiny_bundle_dir, episode_file, 12)  # (12, 3) float32: vx, vy, wz=0

Real ONNX Runtime on the bundle, the frames read by the drive's own camera, each action through the
drive's default speed limits (0.5, 0.5, 1.0) and no acceleration limit (drives run with --max-accel inf).
"""

import numpy as np

from runtime.cameras.select import open_camera
from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
from runtime.policy.bundle import load_bundle
from runtime.policy.onboard import Policy


def offline_moves(bundle_dir, episode_file, count: int) -> np.ndarray:
    """(count, 3) float32: the policy's action on each of the first `count` frames, clipped to +-0.5."""
    bundle = load_bundle(bundle_dir)
    with OnnxRuntimeBackend(bundle) as backend:
        policy = Policy(bundle, backend)
        cam = open_camera(str(episode_file))
        return np.array([np.clip(np.pad(policy.infer(cam.read().image).action, (0, 1)), -0.5, 0.5)
                         for _ in range(count)], np.float32)
