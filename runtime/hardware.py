"""The two hardware seams of the robot: one small abstract class each (LeRobot's style).

    from runtime.hardware import Camera, MotorController, SentCommand

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
never claims a command that did not reach the robot.
"""

from __future__ import annotations

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

