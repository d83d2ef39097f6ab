"""The motion authority's state machine, and the arm and e-stop sources on real file descriptors: a pipe and a
pseudo-terminal for the keyboard, a FIFO carrying Linux joystick events for the gamepad, a file holding 0/1 for a
GPIO line. Issue 29's findings 1 and 3 each have a test here that failed on the switch before the authority."""

import os
import pty
import re
import time

import pytest

from runtime.control.arm_sources import JS_BUTTON, JS_EVENT, JS_INIT, GpioSource, JoystickSource, KeySource
from runtime.control.authority import (
    ARMED,
    DISARMED,
    ESTOP,
    FAULT,
    STATES,
    TRANSITIONS,
    MotionAuthority,
    PreArmCheck,
    transition_table_markdown,
)
from runtime.hardware import DeviceError
from tests.helpers.processes import ROOT


def set_line(path, value: str) -> None:
    """As sysfs changes a GPIO value: at once. A file rewritten in place reads empty for an instant, which the
    source rightly takes for a line it cannot read (an e-stop latched by the test's own write)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    os.replace(tmp, path)


def seen(source, reads: int = 2) -> None:
    """Until the source's thread has polled the line `reads` more times (a loaded machine delays the thread)."""
    start = source.reads
    wait_for(lambda: source.reads >= start + reads)


