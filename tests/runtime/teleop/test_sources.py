"""Teleop sources on real devices of the operating system: a pseudo-terminal for the keyboard, a FIFO carrying
the kernel's js_event records for the gamepad, an importable class for a user's own device."""

import os
import termios
import time

import numpy as np
import pytest

from runtime.hardware import TeleopCommand, TeleopError
from runtime.teleop.joystick import JS_EVENT, JS_EVENT_AXIS, JS_EVENT_BUTTON, JS_EVENT_INIT, GamepadMap, JoystickTeleop
from runtime.teleop.keyboard import KeyboardTeleop
from runtime.teleop.select import make_teleop, open_teleop

TOP = (0.5, 0.4, 1.0)


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def js(value: int, kind: int, number: int, ms: int = 0) -> bytes:
    return JS_EVENT.pack(ms, value, kind, number)


def test_js_event_layout_is_the_kernels():
    # linux/joystick.h: struct js_event { __u32 time; __s16 value; __u8 type; __u8 number; } = 8 bytes, little endian
    assert JS_EVENT.size == 8
    assert js(-2, JS_EVENT_AXIS, 3, ms=0x01020304) == bytes([4, 3, 2, 1, 0xFE, 0xFF, 2, 3])
    assert (JS_EVENT_BUTTON, JS_EVENT_AXIS, JS_EVENT_INIT) == (0x01, 0x02, 0x80)


def test_keyboard_on_a_pty_one_key_one_move_controls_and_the_terminal_restored(pty_pair):
    master, tty = pty_pair
    fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY)
    before = termios.tcgetattr(fd)
    os.close(fd)
    keyboard = KeyboardTeleop(tty).open(TOP)
    mode = termios.tcgetattr(keyboard.fd)
    assert not mode[3] & termios.ICANON and not mode[3] & termios.ECHO and mode[3] & termios.ISIG  # Ctrl-C stays
    assert keyboard.poll(time.monotonic()) == []
    os.write(master, b"wad\x1b[Aqn m u\x1b")  # an arrow key (ESC [ A) in the middle is skipped, a lone Esc quits
    time.sleep(0.05)
    now = time.monotonic()
    events = keyboard.poll(now)
    assert [(e.kind, e.velocity) for e in events] == [
        ("move", (0.5, 0.0, 0.0)), ("move", (0.0, 0.4, 0.0)), ("move", (0.0, -0.4, 0.0)),
        ("move", (0.5, 0.4, 0.0)), ("start", (0.0, 0.0, 0.0)), ("move", (0.0, 0.0, 0.0)),
        ("end", (0.0, 0.0, 0.0)), ("move", (0.0, 0.0, 0.0)), ("discard", (0.0, 0.0, 0.0)), ("quit", (0.0, 0.0, 0.0))]
    os.write(master, b"r")
    time.sleep(0.05)
    keyboard.poll(now)
    assert keyboard.command(now).velocity == (0.0, 0.0, 1.0) and keyboard.command(now).held
    # the key's move is over once the terminal's first auto-repeat would have come (no repeat came: a tap)
    assert keyboard.command(now + keyboard.repeat_delay_s + 0.01).velocity == (0.0, 0.0, 0.0)
    keyboard.close()
    fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY)
    assert termios.tcgetattr(fd) == before  # the person gets their terminal back
    os.close(fd)


def test_keyboard_without_a_terminal_says_what_to_do(tmp_path):
    plain = tmp_path / "not-a-tty"
    plain.write_text("")
    with pytest.raises(TeleopError, match="not a terminal"):
        KeyboardTeleop(str(plain)).open(TOP)
    with pytest.raises(TeleopError, match="ssh -t"):
        KeyboardTeleop(str(tmp_path / "missing")).open(TOP)


