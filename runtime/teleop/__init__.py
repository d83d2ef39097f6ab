"""teleop/: the devices a person drives with, to record demonstrations or to take over.

What lives here
    keyboard.py (the terminal, one key one move), joystick.py (a
    gamepad through /dev/input/jsN; `GamepadMap`, `StickState`), ros2.py (`sensor_msgs/Joy` and Twist topics),
    select.py (`--teleop SOURCE`, `open_teleop`: built-in sources and a user's `package.module:Class`). Each is
    a `runtime.hardware.TeleopSource` (the seam: `poll(now)` -> move and episode-control events, `command(now)` ->
    the velocity in force and whether the person holds control).

What it may import
    numpy, runtime.hardware (errors, a user's class) and runtime.ros2 (the shared node, for ros2.py). Never
    policy/, control/, cameras/ or motors/ (tests/test_architecture.py checks it): a source says what the person
    asks; control/ decides whether it moves the robot.

How to add one more (say, a SpaceMouse)
    spacemouse.py: a `runtime.hardware.TeleopSource` subclass (`open(top_speed)`, `close`, `poll`, `command`;
    `held` True only while the person actively drives, so letting go hands control back and a lost device reads
    as let go); a branch in `select.make_teleop` and its name in `select.SOURCES`; copy
    tests/runtime/teleop/test_sources.py. Or, without touching this package, `--teleop mypackage.pad:MyPad`.
"""