def wait_for(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_an_estop_latches_until_an_explicit_reset_then_an_arm():
    authority = MotionAuthority()
    assert authority.state == DISARMED and not authority.armed
    assert authority.arm("test") == "" and authority.armed
    authority.estop("button")
    assert authority.state == ESTOP and authority.describe() == "e-stop (button)"
    authority.disarm("x")  # a disarm does not clear the latch
    assert authority.state == ESTOP
    assert "reset the e-stop first" in authority.arm("operator") and authority.state == ESTOP  # finding 1
    assert authority.reset_estop("operator") == "" and authority.state == DISARMED  # to disarmed, never armed
    assert authority.arm("operator") == "" and authority.armed


def test_arming_runs_the_pre_arm_checks_and_says_which_failed():
    camera = {"age": 2.0}
    authority = MotionAuthority(checks=[PreArmCheck("camera", lambda: "" if camera["age"] < 0.5 else
                                                    f"newest frame {camera['age']} s old"),
                                        PreArmCheck("policy", lambda: "")])
    estop = authority.add_input("gpio estop /x", "estop", max_age=10.0)
    authority.report(estop, pressed=True)
    assert authority.state == ESTOP
    refusal = authority.reset_estop("key 'r'")
    assert refusal == "gpio estop /x pressed" and authority.state == ESTOP  # still pressed: no reset
    authority.report(estop, pressed=False)
    assert authority.reset_estop("key 'r'") == "" and authority.state == DISARMED
    assert authority.arm("key 'a'") == "camera: newest frame 2.0 s old" and authority.state == DISARMED
    camera["age"] = 0.1
    assert authority.arm("key 'a'") == "" and authority.state == ARMED


def test_an_input_that_goes_silent_or_is_lost_fails_safe():
    now = [0.0]
    authority = MotionAuthority(armed=True, clock=lambda: now[0])
    estop = authority.add_input("ROS topic /vla/estop", "estop", max_age=0.5)
    pad = authority.add_input("gamepad /dev/input/js0", "arm", max_age=0.5)
    def ticks(until, report_estop):  # the control loop checks every 50 ms
        while now[0] < until - 1e-9:
            now[0] = round(now[0] + 0.05, 3)
            if report_estop:
                authority.report(estop, pressed=False)
            authority.check_inputs()

    authority.report(estop, pressed=False)
    authority.report(pad)
    ticks(0.4, True)
    assert authority.armed
    ticks(1.0, True)  # the gamepad stopped reporting; the e-stop goes on
    assert authority.state == DISARMED and "gamepad /dev/input/js0 silent" in authority.cause  # arm source: disarm
    ticks(2.0, False)  # now the e-stop's topic too
    assert authority.state == ESTOP and "ROS topic /vla/estop silent" in authority.cause  # e-stop source: latch
    assert "silent" in authority.reset_estop("key 'r'")  # a silent e-stop input cannot be reset
    authority.report(estop, pressed=False)
    assert authority.reset_estop("key 'r'") == ""


def test_epochs_fence_plans_by_their_frames_capture_time():
    now = [10.0]
    authority = MotionAuthority(armed=True, clock=lambda: now[0])
    captured = 10.0
    assert authority.epoch_at(captured) == authority.epoch
    now[0] = 10.5
    authority.fence("camera stall")
    assert authority.epoch_at(captured) == authority.epoch - 1  # a frame from before the stall: not current
    assert authority.epoch_at(10.6) == authority.epoch
    with authority.motion(authority.epoch_at(captured)) as allowed:
        assert not allowed
    with authority.motion(authority.epoch) as allowed:
        assert allowed
    authority.disarm("d")
    with authority.motion(authority.epoch) as allowed:
        assert not allowed
    with authority.motion(None, person=True) as allowed:
        assert not allowed  # finding 2: a person's take-over does not move a disarmed robot


def test_a_fault_holds_an_armed_robot_until_it_clears_with_a_new_epoch():
    authority = MotionAuthority(armed=True)
    start = authority.epoch
    authority.fault("motor link down")
    assert authority.state == FAULT and authority.describe() == "fault: motor link down"
    assert authority.arm("key") == "" and authority.state == FAULT  # held, not re-armed past it
    authority.clear_fault("motor link down")
    assert authority.state == ARMED and authority.epoch == start + 2
    authority.fault("motor link down")
    authority.controller_restarted("READY")
    assert authority.state == DISARMED  # a board that restarted is never driven again without an arm
    assert "fault: motor link down" in authority.arm("key")  # nor armed while the link is still down


def test_the_documented_table_is_the_codes():
    """docs/reliability.md shows the states x events table; it must be the one the code runs."""
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert transition_table_markdown() in doc
    assert set(STATES) == {DISARMED, ARMED, ESTOP, FAULT}
    assert all(set(row) == set(STATES) for row in TRANSITIONS.values())


def test_the_table_is_what_the_authority_does():
    """Every cell of TRANSITIONS, exercised: the authority put in each state, then given each event."""
    def in_state(state):
        authority = MotionAuthority(armed=state in (ARMED, FAULT))
        if state == ESTOP:
            authority.estop("setup")
        if state == FAULT:
            authority.fault("setup")
        return authority

    do = {"arm": lambda a: a.arm("t"), "disarm": lambda a: a.disarm("t"), "estop": lambda a: a.estop("t"),
          "reset_estop": lambda a: a.reset_estop("t"), "controller restarted": lambda a: a.controller_restarted("t"),
          "fault": lambda a: a.fault("t"), "fault cleared": lambda a: a.clear_fault("setup"),
          "fence": lambda a: a.fence("t"), "take over / hand back": lambda a: a.take_over(True, "t")}
    for event, row in TRANSITIONS.items():
        for state, after in row.items():
            authority = in_state(state)
            if event == "arm source lost":
                inp = authority.add_input("pad", "arm")
                authority.report(inp, healthy=False, detail="unplugged")
            else:
                do[event](authority)
            expected = state if after in ("same", "refused") else after
            assert authority.state == expected, (event, state, authority.state)


# -- the sources --------------------------------------------------------------------------------------------
def test_keys_arm_estop_reset_and_disarm():
    r, w = os.pipe()
    authority = MotionAuthority(armed=False)
    source = KeySource(authority, fd=r, arm_key="a", estop_key=" ").start()
    try:
        os.write(w, b"x")
        time.sleep(0.1)
        assert authority.state == DISARMED
        os.write(w, b"a")
        wait_for(lambda: authority.armed)
        os.write(w, b" ")
        wait_for(lambda: authority.state == ESTOP and authority.cause == "key ' '")
        os.write(w, b"a")  # refused: latched
        time.sleep(0.1)
        assert authority.state == ESTOP
        os.write(w, b"ra")
        wait_for(lambda: authority.armed)
        os.write(w, b"d")
        wait_for(lambda: authority.state == DISARMED)
    finally:
        source.close()
        os.close(w)
        os.close(r)


def test_losing_the_terminal_disarms_without_a_traceback(caplog):
    """Finding 3: closing the SSH terminal left a termios.error traceback; now it disarms, and close() is quiet."""
    leader, follower = pty.openpty()
    authority = MotionAuthority(armed=True)
    source = KeySource(authority, fd=follower).start()
    os.close(leader)  # the SSH session went away: the follower reads EIO
    wait_for(lambda: authority.state == DISARMED)
    assert "terminal" in authority.cause and "closed" in authority.cause
    os.close(follower)
    source.close()  # restoring a dead terminal's modes must not raise
    assert "Traceback" not in caplog.text


def js(t, value, kind, number):
    return JS_EVENT.pack(t, value, kind, number)


def test_gamepad_buttons_on_the_joystick_device(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    authority = MotionAuthority(armed=False)
    source = JoystickSource(authority, str(fifo), arm_button=7, estop_button=1, reset_button=6).start()
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, js(0, 1, JS_BUTTON | JS_INIT, 7))  # the initial state burst never arms
        os.write(w, js(1, 1, 0x02, 7))  # an axis numbered 7 neither
        time.sleep(0.15)
        assert authority.state == DISARMED
        os.write(w, js(2, 1, JS_BUTTON, 7))
        wait_for(lambda: authority.armed)
        os.write(w, js(3, 0, JS_BUTTON, 7) + js(4, 1, JS_BUTTON, 1))
        wait_for(lambda: authority.state == ESTOP and authority.cause == f"gamepad {fifo} pressed")
        os.write(w, js(5, 1, JS_BUTTON, 6))  # reset while the e-stop button is still held: refused
        time.sleep(0.1)
        assert authority.state == ESTOP
        os.write(w, js(6, 0, JS_BUTTON, 1) + js(7, 1, JS_BUTTON, 6))
        wait_for(lambda: authority.state == DISARMED)
    finally:
        os.close(w)
        source.close()


def test_an_unplugged_estop_gamepad_latches_and_an_arm_only_one_disarms(tmp_path):
    """Finding 3: a gamepad unplugged while armed kept the robot driving (79 commands in 4 s), without a word.
    A FIFO whose writer closes reads end-of-file, as an unplugged device's read fails: both are a lost source."""
    for estop_button, expected in ((1, ESTOP), (None, DISARMED)):
        fifo = tmp_path / f"js{estop_button}"
        os.mkfifo(fifo)
        authority = MotionAuthority(armed=True)
        source = JoystickSource(authority, str(fifo), arm_button=7, estop_button=estop_button).start()
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, js(0, 0, JS_BUTTON | JS_INIT, 7))
        time.sleep(0.1)
        assert authority.armed
        os.close(w)  # unplugged
        wait_for(lambda: authority.state == expected)  # noqa: B023  (waited for inside the loop)
        assert "lost" in authority.cause and str(fifo) in authority.cause
        source.close()


