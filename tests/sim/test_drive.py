"""sim.drive: the robot's drive loop, serial driver and emulator, moving the simulated robot."""

from tests.helpers.processes import run_drive


def test_sim_drive_moves_the_simulated_robot_through_the_serial_driver(tiny_bundle_dir):
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--seed", "2", "--width", "128", "--height", "72", "--mode",
                     "step", "--max-steps", "6", "--quiet", module="sim.drive")
    assert proc.returncode == 0, proc.stderr
    assert "sim: room seed 2" in proc.stderr and "motors at zero" in proc.stderr
    assert "stopped after 6 steps" in proc.stderr
    updates = int(proc.stderr.split(" updates: ")[0].rsplit("after ", 1)[1])
    assert updates > 0  # the emulator's velocity commands reached the simulated robot


def test_the_old_sim_flag_names_the_new_command(tiny_bundle_dir):
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--sim", "--sim-seed", "2")
    assert proc.returncode == 2 and "python -m sim.drive" in proc.stderr


def test_direct_drives_the_simulated_motor_without_a_wire(tiny_bundle_dir, tmp_path):
    from runtime.control.steplog import read_log

    log = tmp_path / "drive.jsonl"
    proc = run_drive("--bundle", str(tiny_bundle_dir), "--seed", "2", "--width", "128", "--height", "72", "--mode",
                     "step", "--max-steps", "4", "--direct", "--quiet", "--log", str(log), module="sim.drive")
    assert proc.returncode == 0, proc.stderr
    assert "motor sim" in proc.stderr and "motors at zero" in proc.stderr
    steps = [r for r in read_log(log) if r["type"] == "step"]
    assert steps and all(r["sent"] and r["acknowledged"] for r in steps)  # the world applied every command


def test_the_simulated_devices_are_the_hardware_seams():
    from runtime.hardware import Camera, MotorController
    from sim.world import SimMotor, SimWorld, random_layout

    world = SimWorld(random_layout(0))
    motor = SimMotor(world)
    assert isinstance(world.camera(64, 36), Camera) and isinstance(motor, MotorController)
    assert not motor.send_velocity(0.2, 0.0, 0.0).sent  # not connected yet
    with motor:
        assert motor.send_velocity(0.2, 0.0, 0.0).velocity == (0.2, 0.0, 0.0)
        assert world.velocity == (0.2, 0.0, 0.0)
    assert world.velocity == (0.0, 0.0, 0.0) and not motor.is_connected  # disconnect zeroed it
