"""The native TensorRT backend against a fake GPU as strict as the device: contexts per thread, every
failing TensorRT call; in the real two-thread drive loop over the controller emulator."""

import json
import math
import shutil
import sys
import threading

import numpy as np
import pytest

from runtime.policy.backends.base import BackendError
from runtime.policy.bundle import load_bundle
from tests.fakes import gpu as fake_gpu
from tests.helpers.processes import run_drive, run_python


@pytest.fixture
def engines(tiny_bundle_dir, tmp_path, monkeypatch):
    """A copy of the tiny bundle with fake engines built and recorded; the fake GPU installed."""
    from export.to_trt import build_all

    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, dst)
    fake_gpu.install(monkeypatch)
    build_all(dst)
    return dst


# ------------------------------------------------------------------ the fake is as strict as the driver
def test_fake_driver_refuses_a_call_from_a_thread_without_a_current_context(monkeypatch):
    _, cuda = fake_gpu.install(monkeypatch)
    cuda.init()
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        cuda.mem_alloc(16)  # fine here: pushed on this thread
        errors = []

        def other():
            try:
                cuda.mem_alloc(16)
            except fake_gpu.LogicError as e:
                errors.append(str(e))

        t = threading.Thread(target=other, name="inference")
        t.start()
        t.join()
        assert errors and "invalid device context" in errors[0] and "inference" in errors[0]
    finally:
        ctx.pop()
    with pytest.raises(fake_gpu.LogicError, match="invalid device context"):
        cuda.Stream()


# ------------------------------------------------------------------ the drive loop, both threads, trt backend
def run_drive_loop(bundle_dir, episode_file, emulator, max_steps=None):
    """As runtime.drive does: the backend activated on this (main) thread, inference on the loop's thread."""
    from runtime.cameras.select import open_camera
    from runtime.control.config import DriveConfig
    from runtime.control.loop import DriveLoop
    from runtime.control.safety import SafetyConfig, SafetyGate
    from runtime.motors.serial_controller import SerialMotorController
    from runtime.policy.backends.tensorrt import TensorRTBackend
    from runtime.policy.onboard import Policy

    bundle = load_bundle(bundle_dir)
    backend = TensorRTBackend(bundle).activate()
    try:
        motor = SerialMotorController(emulator.port, watchdog_ms=1000).connect()
        gate = SafetyGate(SafetyConfig(max_speed=(0.5, 0.5, 1.0), max_accel=(math.inf,) * 3, dead_zone=0.0))
        loop = DriveLoop(Policy(bundle, backend), open_camera(str(episode_file)), motor, gate,
                         # step mode: every action is sent for 50 ms, so "it moved" does not depend on timing
                         DriveConfig(mode="step", rate=50, step_duration=0.05, cmd_timeout=0.3, max_steps=max_steps,
                                     status=False),
                         printer=lambda s: None)
        code = loop.run()
        motor.disconnect()
    finally:
        backend.deactivate()
    return loop, code


def test_drive_loop_drives_the_emulator_with_the_trt_backend(engines, episode_file, emulator):
    loop, code = run_drive_loop(engines, episode_file, emulator)
    assert loop.error is None and code == 0, loop.error
    assert loop.steps == 12 and loop.ended_by == "end of camera stream"
    assert [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)], "the robot never moved"
    assert emulator.velocity == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("call, after", [("execute_async_v3", 3 * 4), ("set_input_shape", 1 + 4)])  # at frame 5
def test_a_failing_tensorrt_call_mid_run_raises_naming_it_and_the_motors_stop(engines, episode_file, emulator,
                                                                               call, after):
    """Fails after a few good frames (the robot is moving): BackendError names engine and call; zero at the end."""
    fake_gpu.fail(call, after=after)
    loop, code = run_drive_loop(engines, episode_file, emulator)
    assert code == 1 and isinstance(loop.error, BackendError)
    assert call in str(loop.error) and ".engine:" in str(loop.error)  # the engine file, by its precision's name
    assert 1 <= loop.steps < 12
    assert [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)], "it failed before moving"
    assert emulator.velocity == (0.0, 0.0, 0.0) and emulator.commands()[-1].command == "STOP"


