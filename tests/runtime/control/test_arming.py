"""Arm and e-stop sources on real file descriptors: a pipe for the keyboard, a FIFO carrying Linux joystick
events for the gamepad, a file holding 0/1 for a GPIO line."""

import os
import time

import pytest

from runtime.control.arm_sources import JS_BUTTON, JS_EVENT, JS_INIT, GpioSource, JoystickSource, KeySource
from runtime.control.arming import ArmSwitch
from runtime.hardware import DeviceError


def wait_for(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_an_estop_latches_until_an_explicit_arm():
    switch = ArmSwitch(armed=False)
    assert not switch.armed and switch.state == "disarmed"
    switch.arm("test")
    assert switch.armed and switch.state == "armed"
    switch.estop("button")
    assert not switch.armed and switch.state == "e-stop (button)"
    switch.disarm("x")  # a disarm does not clear the latch
    assert switch.state == "e-stop (button)"
    switch.arm("operator")
    assert switch.armed and switch.changes == 4


def test_keys_arm_estop_and_disarm():
    r, w = os.pipe()
    switch = ArmSwitch(armed=False)
    source = KeySource(switch, fd=r, arm_key="a", estop_key=" ").start()
    try:
        os.write(w, b"x")
        time.sleep(0.1)
        assert switch.state == "disarmed"
        os.write(w, b"a")
        wait_for(lambda: switch.armed)
        os.write(w, b" ")
        wait_for(lambda: switch.state == "e-stop (key ' ')")
        os.write(w, b"ad")
        wait_for(lambda: switch.state == "disarmed")
    finally:
        source.close()
        os.close(w)
        os.close(r)


def test_gamepad_buttons_on_the_joystick_device(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    switch = ArmSwitch(armed=False)
    source = JoystickSource(switch, str(fifo), arm_button=7, estop_button=1).start()
    w = os.open(fifo, os.O_WRONLY)
    try:
        os.write(w, JS_EVENT.pack(0, 1, JS_BUTTON | JS_INIT, 7))  # the initial state burst never arms
        os.write(w, JS_EVENT.pack(1, 1, 0x02, 7))  # an axis numbered 7 neither
        time.sleep(0.15)
        assert switch.state == "disarmed"
        os.write(w, JS_EVENT.pack(2, 1, JS_BUTTON, 7))
        wait_for(lambda: switch.armed)
        os.write(w, JS_EVENT.pack(3, 0, JS_BUTTON, 7) + JS_EVENT.pack(4, 1, JS_BUTTON, 1))
        wait_for(lambda: switch.state == "e-stop (gamepad button 1)")
    finally:
        os.close(w)
        source.close()


def test_missing_gamepad_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceError, match=r"--gamepad .*js9: cannot open it .*input group"):
        JoystickSource(ArmSwitch(), str(tmp_path / "js9"), arm_button=0)


def test_gpio_lines_arm_on_an_edge_and_estop_while_active(tmp_path):
    arm_line, stop_line = tmp_path / "arm", tmp_path / "stop"
    arm_line.write_text("1\n")  # already high at start: no edge, no arm
    stop_line.write_text("1\n")  # active low: 1 is released
    switch = ArmSwitch(armed=False)
    sources = [GpioSource(switch, str(arm_line), "arm", period=0.01).start(),
               GpioSource(switch, str(stop_line), "estop", active_low=True, period=0.01).start()]
    try:
        time.sleep(0.1)
        assert switch.state == "disarmed"
        arm_line.write_text("0\n")
        time.sleep(0.05)
        arm_line.write_text("1\n")
        wait_for(lambda: switch.armed)
        stop_line.write_text("0\n")  # pressed
        wait_for(lambda: not switch.armed)
        assert switch.state.startswith("e-stop (gpio estop")
        switch.arm("operator")  # the button is still pressed: it stops again at once
        time.sleep(0.1)
        assert not switch.armed
        stop_line.write_text("1\n")
        switch.arm("operator")
        time.sleep(0.1)
        assert switch.armed
    finally:
        for s in sources:
            s.close()
