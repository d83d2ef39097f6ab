"""The simulated room: deterministic layouts, a camera that sees what is there, collisions, driving over the wire."""

import math

import numpy as np
import pytest

from sim.world import Box, Layout, SimRobot, SimWorld, random_layout, render


def open_room(bottle=(2.5, 1.0, 0.04)):
    return Layout((3.0, 2.0), (), bottle, (0.5, 1.0, 0.0), "left")


def green(image):
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return (g > 110) & (g > r + 50) & (g > b + 50)


def test_layouts_are_deterministic_and_varied():
    assert random_layout(5) == random_layout(5)
    assert random_layout(5) != random_layout(6)
    sides = {random_layout(s).side for s in range(20)}
    assert sides == {"left", "right"}
    assert all(1 <= len(random_layout(s).boxes) <= 2 for s in range(20))


def test_camera_sees_the_bottle_where_it_is():
    room = open_room()
    ahead = render(room, (0.5, 1.0, 0.0), 160, 90)
    cols = np.nonzero(green(ahead).any(axis=0))[0]
    assert cols.size and abs(cols.mean() - 80) < 6  # straight ahead: centre of the image
    turned = render(room, (0.5, 1.0, -0.4), 160, 90)  # robot yawed right: the bottle appears to the left
    cols_turned = np.nonzero(green(turned).any(axis=0))[0]
    assert cols_turned.size and cols_turned.mean() < cols.mean() - 20
    closer = render(room, (1.8, 1.0, 0.0), 160, 90)
    assert green(closer).sum() > 3 * green(ahead).sum()  # nearer looks bigger


def test_a_box_hides_the_bottle_behind_it():
    room = Layout((3.0, 2.0), (Box(1.5, 1.0, 0.2, 0.3, (0, 0, 200)),), (2.5, 1.0, 0.04), (0.5, 1.0, 0.0), "left")
    assert not green(render(room, room.start, 160, 90)).any()


def test_images_are_not_trivial_and_default_to_the_rig_resolution():
    img = render(random_layout(1), random_layout(1).start)
    assert img.shape == (720, 1280, 3) and img.dtype == np.uint8
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 1000


def test_collisions_stop_the_robot():
    room = open_room()
    robot = SimRobot(room)
    assert robot.step(0.5, 0.0, 0.0, 1.0) and not robot.collided
    assert robot.pose[0] == pytest.approx(1.0, abs=1e-6)
    assert not robot.step(0.0, 1.0, 0.0, 2.0)  # into the left wall
    assert robot.collided and robot.pose[1] <= 2.0 - 0.18 + 1e-9


def test_body_velocity_is_in_the_robot_frame():
    robot = SimRobot(open_room(), pose=(1.0, 1.0, math.pi / 2))
    robot.step(0.2, 0.0, 0.0, 1.0)  # facing +y: forward moves along +y
    assert robot.pose[:2] == pytest.approx((1.0, 1.2), abs=1e-6)


def test_drive_loop_moves_the_simulated_robot_through_the_serial_driver(tiny_bundle_dir, tmp_path):
    from runtime.control.config import DriveConfig
    from runtime.control.loop import DriveLoop
    from runtime.control.safety import SafetyConfig, SafetyGate
    from runtime.motors.serial_controller import SerialMotorController
    from runtime.policy.backends.onnxruntime import OnnxRuntimeBackend
    from runtime.policy.bundle import load_bundle
    from runtime.policy.onboard import Policy
    from sim.controller_emulator import ControllerEmulator

    emu = ControllerEmulator(link=tmp_path / "motor").start()
    world = SimWorld(open_room()).attach(emu)
    bundle = load_bundle(tiny_bundle_dir)
    try:
        with OnnxRuntimeBackend(bundle) as backend:
            motor = SerialMotorController(emu.port).connect()
            loop = DriveLoop(Policy(bundle, backend), world.camera(64, 36), motor,
                             SafetyGate(SafetyConfig(max_accel=(math.inf,) * 3)),
                             DriveConfig(mode="step", step_duration=0.1, rate=50, max_steps=5, status=False),
                             printer=lambda s: None)
            assert loop.run() == 0
            motor.disconnect()
    finally:
        emu.stop()
    moved = math.dist(world.robot.path[0][:2], world.robot.pose[:2])
    assert moved > 0.01 and len(world.robot.path) > 2
    assert emu.velocity == (0.0, 0.0, 0.0)


def test_a_saved_room_loads_back_exactly_and_bad_files_are_named(tmp_path):
    from sim.world import load_layout, save_layout

    layout = random_layout(11)
    save_layout(layout, tmp_path / "room.json")
    assert load_layout(tmp_path / "room.json") == layout
    (tmp_path / "bad.json").write_text('{"size": [3, 2]}')
    with pytest.raises(ValueError, match="bad.json: not a simulator layout"):
        load_layout(tmp_path / "bad.json")
