import math

import numpy as np

from runtime.control.safety import CommandWatchdog, SafetyConfig, SafetyGate

NO_ACCEL = (math.inf, math.inf, math.inf)


def test_speed_limits_per_axis_and_dead_zone():
    gate = SafetyGate(SafetyConfig(max_speed=(0.5, 0.3, 1.0), max_accel=NO_ACCEL, dead_zone=0.1))
    assert np.allclose(gate.filter([1.15, -1.15, 0.05], 0.0), [0.5, -0.3, 0.0])
    assert np.allclose(gate.filter([0.05, 0.2], 0.1), [0.0, 0.2, 0.0])  # 2-DOF actions pad angular_z


def test_acceleration_is_limited_but_braking_is_not():
    gate = SafetyGate(SafetyConfig(max_speed=(1, 1, 1), max_accel=(1.0, 1.0, 1.0)))
    gate.filter([0, 0, 0], 0.0)
    assert np.allclose(gate.filter([1, 0, 0], 0.1), [0.1, 0, 0])
    assert np.allclose(gate.filter([1, 0, 0], 0.2), [0.2, 0, 0])
    assert np.allclose(gate.filter([0, 0, 0], 0.25), [0, 0, 0])  # stop at once


def test_a_reversal_brakes_to_zero_at_once_and_only_the_new_direction_ramps():
    """Per axis: x reverses forward -> backward, y keeps its direction, wz reverses the other way.
    The old gate slewed x from +0.3 through zero at 1 m/s^2 (0.2 after 0.1 s: still moving forward)."""
    gate = SafetyGate(SafetyConfig(max_speed=(1, 1, 2), max_accel=(1.0, 1.0, 2.0)))
    gate.filter([0, 0, 0], 9.0)
    for t in np.arange(9.1, 10.01, 0.1):  # ramp up to (0.3, 0.3, -0.6) and hold
        out = gate.filter([0.3, 0.3, -0.6], t)
    assert np.allclose(out, [0.3, 0.3, -0.6])
    out = gate.filter([-1, 1, 2], 10.1)
    # x and wz: zero at once, then 0.1 s of ramp in the new direction; y: an ordinary 0.1 s ramp up
    assert np.allclose(out, [-0.1, 0.4, 0.2])
    assert np.allclose(gate.filter([-1, 1, 2], 10.2), [-0.2, 0.5, 0.4])
    # a reversal to a small command is reached at once (it is below one step of the ramp)
    assert np.allclose(gate.filter([0.05, 0.5, -0.1], 10.3), [0.05, 0.5, -0.1])


def test_nan_and_inf_give_zero_and_are_counted():
    gate = SafetyGate(SafetyConfig(max_accel=NO_ACCEL))
    gate.filter([0.3, 0.3], 0.0)
    assert np.array_equal(gate.filter([np.nan, 0.1], 0.1), np.zeros(3))
    assert np.array_equal(gate.filter([0.1, np.inf], 0.2), np.zeros(3))
    assert gate.nonfinite == 2


def test_watchdog():
    dog = CommandWatchdog(0.5)
    assert not dog.fresh(0.0)
    dog.feed(1.0)
    assert dog.fresh(1.4) and dog.fresh(1.5) and not dog.fresh(1.51)


def test_an_unlimited_axis_twice_at_the_same_instant_passes_the_command_not_nan():
    """inf * 0 is NaN: a gate without acceleration limits called twice at one time must still send a number."""
    gate = SafetyGate(SafetyConfig(max_accel=(math.inf, math.inf, math.inf)))
    gate.filter([0.2, 0.0, 0.0], now=1.0)
    out = gate.filter([0.3, -0.1, 0.0], now=1.0)
    assert np.isfinite(out).all() and out.tolist() == [0.3, -0.1, 0.0]
