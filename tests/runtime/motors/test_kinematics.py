import numpy as np
import pytest

from runtime.motors.kinematics import make_base


@pytest.mark.parametrize("name", ["mecanum", "omni3"])
def test_holonomic_round_trip(name):
    base = make_base(name)
    for v in [(0.3, 0.0, 0.0), (0.0, -0.2, 0.0), (0.1, 0.2, 0.7)]:
        assert np.allclose(base.to_body(base.to_wheels(*v)), v)


def test_mecanum_known_cases():
    base = make_base("mecanum", wheel_radius=0.05, half_length=0.1, half_width=0.1)
    assert np.allclose(base.to_wheels(0.5, 0, 0), [10, 10, 10, 10])  # forward: all wheels the same way
    fl, fr, rl, rr = base.to_wheels(0, 0.5, 0)  # left: diagonal pairs oppose
    assert fl == rr == -10 and fr == rl == 10


def test_omni3_pure_rotation_turns_all_wheels_equally():
    w = make_base("omni3", wheel_radius=0.05, base_radius=0.15).to_wheels(0, 0, 1.0)
    assert np.allclose(w, 3.0)


def test_differential_cannot_strafe():
    base = make_base("differential", wheel_radius=0.05, track_width=0.3)
    assert not base.holonomic
    left, right = base.to_wheels(0.0, 0.0, 1.0)
    assert np.isclose(left, -3.0) and np.isclose(right, 3.0)
    assert np.allclose(base.to_wheels(0.0, 0.4, 0.0), 0.0)


def test_unknown_base():
    with pytest.raises(ValueError, match="unknown base 'tank'"):
        make_base("tank")
