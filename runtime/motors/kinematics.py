"""Body velocity <-> wheel speeds for mecanum, 3-wheel omni and differential bases.

    base = make_base("omni3", wheel_radius=0.05, base_radius=0.15)
    wheels = base.to_wheels(vx, vy, wz)     # rad/s per wheel
    vx, vy, wz = base.to_body(wheels)

Body frame: x forward, y left, z up (REP 103); speeds in m/s and rad/s.
For controllers that take wheel speeds (`--wheels BASE`); controllers that
take body velocity get (vx, vy, wz) directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Base:
    name: str
    matrix: np.ndarray  # (wheels, 3): wheel rad/s = matrix @ (vx, vy, wz)
    holonomic: bool

    def to_wheels(self, vx: float, vy: float, wz: float) -> np.ndarray:
        return self.matrix @ np.array([vx, vy, wz], dtype=np.float64)

    def to_body(self, wheels) -> np.ndarray:
        return np.linalg.pinv(self.matrix) @ np.asarray(wheels, dtype=np.float64)


def mecanum(wheel_radius: float = 0.04, half_length: float = 0.1, half_width: float = 0.1) -> Base:
    """Wheels front-left, front-right, rear-left, rear-right; rollers at 45 degrees (X configuration)."""
    k = half_length + half_width
    m = np.array([[1, -1, -k], [1, 1, k], [1, 1, -k], [1, -1, k]], dtype=np.float64) / wheel_radius
    return Base("mecanum", m, holonomic=True)


def omni3(wheel_radius: float = 0.05, base_radius: float = 0.15, first_wheel_deg: float = 90.0) -> Base:
    """Three omni wheels 120 degrees apart; wheel i drives tangentially at angle first+120*i."""
    rows = []
    for i in range(3):
        a = math.radians(first_wheel_deg + 120.0 * i)
        rows.append([-math.sin(a), math.cos(a), base_radius])
    return Base("omni3", np.array(rows) / wheel_radius, holonomic=True)


def differential(wheel_radius: float = 0.05, track_width: float = 0.3) -> Base:
    """Left and right wheels; a lateral velocity cannot be executed and is dropped."""
    m = np.array([[1, 0, -track_width / 2], [1, 0, track_width / 2]], dtype=np.float64) / wheel_radius
    return Base("differential", m, holonomic=False)


BASES = {"mecanum": mecanum, "omni3": omni3, "differential": differential}


def make_base(name: str, **dims) -> Base:
    if name not in BASES:
        raise ValueError(f"unknown base {name!r}; expected one of {', '.join(BASES)}")
    return BASES[name](**dims)
