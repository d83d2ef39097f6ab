"""policy/: from a camera frame to an action, and nothing that moves.

What lives here
    bundle.py (the export's folder: load, check, verify; its driving record in driving.py), prompt.py (the one
    prompt layout), preprocess.py (the one image preprocessing), engines.py (a bundle's TensorRT engines),
    backends/ (ONNX Runtime and TensorRT runners behind one interface), onboard.py (`Policy`: frame -> vision ->
    language -> ring of ACT features -> head; the ring keeps frames by frame_sampler.py's rule, which take-over
    recordings share), behaviours.py (chunking, snapping, ensembles wrapped around a
    policy), async_chunks.py (--async: play a chunk while the next is inferred), remote.py + wire.py (the same
    `infer` served by a policy server), select.py (`PolicySpec`, `--bundle/--backend/...`, `open_policy`).

What it may import
    numpy, OpenCV, tokenizers, ONNX Runtime / TensorRT + pycuda (lazily, inside the backend that needs them),
    websockets + msgpack (remote.py), and runtime.hardware (`Frame`), runtime.cli, runtime.logs,
    runtime.atomic. Never a camera, motor, teleop, control, recording or ros2 module: a policy is handed frames
    and returns actions (tests/test_architecture.py checks it).

How to add one more
    A backend (say, a new inference runtime): a class with the methods of `backends.base.Backend` (activate /
    infer per graph / release, `describe()`), its heavy import inside the class, one line in
    `backends.registry.make_backend` and a name in `select.BACKENDS`; copy
    tests/runtime/policy/backends/test_tensorrt.py (a fake that fails where the real device fails) or run it
    against tests/runtime/policy/test_onboard.py's bundle for a CPU runtime.
    A behaviour (a way to turn chunks into commands): a wrapper with the policy's `infer` / `reset` in
    behaviours.py, chosen by `with_behaviours`; copy tests/runtime/policy/test_behaviours.py.
"""
