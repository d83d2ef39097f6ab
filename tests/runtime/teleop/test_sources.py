"""Teleop sources on real devices of the operating system: a pseudo-terminal for the keyboard, a FIFO carrying
the kernel's js_event records for the gamepad, an importable class for a user's own device."""

import os
import termios
import time

import pytest

from runtime.hardware import TeleopError
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
    assert keyboard.command(now + keyboard.hold_s + 0.01).velocity == (0.0, 0.0, 0.0)  # the key's move is over
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
