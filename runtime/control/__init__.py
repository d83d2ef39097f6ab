"""control/: what decides what reaches the motors, and the loop that asks it on every tick.

What lives here
    loop.py (`DriveLoop`: the control thread's ticks, who may drive, the reports), inference.py (the inference
    thread: frame -> plan, stamped with its capture time), plan_handoff.py (the newest plan between the two
    threads, step mode's one frame per move), plan_player.py (the plan played while armed: fresh, in its epoch,
    its step's move, --async chunks), motor_channel.py (the one path to the motors: through the gate and the
    authority's lock, the zero owed, the link watched), config.py (`DriveConfig`: mode, rates, timeouts),
    safety.py (`SafetyGate`: limits, acceleration, dead zone, base kind; `CommandWatchdog`), arming.py +
    arm_sources.py (arm, disarm, the latched e-stop and the devices that set them), link_watch.py (a motor link
    that stays down ends the run), loop_health.py (state, zero events, counters), status_line.py, steplog.py
    (the JSON-lines log), signals.py, ros2.py (the drive's ROS 2 services and /diagnostics), session.py
    (`DriveSpec`, the drive's options, `drive()`: one drive assembled).

What it may import
    policy/ (a policy is what it runs), recording/ (a take-over is recorded), runtime.hardware (the seams:
    `Camera`, `MotorController`, `SentCommand`), runtime.ros2, and from cameras/, motors/ and teleop/ only their
    openers (`select.py`): the loop sees devices only through the seams, so a new camera or motor needs no
    change here (tests/test_architecture.py checks it).

How to add one more
    A new reason to stop (say, a bumper): an input that asks `DriveLoop.request_reset` and zeroes through the
    same path as a camera stall, never a send of its own; prove it with a test like
    tests/runtime/control/test_loop_faults.py (random timing, slow inference) that fails without it.
    An arm or e-stop source: a class in arm_sources.py after `GpioSource` (its own thread, fail-safe when it
    cannot read), opened by `open_arm_sources`; copy tests/runtime/control/test_arming.py.
"""