def test_joystick_fifo_sticks_scaled_to_the_top_speed_only_with_the_dead_man(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    pad = JoystickTeleop(str(fifo)).open(TOP)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        m = GamepadMap()
        # the initial state as the kernel sends it on open (INIT flag): no control events from it
        os.write(writer, js(0, JS_EVENT_BUTTON | JS_EVENT_INIT, 0) + js(0, JS_EVENT_AXIS | JS_EVENT_INIT, 1))
        os.write(writer, js(-32767, JS_EVENT_AXIS, m.axes[0]))  # stick fully up, dead-man not held
        time.sleep(0.02)
        now = time.monotonic()
        assert pad.poll(now) == [] and pad.command(now).velocity == (0.0, 0.0, 0.0)
        os.write(writer, js(1, JS_EVENT_BUTTON, m.deadman) + js(16384, JS_EVENT_AXIS, m.axes[1])[:5])  # half a record
        time.sleep(0.02)
        events = pad.poll(now)
        assert [e.kind for e in events] == ["move"]
        assert events[0].velocity == (0.5, 0.0, 0.0)
        os.write(writer, js(16384, JS_EVENT_AXIS, m.axes[1])[5:] + js(1, JS_EVENT_BUTTON, 1))  # the rest; B = end
        time.sleep(0.02)
        events = pad.poll(now)
        assert [e.kind for e in events] == ["end", "move"]
        vy = -16384 / 32767 * 0.4  # stick right (positive) is the robot's right (negative y)
        assert events[1].velocity[0] == 0.5 and events[1].velocity[1] == pytest.approx(vy, rel=1e-6)
        assert pad.command(now).held
        os.write(writer, js(200, JS_EVENT_AXIS, m.axes[2]))  # inside the stick's dead zone
        time.sleep(0.02)
        assert [e.velocity[2] for e in pad.poll(now)] == [0.0]  # still held: a move, without a turn
        os.write(writer, js(0, JS_EVENT_BUTTON, m.deadman))  # dead-man released: everything stops
        time.sleep(0.02)
        assert pad.poll(now) == [] and pad.command(now).velocity == (0.0, 0.0, 0.0) and not pad.command(now).held
    finally:
        os.close(writer)
        pad.close()


def test_sources_by_name_and_a_users_class(tmp_path, monkeypatch):
    (tmp_path / "mypad.py").write_text(
        "from runtime.hardware import TeleopSource, TeleopCommand\n"
        "class Pad(TeleopSource):\n"
        "    def poll(self, now): return []\n"
        "    def command(self, now): return TeleopCommand(self.scale((1, 0, 0)), True)\n"
        "class NotOne: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pad = open_teleop("mypad:Pad", TOP)
    assert pad.command(0.0).velocity == (0.5, 0.0, 0.0)
    with pytest.raises(TeleopError, match="not a subclass of runtime.hardware.TeleopSource"):
        make_teleop("mypad:NotOne")
    with pytest.raises(TeleopError, match="cannot import nosuchmodule"):
        make_teleop("nosuchmodule:Pad")
    with pytest.raises(TeleopError, match="joystick:/dev/input/js0"):
        make_teleop("joystick")
    with pytest.raises(TeleopError, match="expected one of keyboard"):
        make_teleop("gamepad")
    with pytest.raises(TeleopError, match="is the gamepad connected"):
        open_teleop(f"joystick:{tmp_path / 'js9'}", TOP)


# The terminals' auto-repeat defaults: (first repeat after, s; repeats per second). X.Org's server default (`xset q`:
# "auto repeat delay: 660, repeat rate: 25"; measured in an xterm on Xvfb: 655 ms, then 24.7/s, docs/recording.md),
# KDE Plasma's (600 ms, 25/s), GNOME's (org.gnome.desktop.peripherals.keyboard delay 500 ms, repeat-interval 30 ms),
# Windows' (keyboard delay 1 = ~500 ms, speed 31 = ~30/s) and the Linux console's (kbd's default 250 ms, 10.9/s):
# the longest first delay is X.Org's.
AUTO_REPEAT = {"xorg": (0.660, 25.0), "kde": (0.600, 25.0), "gnome": (0.500, 1 / 0.030), "windows": (0.500, 30.0),
               "console": (0.250, 10.9)}


@pytest.mark.parametrize("terminal", sorted(AUTO_REPEAT))
def test_a_held_key_holds_its_move_across_the_terminals_auto_repeat(pty_pair, terminal):
    master, tty = pty_pair
    delay, rate = AUTO_REPEAT[terminal]
    keyboard = KeyboardTeleop(tty).open(TOP)
    try:
        # a key held 2 s, on a simulated clock: the press, the first repeat after the delay, then `rate` a second
        presses = [0.0] + list(np.arange(delay, 2.0, 1 / rate))
        gaps, t, i = [], 0.0, 0
        while t < 2.5:
            while i < len(presses) and presses[i] <= t:
                os.write(master, b"w")
                i += 1
            time.sleep(0.001)  # the pty hands the byte over
            keyboard.poll(t)
            cmd = keyboard.command(t)
            if t <= presses[-1]:
                gaps.append((t, cmd.held and cmd.velocity == (0.5, 0.0, 0.0)))
            elif t > presses[-1] + keyboard.repeat_gap_s + 0.01:
                assert not cmd.held and cmd.velocity == (0.0, 0.0, 0.0), t  # let go: stopped within repeat_gap_s
            t = round(t + 0.01, 3)
        assert all(ok for _, ok in gaps), [t for t, ok in gaps if not ok][:5]  # no zero while the key is held
    finally:
        keyboard.close()


def test_a_closed_terminal_reads_as_let_go():
    master, slave = os.openpty()
    keyboard = KeyboardTeleop(os.ttyname(slave)).open(TOP)
    try:
        os.write(master, b"w")
        time.sleep(0.02)
        keyboard.poll(1.0)
        assert keyboard.command(1.0).held
        os.close(master)  # the SSH session drops: the terminal's reads fail (EIO)
        keyboard.poll(1.1)
        assert not keyboard.command(1.1).held and keyboard.problem(1.1) == "keyboard lost: the terminal closed"
    finally:
        keyboard.close()
        os.close(slave)


def test_joystick_fifo_end_of_file_is_a_lost_pad_until_it_comes_back(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    pad = JoystickTeleop(str(fifo), reopen_s=0.05).open(TOP)
    m = GamepadMap()
    try:
        assert pad.poll(0.0) == [] and not pad.lost  # no writer yet: a FIFO waiting, not a lost pad
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, js(1, JS_EVENT_BUTTON, m.deadman) + js(-32767, JS_EVENT_AXIS, m.axes[0]))
        time.sleep(0.02)
        assert [e.kind for e in pad.poll(0.1)] == ["move"] and pad.command(0.1).velocity == (0.5, 0.0, 0.0)
        os.close(writer)  # the writer goes (a FIFO's end of file): the stick state must not persist
        time.sleep(0.02)
        assert pad.poll(0.2) == [] and pad.command(0.2) == TeleopCommand((0.0, 0.0, 0.0), False)
        assert pad.problem(0.2) == "gamepad lost: end of file: the device closed"
        writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer again (the pad plugged back)
        os.write(writer, js(1, JS_EVENT_BUTTON, m.deadman) + js(16000, JS_EVENT_AXIS, m.axes[1]))
        for t in (0.3, 0.4):  # reopened after reopen_s, then its records read
            pad.poll(t)
            time.sleep(0.02)
        assert pad.problem(0.4) == "" and pad.command(0.4).held and pad.command(0.4).velocity[1] < 0
        os.close(writer)
    finally:
        pad.close()


def test_a_silent_joystick_goes_stale_while_driving(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    pad = JoystickTeleop(str(fifo)).open(TOP)
    writer = os.open(fifo, os.O_WRONLY)
    m = GamepadMap()
    try:
        os.write(writer, js(1, JS_EVENT_BUTTON, m.deadman) + js(-32767, JS_EVENT_AXIS, m.axes[0]))
        time.sleep(0.02)
        pad.poll(10.0)
        assert pad.command(10.0 + m.stale_s - 0.01).held  # silent, but not for long
        stale = 10.0 + m.stale_s + 0.01
        assert pad.poll(stale) == [] and pad.command(stale) == TeleopCommand((0.0, 0.0, 0.0), False)
        assert pad.problem(stale).startswith("gamepad silent for 1.0 s")  # out of range: stopped, and said so
        os.write(writer, js(-32000, JS_EVENT_AXIS, m.axes[0]))  # a nudge: it drives again
        time.sleep(0.02)
        assert [e.kind for e in pad.poll(stale + 0.1)] == ["move"] and pad.command(stale + 0.1).held
    finally:
        os.close(writer)
        pad.close()


def test_ros2_joy_layouts_are_presets_or_a_file(tmp_path):
    from runtime.teleop.joystick import GAME_CONTROLLER_NODE, JOY_NODE, StickState, gamepad_map

    # game_controller_node (ros-drivers/joystick_drivers joy/README.md): LEFTY axis 1 and LEFTX 0 read +1 up/left,
    # RIGHTX 2; LEFTSHOULDER is button 9, A/B/X/START 0/1/2/6
    state = StickState(gamepad_map("game_controller_node", JOY_NODE))
    state.axes = {0: 0.5, 1: 1.0, 2: -1.0, 3: 0.9}  # up and half left on the left stick, the right stick right
    state.press(9, True)
    assert state.fraction() == (1.0, 0.5, -1.0) and state.held
    assert [state.control_for(b) for b in (0, 1, 2, 6, 7)] == ["start", "end", "discard", "quit", None]
    assert gamepad_map(None, JOY_NODE) is JOY_NODE and gamepad_map("joy_node", GAME_CONTROLLER_NODE) is JOY_NODE
    custom = tmp_path / "pad.json"
    custom.write_text('{"deadman": 5, "controls": [[3, "start"]], "stale_s": 0}')
    mapping = gamepad_map(str(custom), JOY_NODE)
    assert mapping.deadman == 5 and mapping.controls == ((3, "start"),) and mapping.axes == JOY_NODE.axes
    custom.write_text('{"dead_man": 5}')
    with pytest.raises(TeleopError, match="unknown field.*dead_man"):
        gamepad_map(str(custom), JOY_NODE)
    with pytest.raises(TeleopError, match="not one of xpad, joy_node, game_controller_node"):
        gamepad_map("ps4", JOY_NODE)
    with pytest.raises(TeleopError, match="only for --teleop joystick"):
        make_teleop("keyboard", joy_map="joy_node")
    assert make_teleop("ros2-joy:/joy", joy_map="game_controller_node").mapping is GAME_CONTROLLER_NODE
    assert make_teleop(f"joystick:{tmp_path / 'js9'}").mapping == GamepadMap()


def test_every_source_shows_its_controls():
    assert "n start" in KeyboardTeleop().legend() and "Esc quit" in KeyboardTeleop().legend()
    legend = JoystickTeleop("/dev/input/js0").legend()
    assert "hold LB to drive (let go: stop)" in legend and "A start, B end, X discard, Start quit" in legend
