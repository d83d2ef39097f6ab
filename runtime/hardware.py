"""The hardware seams of the robot, in the one place every room imports: one small abstract class each
(LeRobot's style), what they return, their errors, and a user's own class for one.

    from runtime.hardware import Camera, MotorController, SentCommand, TeleopSource

    class MyBase(MotorController):          # a vendor library in one class
        def connect(self): ...; return self
        def disconnect(self): ...
        @property
        def is_connected(self): ...
        def send_velocity(self, vx, vy, wz=0.0) -> SentCommand: ...
        def stop(self) -> bool: ...

    python -m runtime.drive --bundle bundle/ --motor mypackage.base:MyBase --camera csi

The drive loop talks to nothing else: every camera (device, CSI, replay, ROS 2
topic, simulator) is a `Camera`, every motor side (our serial protocol, ROS 2
`/cmd_vel`, dry run, simulator, a vendor library) is a `MotorController`.
`send_velocity` returns what really happened (`SentCommand`), so the step log
never claims a command that did not reach the robot. Every teleoperation
device (keyboard, gamepad, ROS 2 Joy or Twist, a user's class) is a
`TeleopSource`: `poll` for episode events and moves, `command` for the
velocity in force and whether the person holds control.

A user's class named on the command line as `package.module:ClassName`
(`--motor`, `--teleop`) is imported and checked by `load_user_class`: every
error is raised as the caller's exception class and names the option, the
module (and its file), the class, what was expected and what was found.
Importing the module runs its code: name only code you trust.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class DeviceError(RuntimeError):
    """A device that cannot be used; the message says what to check."""


class DeviceNotConnectedError(DeviceError):
    """A call that needs a connected device on one that is not (never connected, or lost)."""


# Typed camera errors: the drive loop zeroes and retries on the first two, ends on the third, and stops
# with an error on any other CameraError.
class CameraError(DeviceError):
    """A camera that cannot be used; the message says what to check."""


class CameraStalled(CameraError):
    """No new frame within the read timeout: the drive loop zeroes and keeps trying."""


class FrameTooOld(CameraError):
    """The newest frame is older than the camera's max age: the drive loop zeroes and keeps trying."""