def test_a_gamepad_whose_thread_goes_quiet_is_stale(tmp_path):
    """Liveness: the control loop latches the e-stop when a source stops reporting (a stuck thread), even though
    nothing was read that said so."""
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    now = [0.0]
    authority = MotionAuthority(armed=True, clock=lambda: now[0])
    source = JoystickSource(authority, str(fifo), estop_button=1, timeout=0.5)  # never started: no reports
    authority.report(source.input, pressed=False)  # one report, then its thread is stuck
    for k in range(1, 9):
        now[0] = 0.05 * k
        authority.check_inputs()
    assert authority.armed
    for k in range(9, 13):
        now[0] = 0.05 * k
        authority.check_inputs()
    assert authority.state == ESTOP and re.search(r"gamepad .* silent for 0\.55 s", authority.cause)
    source.close()


def test_missing_gamepad_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match=r"--gamepad .*js9: cannot open it .*input group"):
        JoystickSource(MotionAuthority(), str(tmp_path / "js9"), arm_button=0)


def test_gpio_estop_defaults_to_a_normally_closed_loop_and_an_unreadable_line_latches(tmp_path):
    """Finding 3: the GPIO e-stop was active-high, so a cut wire (reading 0) was 'not pressed', and an unreadable
    line killed its thread and left the robot armed. Default now: pressed when low (a normally-closed loop)."""
    arm_line, stop_line = tmp_path / "arm", tmp_path / "stop"
    set_line(arm_line, "1")  # already high at start: no edge, no arm
    set_line(stop_line, "1")  # the loop closed: released
    authority = MotionAuthority(armed=False)
    sources = [GpioSource(authority, str(arm_line), "arm", period=0.01).start(),
               GpioSource(authority, str(stop_line), "estop", period=0.01).start()]
    try:
        seen(sources[0], 5)
        assert authority.state == DISARMED
        set_line(arm_line, "0")
        seen(sources[0])
        set_line(arm_line, "1")
        wait_for(lambda: authority.armed)
        set_line(stop_line, "0")  # pressed, or the wire cut
        wait_for(lambda: authority.state == ESTOP)
        assert authority.cause == f"gpio estop {stop_line} pressed"
        assert "reset the e-stop first" in authority.arm("operator")  # finding 1: no arm past a latch
        assert "pressed" in authority.reset_estop("operator")  # nor a reset while it is still pressed
        set_line(stop_line, "1")
        seen(sources[1])
        assert authority.reset_estop("operator") == "" and authority.arm("operator") == ""
        stop_line.unlink()  # the line cannot be read any more
        wait_for(lambda: authority.state == ESTOP)
        assert "lost" in authority.cause and "No such file" in authority.cause
    finally:
        for s in sources:
            s.close()


