"""A motor controller that speaks docs/serial-protocol.md on a pseudo-terminal.

    python -m sim.controller_emulator --link /tmp/mobile-vla-motor     # then: --serial /tmp/mobile-vla-motor

    emu = ControllerEmulator(link=Path("/tmp/motor")).start()
    ... SerialMotorController(emu.port) ...
    emu.velocity, emu.history, emu.unplug(), emu.replug(), emu.reboot(1.0), emu.inject(b"..."), emu.stop()

Behaves like the firmware (firmware/mvla_controller.c, which the tests run
side by side with this): says READY when it starts, acknowledges every
command, answers status and info queries (INFO with its base kind and
watchdog cap), refuses bad payloads with NACK (a motion command refused
stops the motors), refuses NaN, infinite or out-of-range speeds with NACK 4
and stops, refuses motion with NACK 5 until the host has asked QUERY_INFO
since it started, and zeroes the motors on its own at the deadline of the
last SET_VELOCITY/SET_WHEELS: the timeout it carried, capped at
`max_watchdog_ms` (1 s), never extended by a HEARTBEAT (the
controller-side watchdog of docs/serial-protocol.md).
`reboot` is the auto-reset circuit of an Arduino-style board: motors off,
deaf while the bootloader runs, then READY. `link` is a stable symlink to the
current pty (what the udev rule gives the real controller), so a test can
unplug and replug the "cable". Used by the tests, the simulator and anyone
without hardware.
"""

from __future__ import annotations

import argparse
import os
import select
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from runtime.motors.protocol import (
    VERSION,
    BaseKind,
    Command,
    ErrorCode,
    FrameParser,
    Limits,
    StatusFlag,
    encode_frame,
    info_payload,
    parse_velocity,
    parse_wheels,
    ready_payload,
    status_payload,
)


@dataclass(frozen=True)
class Received:
    time: float  # time.monotonic() when the emulator applied it
    command: str  # SET_VELOCITY, STOP, SET_WHEELS, WATCHDOG, REFUSED, UNPLUG, REBOOT
    velocity: tuple[float, float, float]  # the body velocity in force after it


