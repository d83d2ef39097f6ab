import math

import numpy as np

from runtime.safety import CommandWatchdog, SafetyConfig, SafetyGate

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
    # a reversal is not braking: it goes through zero at the limited rate
    gate.filter([0.3, 0, 0], 10.0)
    assert np.allclose(gate.filter([-1, 0, 0], 10.1), [0.2, 0, 0])


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