def test_a_normally_open_estop_button_is_pressed_high(tmp_path):
    line = tmp_path / "stop"
    set_line(line, "0")
    authority = MotionAuthority(armed=True)
    source = GpioSource(authority, str(line), "estop", pressed_level="high", period=0.01).start()
    try:
        seen(source)
        assert authority.armed
        set_line(line, "1")
        wait_for(lambda: authority.state == ESTOP)
    finally:
        source.close()


def test_an_estop_held_at_start_latches_before_anything_moves(tmp_path):
    line = tmp_path / "stop"
    set_line(line, "0")  # pressed at start (normally-closed loop open)
    authority = MotionAuthority(armed=False, auto_arm=True, checks=[PreArmCheck("policy", lambda: "")])
    source = GpioSource(authority, str(line), "estop", period=0.01).start()
    try:
        authority.check_inputs()
        assert authority.state == ESTOP
        assert authority.reset_estop("key") != ""  # still pressed
        set_line(line, "1")
        wait_for(lambda: authority.reset_estop("key") == "")
        authority.check_inputs()
        assert authority.state == DISARMED  # the start-up's own arm never comes after an e-stop: a person arms
    finally:
        source.close()


# -- the review's findings ---------------------------------------------------------------------------------------
def test_no_arm_is_judged_before_the_drive_has_its_checks():
    """The sources and the ROS services open before the drive's loop (and its pre-arm checks) exist: an arm in
    that window is refused, and judged by the checks once the loop runs."""
    authority = MotionAuthority(armed=False, starting=True)
    assert "the drive is starting" in authority.arm("ROS service ~/arm") and authority.state == DISARMED
    authority.checks.append(PreArmCheck("camera", lambda: "no frame yet"))
    authority.started()
    assert authority.arm("ROS service ~/arm") == "camera: no frame yet"


def test_an_input_that_has_not_reported_refuses_the_arm_but_latches_nothing_while_disarmed():
    now = [0.0]
    authority = MotionAuthority(armed=False, auto_arm=True, clock=lambda: now[0])
    heartbeat = authority.add_input("ROS topic /vla/estop", "estop", max_age=0.5)
    now[0] = 3.0  # the publisher starts late
    for k in range(10):
        now[0] = 3.0 + 0.05 * k
        authority.check_inputs()
    assert authority.state == DISARMED and authority.auto_arm  # waiting, not latched: no person needed
    assert "has not reported yet" in authority.arm("key")
    authority.report(heartbeat, pressed=False)
    authority.check_inputs()
    assert authority.armed  # the start-up's own arm, once it reported
    armed = MotionAuthority(armed=True, clock=lambda: now[0])  # armed already: a silent newcomer does latch
    armed.add_input("ROS topic /vla/estop", "estop", max_age=0.5)
    now[0] += 0.6
    armed.check_inputs()
    assert armed.state == ESTOP and "has not reported yet" in armed.cause


def test_a_held_up_control_thread_does_not_call_its_inputs_stale():
    """A process-wide stall (swap on an 8 GB board) holds the sources and the checker alike: no e-stop for that;
    a source still silent once the grace is over is stale."""
    now = [0.0]
    authority = MotionAuthority(armed=True, clock=lambda: now[0])
    line = authority.add_input("gpio estop /x", "estop", max_age=0.25)
    authority.report(line, pressed=False)
    authority.check_inputs()
    now[0] = 0.8  # the whole process stood still for 0.8 s
    authority.check_inputs()
    assert authority.armed
    authority.report(line, pressed=False)  # the source caught up
    for k in range(1, 10):
        now[0] = 0.8 + 0.05 * k
        authority.check_inputs()
        authority.report(line, pressed=False)
    assert authority.armed
    for k in range(1, 20):  # now the source alone is silent
        now[0] = 1.25 + 0.05 * k
        authority.check_inputs()
    assert authority.state == ESTOP and "silent" in authority.cause