class EndOfStream(CameraError):
    """A replay ran out of frames: the drive loop ends normally."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8, BGR (what OpenCV and the collector deliver)
    stamp: float  # time.monotonic() at capture: every age in the drive loop counts from here
    index: int


@dataclass(frozen=True)
class SentCommand:
    """What a `send_velocity` really did."""

    velocity: tuple[float, float, float]  # body velocity (m/s, m/s, rad/s) after the device's own limits;
    #                                      zeros when nothing went out
    sent: bool  # written to the link (port, topic, vendor call) without error
    acknowledged: bool | None = None  # the controller confirmed it; None where the link has no acks (ROS 2, dry run)

    @property
    def delivered(self) -> bool:
        """Sent, and not refused: acknowledged, or on a link that has no acknowledgements."""
        return self.sent and self.acknowledged is not False


class Camera(ABC):
    """A frame source. `read` returns the newest frame with its capture time."""

    name: str = "camera"

    def connect(self) -> Camera:
        """Start delivering frames (idempotent); returns self. Sources that open in their constructor return
        self. The same pair as MotorController: connect / disconnect."""
        return self

    @abstractmethod
    def read(self, timeout: float = 0.5) -> Frame:
        """The newest frame not read before. Raises CameraStalled (none within `timeout`),
        FrameTooOld (the newest is older than the camera's max age) or EndOfStream (a replay ended)."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device; safe to call twice."""

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.disconnect()


class MotorController(ABC):
    """A motor side. Body velocity in, what was really sent out."""

    name: str = "motor"

    @abstractmethod
    def connect(self) -> MotorController:
        """Open the link; returns self. Raises DeviceError with what to check."""

    @abstractmethod
    def disconnect(self) -> None:
        """Zero the motors if possible, then close the link; safe to call twice."""

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def send_velocity(self, vx: float, vy: float, wz: float = 0.0) -> SentCommand:
        """Command a body velocity (m/s, m/s, rad/s). Never raises for a lost link: says so in the result."""

    @abstractmethod
    def stop(self) -> bool:
        """Zero now. True when the zero is known to have gone out (acknowledged where the link has acks)."""

    @property
    def last_sent(self) -> tuple[float, float, float]:
        """The last velocity that went out (zeros before the first)."""
        return getattr(self, "_last_sent", (0.0, 0.0, 0.0))

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.disconnect()


class LinklessMotorController(MotorController):
    """A motor side with no link to open (dry run, simulator): connect marks it connected, disconnect zeroes
    first. Subclasses implement `send_velocity` (refusing commands while not connected) and `stop`."""

    _connected = False

    def connect(self) -> LinklessMotorController:
        self._connected = True
        return self

    def disconnect(self) -> None:
        if self._connected:
            self.stop()
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected


# -- teleoperation -------------------------------------------------------------------------------------
CONTROLS = ("start", "end", "discard", "quit")
ZERO = (0.0, 0.0, 0.0)


class TeleopError(DeviceError):
    """A teleop device that cannot be used; the message says what to check."""


@dataclass(frozen=True)
class TeleopEvent:
    kind: str  # "move" or one of CONTROLS
    velocity: tuple[float, float, float] = ZERO  # a move's body velocity (m/s, m/s, rad/s)
    time: float = 0.0  # time.monotonic() when it was read


@dataclass(frozen=True)
class TeleopCommand:
    velocity: tuple[float, float, float]  # in force now (m/s, m/s, rad/s); zeros when nobody drives
    held: bool  # the person is driving now (take-over): a running key move, the dead-man held, a fresh message


class TeleopSource(ABC):
    """A device a person drives with (runtime/teleop/). `open(top_speed)` before use; `close()` restores what it
    changed (terminal modes). Velocities are the robot's units: a full key press or a full stick is the top
    speed of that axis (`--max-speed`); the recorder and the drive send them through the same safety gate as
    the policy's actions. Two views of one device, for the two recording modes:
    - `poll(now)`: the events since the last poll: a `move` (step mode: one key press, one Twist or Joy message,
      or a deflected stick is one move; the recorder ignores moves that arrive while a move runs, so a held key
      gives back-to-back moves, never a backlog) and the episode controls `start`, `end`, `discard` (drop the
      episode and record it again) and `quit`;
    - `command(now)`: the velocity in force now (continuous mode, take-over), and `held`: whether the person is
      driving (a key's move still running, the dead-man button pressed, a fresh message).
    """

    name: str = "teleop"
    top_speed: tuple[float, float, float] = (0.5, 0.5, 1.0)

    def open(self, top_speed=(0.5, 0.5, 1.0)) -> TeleopSource:
        self.top_speed = tuple(float(v) for v in top_speed)
        return self

    def close(self) -> None:  # noqa: B027 - a source with nothing to release need not override it
        """Release the device; safe to call twice."""

    @abstractmethod
    def poll(self, now: float) -> list[TeleopEvent]:
        """Read what arrived (never blocks); the events since the last poll."""

    @abstractmethod
    def command(self, now: float) -> TeleopCommand:
        """The velocity in force now and whether the person is driving."""

    def scale(self, fraction) -> tuple[float, float, float]:
        """Per-axis fraction of the top speed (-1..1) -> body velocity."""
        return tuple(float(f) * s for f, s in zip(fraction, self.top_speed))

    def moves(self, fraction, now: float) -> list[TeleopEvent]:
        """One `move` at `fraction` of the top speed, or none when `fraction` is None (nothing deflected)."""
        return [] if fraction is None else [TeleopEvent("move", self.scale(fraction), now)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- a user's class for a seam ---------------------------------------------------------------------------
def check_user_class(cls, spec: str, option: str, base: type, error: type[Exception], needs: str = "") -> type:
    """`cls` when it is a subclass of `base`, else `error` saying what it is and what it must provide."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise error(f"{option} {spec}: {cls!r} is not a subclass of {base.__module__}.{base.__qualname__}"
                    + (f" ({needs})" if needs else ""))
    return cls


def load_user_class(spec: str, option: str, base: type, error: type[Exception], needs: str = "") -> type:
    """`package.module:ClassName` -> the class, a subclass of `base`; `error(message)` when the module does
    not import, has no such name, or the name is not such a class. `option` (e.g. "--motor") starts each
    message; `needs` lists what the class must provide."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"{option} {spec}: cannot import {module_name} ({type(e).__name__}: {e}); is its package "
                    f"installed, or its folder on PYTHONPATH?") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        raise error(f"{option} {spec}: module {module_name} ({module.__file__}) has no {class_name}")
    return check_user_class(cls, spec, option, base, error, needs)
