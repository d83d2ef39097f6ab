"""sim.drive: the robot's drive loop, serial driver and emulator, moving the simulated robot."""

from tests.conftest import run_python


def test_sim_drive_moves_the_simulated_robot_through_the_serial_driver(tiny_bundle_dir):
    proc = run_python("-m", "sim.drive", "--bundle", str(tiny_bundle_dir), "--seed", "2", "--width", "128",
                      "--height", "72", "--mode", "step", "--max-steps", "6",
                      "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sim: room seed 2" in proc.stderr and "motors at zero" in proc.stderr
    assert "stopped after 6 steps" in proc.stderr
    updates = int(proc.stderr.split(" updates: ")[0].rsplit("after ", 1)[1])
    assert updates > 0  # the emulator's velocity commands reached the simulated robot


def test_the_old_sim_flag_names_the_new_command(tiny_bundle_dir):
    proc = run_python("-m", "runtime.drive", "--bundle", str(tiny_bundle_dir), "--sim", "--sim-seed", "2")
    assert proc.returncode == 2 and "python -m sim.drive" in proc.stderr
