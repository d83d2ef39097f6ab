"""A simulated room and omni-wheel robot (numpy only): a first-person camera and a motor side on the wire.

    layout = random_layout(seed=3)                       # walls, 1-2 boxes, a bottle, a start pose
    robot = SimRobot(layout)
    robot.step(0.3, 0.0, 0.0, dt=0.4)                    # body velocity (m/s, m/s, rad/s) for dt seconds
    image = render(layout, robot.pose, width=1280, height=720, seed=0)   # BGR uint8, like the CSI camera

    emu = ControllerEmulator(link=...).start(); world = SimWorld(layout).attach(emu)
    camera = world.camera(width=320, height=180)         # a camera source for runtime.drive

The camera is a pinhole ray caster: one ray per image column against the
room's walls (axis-aligned), the boxes (axis-aligned) and the bottle (a
cylinder); each hit becomes a vertical span whose height falls with distance,
over a floor with tiles and a gradient; colours carry a little lighting and
sensor noise so images are not trivial. Collisions treat the robot as a disc.
The motor side is the controller emulator: `SimWorld.attach` makes its
velocity the robot's, integrated over wall-clock time, so `runtime.drive`
drives the simulated robot through the real serial driver.

"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.hardware import Camera, EndOfStream, Frame, LinklessMotorController, SentCommand

CAMERA_HEIGHT = 0.25  # m above the floor
WALL_HEIGHT = 1.0
BOX_HEIGHT = 0.45
BOTTLE_HEIGHT = 0.25
ROBOT_RADIUS = 0.18
DETOUR_CLEARANCE = 0.1  # the gap the expert leaves between the robot and the box it passes
CARDBOARD = (60, 125, 175)  # BGR: the obstacle box's colour, jittered per layout


@dataclass(frozen=True)
class Box:
    cx: float
    cy: float
    hx: float  # half extents (m)
    hy: float
    color: tuple[int, int, int]  # BGR


@dataclass(frozen=True)
class Layout:
    size: tuple[float, float]  # room x (forward from the start), y (left) extents in m; origin at a corner
    boxes: tuple[Box, ...]
    bottle: tuple[float, float, float]  # x, y, radius
    start: tuple[float, float, float]  # x, y, yaw
    side: str  # the side to pass the first obstacle on: "left" or "right"
    wall_color: tuple[int, int, int] = (170, 180, 190)
    floor_color: tuple[int, int, int] = (90, 110, 130)


def detour_lane(box: Box, side: str) -> float:
    """y of the lane that passes `box` on `side` with DETOUR_CLEARANCE to spare."""
    sign = 1.0 if side == "left" else -1.0
    return box.cy + sign * (box.hy + ROBOT_RADIUS + DETOUR_CLEARANCE)


def random_layout(seed: int, side: str | None = None) -> Layout:
    """A room with a cardboard box between the start and a bottle (sometimes a second box), from `seed`.

    `side` is where the bottle stands and so the side to pass the box on; the instruction names it
    ("... the beverage bottle on the left"). The room is sized so the expert needs about 10-20 moves of
    the collector's kind (0.4 s at the drive loop's default 0.5 m/s limit), like the 18-frame recordings.
    What the robot must judge is shaped for the `tiny` preset, whose random frozen vision tower keeps
    how much of a colour is in view but little of where: the obstacle is always cardboard-coloured
    (how much of it is in view says when the sidestep is done) and the bottle stands in line with the
    detour lane (how big it looks says when to stop). A pretrained Kosmos-2 needs none of this.
    """
    rng = np.random.default_rng(seed)
    side = side or ("left" if rng.random() < 0.5 else "right")
    sign = 1.0 if side == "left" else -1.0
    length, width = rng.uniform(2.5, 3.1), rng.uniform(2.4, 3.0)
    start = (0.4, width / 2 + rng.uniform(-0.1, 0.1), 0.0)
    color = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in CARDBOARD)
    box = Box(rng.uniform(1.0, 1.25), width / 2 + rng.uniform(-0.08, 0.08), rng.uniform(0.15, 0.22),
              rng.uniform(0.2, 0.32), color)
    boxes = [box]
    if rng.random() < 0.5:  # a distractor against the wall on the far side from the detour
        y = width / 2 - sign * (width / 2 - 0.3)
        boxes.append(Box(length * rng.uniform(0.6, 0.7), float(y), 0.15, 0.15,
                         tuple(int(c) for c in rng.integers(30, 200, 3))))
    # The bottle stands beyond the box, about in line with the lane that passes it on `side`.
    bottle = (length - rng.uniform(0.35, 0.45), detour_lane(box, side) + rng.uniform(-0.08, 0.08), 0.04)
    return Layout((length, width), tuple(boxes), bottle, start, side)


def _ray_box(px, py, dx, dy, box: Box) -> np.ndarray:
    """Distance along each ray to an axis-aligned box (inf where missed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tx1, tx2 = (box.cx - box.hx - px) / dx, (box.cx + box.hx - px) / dx
        ty1, ty2 = (box.cy - box.hy - py) / dy, (box.cy + box.hy - py) / dy
    near = np.maximum(np.minimum(tx1, tx2), np.minimum(ty1, ty2))
    far = np.minimum(np.maximum(tx1, tx2), np.maximum(ty1, ty2))
    hit = (near <= far) & (near > 1e-6)
    return np.where(hit, near, np.inf)


def _ray_circle(px, py, dx, dy, cx, cy, r) -> np.ndarray:
    ox, oy = px - cx, py - cy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - r * r
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def _ray_room(px, py, dx, dy, size) -> np.ndarray:
    with np.errstate(divide="ignore"):
        tx = np.where(dx > 0, (size[0] - px) / dx, np.where(dx < 0, -px / dx, np.inf))
        ty = np.where(dy > 0, (size[1] - py) / dy, np.where(dy < 0, -py / dy, np.inf))
    return np.minimum(tx, ty)


def render(layout: Layout, pose, width: int = 1280, height: int = 720, fov_deg: float = 70.0,
           seed: int = 0) -> np.ndarray:
    """First-person BGR uint8 image from `pose` (x, y, yaw)."""
    rng = np.random.default_rng(seed)
    x, y, yaw = pose
    focal = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    offsets = np.arctan((width / 2 - 0.5 - np.arange(width)) / focal)  # left of image = positive angle
    angles = yaw + offsets
    dx, dy = np.cos(angles), np.sin(angles)
    rows = np.arange(height)[:, None].astype(np.float32)
    horizon = height / 2
    # floor: distance of each row below the horizon, tiles from the hit point
    img = np.empty((height, width, 3), np.float32)
    below = np.maximum(rows - horizon, 0.5)
    floor_d = CAMERA_HEIGHT * focal / below / np.cos(offsets)[None, :]
    fx, fy = x + floor_d * dx[None, :], y + floor_d * dy[None, :]
    tiles = ((np.floor(fx / 0.3) + np.floor(fy / 0.3)) % 2)[..., None]
    shade = np.clip(1.2 - floor_d[..., None] / 6, 0.4, 1.2)
    img[:] = np.asarray(layout.floor_color, np.float32) * shade * (0.85 + 0.15 * tiles)
    img[: int(horizon)] = np.asarray(layout.wall_color, np.float32) * 0.6  # ceiling, dim

    def paint(dist, obj_height, color, mask=None):
        perp = dist * np.cos(offsets)
        top = horizon - focal * (obj_height - CAMERA_HEIGHT) / perp
        bottom = horizon + focal * CAMERA_HEIGHT / perp
        span = (rows >= top[None, :]) & (rows <= bottom[None, :]) & np.isfinite(dist)[None, :]
        if mask is not None:
            span &= mask[None, :]
        light = np.clip(1.3 - perp / 5, 0.45, 1.3)[None, :, None]
        col = np.asarray(color, np.float32)[None, None, :] * light
        img[span] = np.broadcast_to(col, img.shape)[span]

    wall = _ray_room(x, y, dx, dy, layout.size)
    paint(wall, WALL_HEIGHT, layout.wall_color)
    nearest = wall.copy()
    for box in sorted(layout.boxes, key=lambda b: -math.hypot(b.cx - x, b.cy - y)):
        t = _ray_box(x, y, dx, dy, box)
        paint(t, BOX_HEIGHT, box.color, t < nearest)
        nearest = np.minimum(nearest, t)
    bx, by, br = layout.bottle
    t = _ray_circle(x, y, dx, dy, bx, by, br)
    paint(t, BOTTLE_HEIGHT, (40, 150, 40), t < nearest)  # a green bottle (BGR)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class SimRobot:
    layout: Layout
    pose: tuple[float, float, float] = None  # x, y, yaw; the layout's start by default
    collided: bool = False
    path: list = field(default_factory=list)

    def __post_init__(self):
        if self.pose is None:
            self.pose = self.layout.start
        self.path.append(self.pose)

    def blocked(self, x: float, y: float) -> bool:
        """Would a disc of ROBOT_RADIUS at (x, y) touch a wall, a box or the bottle?"""
        lx, ly = self.layout.size
        if not (ROBOT_RADIUS <= x <= lx - ROBOT_RADIUS and ROBOT_RADIUS <= y <= ly - ROBOT_RADIUS):
            return True
        for b in self.layout.boxes:
            nx, ny = np.clip(x, b.cx - b.hx, b.cx + b.hx), np.clip(y, b.cy - b.hy, b.cy + b.hy)
            if math.hypot(x - nx, y - ny) < ROBOT_RADIUS:
                return True
        bx, by, br = self.layout.bottle
        return math.hypot(x - bx, y - by) < ROBOT_RADIUS + br

    def step(self, vx: float, vy: float, wz: float, dt: float) -> bool:
        """Move by a body velocity for dt (sub-stepped); stops at the first contact. Returns False on collision."""
        x, y, yaw = self.pose
        n = max(1, int(math.ceil(dt / 0.02)))
        h = dt / n
        for _ in range(n):
            nx = x + (vx * math.cos(yaw) - vy * math.sin(yaw)) * h
            ny = y + (vx * math.sin(yaw) + vy * math.cos(yaw)) * h
            if self.blocked(nx, ny):
                self.collided = True
                break
            x, y, yaw = nx, ny, yaw + wz * h
        self.pose = (x, y, yaw)
        self.path.append(self.pose)
        return not self.collided


class SimWorld:
    """The robot driven by the controller emulator's velocity, integrated over wall-clock time."""

    def __init__(self, layout: Layout):
        self.robot = SimRobot(layout)
        self.velocity = (0.0, 0.0, 0.0)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def attach(self, emulator) -> SimWorld:
        emulator.on_velocity = self.set_velocity
        return self

    def advance(self) -> None:
        with self._lock:
            now = time.monotonic()
            dt, self._last = now - self._last, now
            if dt > 0 and any(self.velocity):
                self.robot.step(*self.velocity, dt)

    def set_velocity(self, vx: float, vy: float, wz: float) -> None:
        self.advance()
        with self._lock:
            self.velocity = (vx, vy, wz)

    def reset_robot(self) -> None:
        """Back to the layout's start, standing still (a person carrying it back between recordings)."""
        with self._lock:
            self.robot = SimRobot(self.robot.layout)
            self.velocity, self._last = (0.0, 0.0, 0.0), time.monotonic()

    def camera(self, width: int = 320, height: int = 180, seed: int = 0) -> SimCamera:
        return SimCamera(self, width, height, seed)


class SimCamera(Camera):
    """The simulated robot's camera for runtime.drive: renders its view on each read, stamped when rendered."""

    name = "sim"

    def __init__(self, world: SimWorld, width: int, height: int, seed: int):
        self.world, self.width, self.height, self.seed = world, width, height, seed
        self.index = 0

    def read(self, timeout: float = 0.5) -> Frame:
        self.world.advance()
        if self.world.robot.collided:
            raise EndOfStream(f"simulated robot collided after {self.index} frames")
        image = render(self.world.robot.layout, self.world.robot.pose, self.width, self.height,
                       seed=self.seed + self.index)
        frame = Frame(image, time.monotonic(), self.index)
        self.index += 1
        return frame

    def disconnect(self) -> None:
        pass


class SimMotor(LinklessMotorController):
    """The simulated robot's motor side without a wire: each command sets the world's body velocity.

    `sim.drive --direct` uses it; by default `sim.drive` goes through the real serial driver and the
    controller emulator instead, so the wire path is the robot's. Commands are refused (not sent) before
    `connect` and after the robot collided, as a real base that stopped would.
    """

    name = "sim"

    def __init__(self, world: SimWorld):
        self.world = world

    def send_velocity(self, vx: float, vy: float, wz: float = 0.0) -> SentCommand:
        if not self._connected or self.world.robot.collided:
            self.world.set_velocity(0.0, 0.0, 0.0)
            return SentCommand((0.0, 0.0, 0.0), sent=False)
        velocity = (float(vx), float(vy), float(wz))
        self.world.set_velocity(*velocity)
        self._last_sent = velocity
        return SentCommand(velocity, sent=True, acknowledged=True)  # the world applied it

    def stop(self) -> bool:
        self.world.set_velocity(0.0, 0.0, 0.0)
        self._last_sent = (0.0, 0.0, 0.0)
        return True


def save_layout(layout: Layout, path) -> None:
    """A layout as JSON, for `sim.drive --layout FILE` (replay one room exactly)."""
    Path(path).write_text(json.dumps(asdict(layout), indent=2) + "\n")


def load_layout(path) -> Layout:
    try:
        d = json.loads(Path(path).read_text())
        boxes = tuple(Box(**{**b, "color": tuple(b["color"])}) for b in d.pop("boxes"))
        tuples = {k: tuple(d.pop(k)) for k in ("size", "bottle", "start", "wall_color", "floor_color") if k in d}
        return Layout(boxes=boxes, **tuples, **d)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a simulator layout ({type(e).__name__}: {e}); "
                         f"write one with sim.world.save_layout") from e