@pytest.mark.parametrize("call", ["deserialize_cuda_engine", "create_execution_context", "set_tensor_address"])
def test_a_failing_tensorrt_call_at_start_refuses_to_drive(engines, episode_file, emulator, capsys, call,
                                                           signal_handlers):
    """These run once, at activation: runtime.drive exits 1 naming the engine and the call; nothing moved."""
    from runtime.drive import main

    fake_gpu.fail(call, after=1)  # the first engine loads, the second does not
    code = main(["--bundle", str(engines), "--backend", "trt", "--serial", emulator.port, "--camera",
                 str(episode_file), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and call in err and ".engine:" in err
    assert not [r for r in emulator.commands("SET_VELOCITY") if any(r.velocity)]
    assert emulator.velocity == (0.0, 0.0, 0.0)


def test_enqueue_failure_never_returns_the_previous_output(engines):
    from runtime.policy.backends.tensorrt import TensorRTBackend

    bundle = load_bundle(engines)
    d = bundle.outputs("language")[0].shape[-1]
    with TensorRTBackend(bundle) as backend:
        features = np.random.default_rng(0).standard_normal((1, 3, d)).astype(np.float32)
        backend.predict_chunk(features)
        fake_gpu.fail("execute_async_v3")
        with pytest.raises(BackendError, match=r"action_head\.fp32\.engine: TensorRT execute_async_v3 failed"):
            backend.predict_chunk(features)


# ------------------------------------------------------------------ auto on a Jetson
def test_auto_on_a_jetson_without_a_gpu_backend_exits_with_the_error_and_the_fix(tiny_bundle_dir, episode_file,
                                                                                 tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    # the GPU stack missing, as on a Jetson before setup.sh, also where this test runs beside a real one
    missing = tmp_path / "missing"
    (missing / "pycuda").mkdir(parents=True)
    for name, module in (("tensorrt", missing / "tensorrt.py"), ("pycuda", missing / "pycuda" / "__init__.py")):
        module.write_text(f'raise ModuleNotFoundError("No module named {name} (hidden by the test)")\n')
    env = {"TEGRA_RELEASE": str(release), "PYTHONPATH": str(missing)}
    args = ["--bundle", str(tiny_bundle_dir), "--dry-run", "--camera", str(episode_file), "--max-steps", "1", "--quiet"]
    proc = run_drive(*args, env=env)
    assert proc.returncode == 1
    assert "this is a Jetson" in proc.stderr and "No module named" in proc.stderr  # the import error itself
    assert "bash jetson/setup.sh" in proc.stderr and "--backend ort-cpu" in proc.stderr  # the fixes
    by_name = run_drive(*args, "--backend", "ort-cpu", env=env)
    assert by_name.returncode == 0 and "driving with ort-cpu" in by_name.stderr


def test_auto_on_a_jetson_with_engines_and_a_cuda_device_picks_trt(engines, tmp_path, monkeypatch):
    from runtime.policy.backends.registry import resolve_backend_name

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0\n")
    monkeypatch.setenv("TEGRA_RELEASE", str(release))
    assert resolve_backend_name(load_bundle(engines), "auto") == "trt"


# ------------------------------------------------------------------ one GPU name, runtime side
def test_gpu_name_recorded_at_build_is_the_cuda_device_name_the_runtime_checks(engines):
    from runtime.policy.backends.cuda_device import cuda_device_name

    names = {e["gpu"] for e in load_bundle(engines).manifest["engines"]}
    assert names == {cuda_device_name()} == {fake_gpu.MACHINE.gpu}


def test_cuda_device_cli_without_pycuda_says_how_to_install_it():
    proc = run_python("-m", "runtime.policy.backends.cuda_device", timeout=60)
    if proc.returncode == 0:
        pytest.skip("pycuda and a GPU are present here")
    assert proc.returncode == 1 and "jetson/setup.sh" in proc.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="subprocess with the fake modules on PYTHONPATH")
def test_drive_process_with_trt_against_the_fake(engines, episode_file):
    """The whole CLI in its own process (fake GPU modules on PYTHONPATH), as the systemd unit runs it."""
    env = {"PYTHONPATH": fake_gpu.subprocess_pythonpath()}
    proc = run_drive("--bundle", str(engines), "--backend", "trt", "--dry-run", "--camera", str(episode_file),
                     "--max-steps", "3", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "driving with trt (fp16-engine)" in proc.stderr


@pytest.mark.parametrize("int32_ids", [False, True], ids=["trt10-int64", "trt8-int32"])
def test_native_backend_chains_buffers_and_matches_onnxruntime(bundle_copy, monkeypatch, int32_ids):
    from export.to_trt import build_all
    from runtime.cameras.sample_frames import sample_frames
    from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.policy.backends.registry import make_backend, resolve_backend_name
    from runtime.policy.onboard import Policy

    fake_gpu.install(monkeypatch, int32_ids=int32_ids)
    build_all(bundle_copy)
    bundle = load_bundle(bundle_copy)
    assert resolve_backend_name(bundle, "auto") == "trt"
    frames = sample_frames(10, seed=4, height=120, width=160)  # past W: the ring wraps
    with make_backend(bundle, "auto") as trt_backend, OnnxRuntimeBackend(bundle) as ort_backend:
        assert trt_backend.name == "trt"
        ours, ref = Policy(bundle, trt_backend), Policy(bundle, ort_backend)
        for f in frames:
            a, b = ours.infer(f), ref.infer(f)
            # the fake engines run the fp16-weights graphs the builder parsed, the reference the fp32 ones
            assert np.abs(a.chunk - b.chunk).max() < 1e-3
            assert set(a.timings) >= {"preprocess", "vision", "language", "head"}
        vision = trt_backend.engines["vision"]
        language = trt_backend.engines["language"]
        # vision's output buffer *is* language's input: no host round trip
        assert language.context._addresses["image_embeds"] == int(vision.buffers["image_embeds"])
        assert vision.context._executions == len(frames) and language.context._executions == len(frames)


@pytest.mark.parametrize("field, value, message", [
    ("tensorrt_version", "8.6.2", "built with TensorRT 8.6.2, this machine has 10.3.0"),
    ("gpu", "NVIDIA RTX A5000", "built for GPU 'NVIDIA RTX A5000'"),
])
def test_engine_for_another_tensorrt_or_gpu_is_refused(bundle_copy, monkeypatch, field, value, message):
    from export.to_trt import build_all
    from runtime.policy.backends.base import BackendError
    from runtime.policy.backends.tensorrt import TensorRTBackend

    fake_gpu.install(monkeypatch)
    manifest = build_all(bundle_copy)
    manifest["engines"][0][field] = value
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match=message + ".*build_engines.sh"):
        TensorRTBackend(load_bundle(bundle_copy)).activate()


def _has_gpu_tensorrt() -> bool:
    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return shutil.which("nvidia-smi") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu_tensorrt(), reason="needs an NVIDIA GPU with tensorrt and pycuda")
def test_real_tensorrt_engines_pass_fp16_parity(bundle_copy, tiny_checkpoint):
    from export.to_trt import build_all
    from export.verify import verify_bundle
    from train.checkpoint import load_checkpoint

    build_all(bundle_copy)
    model, tok, _ = load_checkpoint(tiny_checkpoint)
    assert verify_bundle(bundle_copy, model, tok, backend="trt")["fp16-engine"]["passed"]


def test_device_memory_is_asked_on_the_gpu_thread(engines):
    """pycuda's mem_get_info needs a current context: from the caller's thread it fails, as on the device;
    the backend asks on its own CUDA thread."""
    from runtime.policy.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(load_bundle(engines)) as backend:
        assert backend.device_memory_used_mb() == 2048.0  # the fake device: 8 GiB, 6 GiB free
        with pytest.raises(Exception, match="cuMemGetInfo"):
            backend._cuda.mem_get_info()  # this (main) thread has no context