class ControllerEmulator:
    WATCHDOG_CAP_MS = 1000  # the firmware's MVLA_WATCHDOG_CAP_MS: no motion runs longer without the next command

    def __init__(self, link: Path | None = None, base=None, default_timeout_ms: int = 500,
                 limits: Limits | None = None, max_watchdog_ms: int = WATCHDOG_CAP_MS):
        self.link = Path(link) if link else None
        self.base = base  # kinematics.Base, to turn SET_WHEELS into a body velocity
        # clamped as mvla_init clamps them: the cap never above 1 s, the default never above the cap
        self.max_watchdog_ms = min(max_watchdog_ms or self.WATCHDOG_CAP_MS, self.WATCHDOG_CAP_MS)
        self.default_timeout_ms = min(default_timeout_ms or self.max_watchdog_ms, self.max_watchdog_ms)
        self.limits = limits or Limits()
        self.watchdog_tripped = False
        self.info_asked = False  # QUERY_INFO came since the start: motion commands are applied (else NACK 5)
        self._timeout_ms = 0  # the last timeout a motion command carried (capped)
        self._booting_until = None
        self._announced = False  # READY once per "power-up": a replugged cable does not reboot the board
        self.velocity = (0.0, 0.0, 0.0)
        self.history: list[Received] = []
        self.on_velocity = None  # callback(vx, vy, wz), e.g. the simulator
        self.respond = True  # False: swallow commands (a hung controller)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._master = self._slave = None
        self._thread = None
        self._deadline = None
        self._started = time.monotonic()
        self.parser = FrameParser()

    # -- the cable -------------------------------------------------------------
    @property
    def port(self) -> str:
        return str(self.link) if self.link else os.ttyname(self._slave)

    def _open_pty(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        if self.link:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.ttyname(self._slave))
            os.replace(tmp, self.link)

    def start(self) -> ControllerEmulator:
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="motor-emulator", daemon=True)
        self._thread.start()
        if not self._announced:
            self._announced = True
            self._announce()
        return self

    @property
    def wheels(self) -> int:
        """What READY and INFO report: the base's wheel count, 0 for body velocity only."""
        return len(self.base.matrix) if self.base else 0

    @property
    def base_kind(self) -> int:
        """What INFO reports: differential when no wheel follows vy (the firmware's rule), else holonomic;
        body velocity only (no base) passes vy through, so holonomic."""
        if self.base is None or any(self.base.matrix[:, 1]):
            return BaseKind.HOLONOMIC
        return BaseKind.DIFFERENTIAL

    def _announce(self) -> None:
        self._reply(Command.READY, 0, ready_payload(self.wheels, self.default_timeout_ms))

    def inject(self, data: bytes) -> None:
        """Bytes from the controller to the host that no command asked for (noise, garbage)."""
        os.write(self._master, data)

    def reboot(self, boot_s: float = 1.0) -> None:
        """A reset (DTR edge on an auto-reset board): stop now, ignore bytes for boot_s, then READY."""
        self._deadline = None
        self._apply((0.0, 0.0, 0.0), "REBOOT")
        self._booting_until = time.monotonic() + boot_s

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self._close_pty()
        if self.link:
            self.link.unlink(missing_ok=True)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def unplug(self) -> None:
        """The cable is pulled: the port disappears and the motors stop (as a real controller would)."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._close_pty()
        if self.link:
            self.link.unlink(missing_ok=True)
        self._apply((0.0, 0.0, 0.0), "UNPLUG")

    def replug(self) -> None:
        self.parser = FrameParser()
        self.start()

    # -- the firmware ----------------------------------------------------------
    def _apply(self, velocity, command: str) -> None:
        with self._lock:
            self.velocity = tuple(float(v) for v in velocity)
            self.history.append(Received(time.monotonic(), command, self.velocity))
        if self.on_velocity:
            self.on_velocity(*self.velocity)

    def _reply(self, kind: int, seq: int, payload: bytes) -> None:
        try:
            os.write(self._master, encode_frame(kind, seq, payload))
        except OSError:
            pass

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._booting_until is not None and time.monotonic() >= self._booting_until:
                self._booting_until = None
                self.parser = FrameParser()
                self._timeout_ms = 0
                self.watchdog_tripped = False
                self.info_asked = False
                self._started = time.monotonic()
                self._announce()
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._deadline = None
                if any(self.velocity):
                    self._apply((0.0, 0.0, 0.0), "WATCHDOG")
                self.watchdog_tripped = True
            try:
                ready, _, _ = select.select([self._master], [], [], 0.005)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except (OSError, ValueError, TypeError):
                return
            if self._booting_until is not None:
                continue  # the bootloader does not speak our protocol
            for frame in self.parser.feed(data):
                if self.respond:
                    self._handle(frame)

    def _handle(self, frame) -> None:
        if frame.version != VERSION:
            self._reply(Command.NACK, frame.seq, bytes([frame.seq, ErrorCode.BAD_VERSION]))
            return
        if frame.type in (Command.SET_VELOCITY, Command.SET_WHEELS) and not self.info_asked:
            self._refuse(frame.seq, ErrorCode.UNVERIFIED)  # restarted and not asked what it is: no motion yet
            return
        try:
            if frame.type == Command.SET_VELOCITY:
                vx, vy, wz, timeout_ms = parse_velocity(frame.payload)
                if not self.limits.body_ok(vx, vy, wz):
                    self._refuse(frame.seq)
                    return
                self._feed_watchdog(timeout_ms)
                self._apply((vx, vy, wz), "SET_VELOCITY")
            elif frame.type == Command.SET_WHEELS:
                wheels, timeout_ms = parse_wheels(frame.payload)
                if self.base is None or len(wheels) != len(self.base.matrix):
                    raise ValueError("no base configured for wheel speeds, or another wheel count")
                if not self.limits.wheels_ok(wheels):
                    self._refuse(frame.seq)
                    return
                self._feed_watchdog(timeout_ms)
                self._apply(tuple(self.base.to_body(wheels)), "SET_WHEELS")
            elif frame.type == Command.STOP:
                self._deadline = None
                self._apply((0.0, 0.0, 0.0), "STOP")
            elif frame.type == Command.HEARTBEAT:
                pass  # the link is alive; the motion's deadline stays where its command put it
            elif frame.type == Command.QUERY_INFO:
                self.info_asked = True
                self._reply(Command.INFO, frame.seq, info_payload(self.wheels, self.default_timeout_ms, self.limits,
                                                                  self.base_kind, self.max_watchdog_ms))
                return
            elif frame.type == Command.QUERY_STATUS:
                flags = (StatusFlag.MOVING if any(self.velocity) else 0) | (
                    StatusFlag.WATCHDOG_TRIPPED if self.watchdog_tripped else 0)
                uptime = int((time.monotonic() - self._started) * 1000)
                self._reply(Command.STATUS, frame.seq, status_payload(flags, *self.velocity, uptime,
                                                                     min(self.parser.bad_crc, 0xFFFF)))
                return
            else:
                self._reply(Command.NACK, frame.seq, bytes([frame.seq, ErrorCode.UNKNOWN_COMMAND]))
                return
        except ValueError:  # a motion command refused stops the motors, whatever the reason (as the firmware)
            if frame.type in (Command.SET_VELOCITY, Command.SET_WHEELS):
                self._refuse(frame.seq, ErrorCode.BAD_PAYLOAD)
            else:
                self._reply(Command.NACK, frame.seq, bytes([frame.seq, ErrorCode.BAD_PAYLOAD]))
            return
        self._reply(Command.ACK, frame.seq, bytes([frame.seq, 0]))

    def _refuse(self, seq: int, code: int = ErrorCode.OUT_OF_RANGE) -> None:
        """NaN, inf, beyond the limits or a bad payload: a broken host; stop rather than keep the last
        command running (the host reads any refusal of a motion command as zero)."""
        self._deadline = None
        self._apply((0.0, 0.0, 0.0), "REFUSED")
        self._reply(Command.NACK, seq, bytes([seq, code]))

    def _feed_watchdog(self, timeout_ms: int) -> None:
        """A motion command's deadline: its timeout (0: the last one), never longer than the cap."""
        self._timeout_ms = min(timeout_ms, self.max_watchdog_ms) if timeout_ms else self._timeout_ms
        self.watchdog_tripped = False
        self._deadline = time.monotonic() + (self._timeout_ms or self.default_timeout_ms) / 1000.0

    def commands(self, kind: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.history if kind is None or r.command == kind]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--link", type=Path, default=Path("/tmp/mobile-vla-motor"), help="stable symlink to the pty")
    args = ap.parse_args(argv)
    emu = ControllerEmulator(link=args.link).start()
    emu.on_velocity = lambda vx, vy, wz: print(f"velocity {vx:+.3f} {vy:+.3f} {wz:+.3f}", flush=True)
    print(f"controller emulator on {emu.port} -> {os.ttyname(emu._slave)}; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