def test_a_gamepad_that_comes_back_is_read_again(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    authority = MotionAuthority(armed=True)
    source = JoystickSource(authority, str(fifo), estop_button=1, reset_button=6).start()
    try:
        w = os.open(fifo, os.O_WRONLY)
        os.write(w, js(0, 0, JS_BUTTON | JS_INIT, 1))
        os.close(w)  # unplugged
        wait_for(lambda: authority.state == ESTOP)
        w = os.open(fifo, os.O_WRONLY)  # back (the source reopens the device every 0.5 s)
        deadline = time.monotonic() + 3
        while authority.reset_estop("key") and time.monotonic() < deadline:
            os.write(w, js(1, 0, JS_BUTTON, 1))  # released, read again
            time.sleep(0.05)
        assert authority.state == DISARMED
        os.close(w)
    finally:
        source.close()


def test_a_gpio_arm_line_that_comes_back_high_does_not_arm(tmp_path):
    line = tmp_path / "arm"
    set_line(line, "0")
    authority = MotionAuthority(armed=False)
    source = GpioSource(authority, str(line), "arm", period=0.01).start()
    try:
        line.unlink()  # unreadable...
        seen(source, 5)
        set_line(line, "1")  # ...and back, high: no edge was seen
        seen(source, 5)
        assert authority.state == DISARMED
    finally:
        source.close()


@pytest.mark.parametrize("args, flag", [({"arm_button": 7}, "--arm-button"), ({"estop_button": 1}, "--estop-button"),
                                        ({"ros_estop_period": 0.5}, "--ros-estop-period")])
def test_an_input_that_would_silently_not_exist_is_refused(args, flag):
    from runtime.control.arming import ArmSpec
    from runtime.control.session import check_arm_spec

    with pytest.raises(ValueError, match=flag):
        check_arm_spec(ArmSpec(**args), ros=False)
    check_arm_spec(ArmSpec(gamepad="/dev/input/js0", **{k: v for k, v in args.items() if k != "ros_estop_period"}),
                   ros=True)  # with its device, fine


def test_a_keyboard_take_over_has_the_terminal_to_itself_and_a_disarmed_start_needs_another_way_to_arm():
    """Review finding (issue 30): the drive's terminal keys and the keyboard take-over read the one terminal, and the
    arm keys took the person's keys (a: left armed, d: right disarmed, space: stop latched the e-stop)."""
    from runtime.control.arm_sources import open_arm_sources
    from runtime.control.arming import ArmSpec
    from runtime.control.session import arm_spec_beside_takeover
    from runtime.recording.takeover import TakeoverSpec
    from runtime.teleop.keyboard import KeyboardTeleop

    keyboard_takeover = TakeoverSpec("keyboard", "continuous")
    with pytest.raises(ValueError, match="--start-disarmed with --teleop keyboard.*--arm-gpio"):
        arm_spec_beside_takeover(ArmSpec(start_disarmed=True), keyboard_takeover, ros=False)
    assert arm_spec_beside_takeover(ArmSpec(start_disarmed=True, arm_gpio="/sys/x"), keyboard_takeover, False)
    assert arm_spec_beside_takeover(ArmSpec(), TakeoverSpec("joystick:/dev/input/js0", "continuous"), False) \
        == ArmSpec()  # another device leaves the terminal's keys on
    arm = arm_spec_beside_takeover(ArmSpec(), keyboard_takeover, ros=False)
    master, slave = pty.openpty()
    authority = MotionAuthority(armed=True)
    sources = open_arm_sources(arm, authority, stdin_fd=slave)
    keyboard = KeyboardTeleop(os.ttyname(slave)).open((0.5, 0.4, 1.0))
    try:
        assert not any(isinstance(s, KeySource) for s in sources)
        os.write(master, b"wwad  ")
        time.sleep(0.1)
        moves = [e for e in keyboard.poll(time.monotonic()) if e.kind == "move"]
        assert len(moves) == 6 and authority.armed and authority.state != ESTOP
    finally:
        keyboard.close()
        for source in sources:
            source.close()
        os.close(master)
        os.close(slave)
