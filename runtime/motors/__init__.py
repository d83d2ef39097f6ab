"""motors/: from a body velocity to the wheels, and what really went out.

What lives here
    protocol.py (our framed, checksummed serial protocol: docs/serial-protocol.md), serial_link.py (the port:
    opened without resetting the board, reopened after an unplug), serial_controller.py (`SerialMotorController`:
    the conversation with the board: commands, replies and their counts, the watchdog), controller_check.py
    (`ControllerCheck`: what the board must be for this run, and its restarts, decided over what it said),
    kinematics.py (wheel speeds for boards that take them), dry_run.py (`--dry-run`), ros2.py (`/cmd_vel`),
    select.py (`MotorSpec`, `--serial`, `--motor`, `open_motor`: built-in kinds, entry points and a user's
    `package.module:Class`).

What it may import
    numpy, pyserial (lazily), runtime.hardware (the `MotorController` seam, `SentCommand`, errors, a user's
    class) and runtime.ros2 (the shared node, for ros2.py). Never policy/, control/, cameras/ or teleop/
    (tests/test_architecture.py checks it): speed limits and when to stop are control/'s decision.

How to add one more (say, a Dynamixel base)
    Without touching this package: write a `runtime.hardware.MotorController` subclass in your own package
    (`connect`, `disconnect`, `is_connected`, `send_velocity(vx, vy, wz) -> SentCommand` saying what really went
    out, `stop`) and run `python -m runtime.drive --motor mypackage.base:MyBase` (docs/motors.md); copy
    tests/runtime/motors/vendor_motor.py and tests/runtime/test_user_class.py. As a built-in kind: dynamixel.py
    with that class (vendor import inside it), one name in `select.BUILT_IN` and a branch in `open_motor`, and
    tests/runtime/motors/test_dynamixel.py after tests/runtime/motors/test_serial_controller.py (a
    pseudo-terminal or a fake bus as strict as the device).
"""
