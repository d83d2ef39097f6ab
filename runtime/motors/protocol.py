"""The motor controller's serial protocol, version 1 (spec: docs/serial-protocol.md).

    frame = encode_frame(Command.SET_VELOCITY, seq=7, payload=velocity_payload(0.2, 0.0, 0.0, 500))
    parser = FrameParser()
    for frame in parser.feed(received_bytes): ...

Frame: 0xAA 0x55 | version | seq | type | length | payload (length bytes) | CRC-16/CCITT-FALSE
(little-endian) over version..payload. The parser resynchronises on the
sync bytes, so garbage, a wrong checksum or a truncated frame costs the
frames it touches and nothing else: it never raises on input bytes.
"""

from __future__ import annotations

import binascii
import math
import struct
from dataclasses import dataclass
from enum import IntEnum

SYNC = b"\xaa\x55"
VERSION = 1
MAX_VERSION = 15  # versions a header may claim (a newer one is NACKed, garbage is skipped)
MAX_PAYLOAD = 32  # largest real payload is 19 bytes; a small cap limits what a garbage header can swallow
HEADER = 6  # sync(2) version seq type length
CRC_BYTES = 2


class Command(IntEnum):
    SET_VELOCITY = 0x01  # float32 vx (m/s), vy (m/s), wz (rad/s); uint16 watchdog timeout (ms)
    STOP = 0x02  # no payload: zero now
    HEARTBEAT = 0x03  # no payload: answered (the link is alive); never extends a motion past its own timeout
    QUERY_STATUS = 0x04  # no payload: the controller answers STATUS
    SET_WHEELS = 0x05  # uint8 count, count x float32 wheel speeds (rad/s); uint16 watchdog timeout (ms)
    QUERY_INFO = 0x06  # no payload: the controller answers INFO (what it is configured as); older ones NACK 2
    READY = 0x80  # sent once when the controller starts: uint8 version, uint8 wheels, uint16 default watchdog (ms)
    ACK = 0x81  # uint8 acknowledged seq, uint8 0
    NACK = 0x82  # uint8 refused seq, uint8 error code (see ErrorCode)
    STATUS = 0x84  # uint8 flags, float32 vx, vy, wz, uint32 uptime (ms), uint16 frames with bad CRC
    INFO = 0x85  # READY's four bytes, float32 max_linear, max_angular, max_wheel (its Limits), uint8 base kind,
    #              uint16 watchdog cap (ms); a controller older than the last two sends the first 16 bytes only


class ErrorCode(IntEnum):
    BAD_PAYLOAD = 1
    UNKNOWN_COMMAND = 2
    BAD_VERSION = 3
    OUT_OF_RANGE = 4  # a NaN, an infinity or a speed beyond the controller's limits: refused, and the motors stop
    UNVERIFIED = 5  # a motion command before any QUERY_INFO since the controller started: refused, motors at zero


class BaseKind(IntEnum):
    """INFO's base kind byte: what the controller's wheels can do (0 is never sent: a 16-byte INFO has no kind)."""

    UNKNOWN = 0  # an INFO without the field (a controller older than it)
    HOLONOMIC = 1  # mecanum, omni wheels: vx, vy and wz (the drive's --base omni)
    DIFFERENTIAL = 2  # two driven sides: vx and wz only, vy is dropped (the drive's --base diff)


INFO_V1_BYTES = 16  # version, wheels, default watchdog, three limits: what controllers before the base kind send
INFO_BYTES = 19  # ... + uint8 base kind + uint16 watchdog cap (ms)


@dataclass(frozen=True)
class Limits:
    """What a controller accepts (docs/serial-protocol.md); the reference controllers' defaults."""

    max_linear: float = 2.0  # m/s, |vx| and |vy|
    max_angular: float = 6.0  # rad/s, |wz|
    max_wheel: float = 100.0  # rad/s per wheel (SET_WHEELS), the wheel speed at full duty

    def body_ok(self, vx: float, vy: float, wz: float) -> bool:
        return (all(math.isfinite(v) for v in (vx, vy, wz)) and abs(vx) <= self.max_linear
                and abs(vy) <= self.max_linear and abs(wz) <= self.max_angular)

    def wheels_ok(self, speeds) -> bool:
        return all(math.isfinite(w) and abs(w) <= self.max_wheel for w in speeds)


class StatusFlag(IntEnum):
    MOVING = 1
    WATCHDOG_TRIPPED = 2


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): cheap on a microcontroller, catches burst errors.
    binascii.crc_hqx is exactly this CRC (XMODEM's poly, unreflected), computed in C."""
    return binascii.crc_hqx(data, crc)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    version: int = VERSION


def encode_frame(kind: int, seq: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = bytes([version, seq & 0xFF, int(kind), len(payload)]) + payload
    return SYNC + body + struct.pack("<H", crc16_ccitt(body))


def velocity_payload(vx: float, vy: float, wz: float, timeout_ms: int) -> bytes:
    return struct.pack("<fffH", vx, vy, wz, timeout_ms)


def parse_velocity(payload: bytes) -> tuple[float, float, float, int]:
    if len(payload) != 14:
        raise ValueError(f"SET_VELOCITY payload must be 14 bytes, got {len(payload)}")
    return struct.unpack("<fffH", payload)


def wheels_payload(speeds, timeout_ms: int) -> bytes:
    return struct.pack(f"<B{len(speeds)}fH", len(speeds), *speeds, timeout_ms)


def parse_wheels(payload: bytes) -> tuple[tuple[float, ...], int]:
    if not payload or len(payload) != 1 + 4 * payload[0] + 2:
        raise ValueError("SET_WHEELS payload length does not match its wheel count")
    n = payload[0]
    values = struct.unpack(f"<{n}fH", payload[1:])
    return values[:n], values[n]


def ready_payload(wheels: int, default_watchdog_ms: int) -> bytes:
    return struct.pack("<BBH", VERSION, wheels, default_watchdog_ms)


def parse_ready(payload: bytes) -> dict:
    if len(payload) != 4:
        raise ValueError(f"READY payload must be 4 bytes, got {len(payload)}")
    version, wheels, watchdog = struct.unpack("<BBH", payload)
    return {"version": version, "wheels": wheels, "default_watchdog_ms": watchdog}


def info_payload(wheels: int, default_watchdog_ms: int, limits: Limits, base: int = BaseKind.HOLONOMIC,
                 max_watchdog_ms: int = 1000) -> bytes:
    return ready_payload(wheels, default_watchdog_ms) + struct.pack(
        "<fffBH", limits.max_linear, limits.max_angular, limits.max_wheel, base, max_watchdog_ms)


def parse_info(payload: bytes) -> dict:
    """INFO -> {"version", "wheels", "default_watchdog_ms", "limits": Limits, "base": "holonomic" | "differential"
    | "unknown", "max_watchdog_ms": int | None}. A 16-byte INFO (a controller older than the base kind) parses
    with base "unknown" and max_watchdog_ms None; bytes past the 19 known are a later addition and ignored."""
    if len(payload) != INFO_V1_BYTES and len(payload) < INFO_BYTES:
        raise ValueError(f"INFO payload must be {INFO_V1_BYTES} or at least {INFO_BYTES} bytes, got {len(payload)}")
    info = parse_ready(payload[:4])
    info["limits"] = Limits(*struct.unpack("<fff", payload[4:INFO_V1_BYTES]))
    info["base"], info["max_watchdog_ms"] = "unknown", None
    if len(payload) >= INFO_BYTES:
        kind, cap = struct.unpack("<BH", payload[INFO_V1_BYTES:INFO_BYTES])
        info["base"] = BaseKind(kind).name.lower() if kind in BaseKind._value2member_map_ else "unknown"
        info["max_watchdog_ms"] = cap
    return info


def status_payload(flags: int, vx: float, vy: float, wz: float, uptime_ms: int, bad_crc: int) -> bytes:
    return struct.pack("<BfffIH", flags, vx, vy, wz, uptime_ms & 0xFFFFFFFF, bad_crc & 0xFFFF)


def parse_status(payload: bytes) -> dict:
    if len(payload) != 19:
        raise ValueError(f"STATUS payload must be 19 bytes, got {len(payload)}")
    flags, vx, vy, wz, uptime, bad = struct.unpack("<BfffIH", payload)
    return {"flags": flags, "moving": bool(flags & StatusFlag.MOVING),
            "watchdog_tripped": bool(flags & StatusFlag.WATCHDOG_TRIPPED),
            "velocity": (vx, vy, wz), "uptime_ms": uptime, "bad_crc": bad}


class FrameParser:
    """Incremental parser: feed any bytes, get the valid frames out; counts what it dropped."""

    def __init__(self):
        self.buffer = bytearray()
        self.bad_crc = 0
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(SYNC)
            if start < 0:
                keep = 1 if self.buffer.endswith(SYNC[:1]) else 0
                self.dropped_bytes += len(self.buffer) - keep
                del self.buffer[: len(self.buffer) - keep]
                return frames
            if start:
                self.dropped_bytes += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER:
                return frames
            length = self.buffer[5]
            if length > MAX_PAYLOAD or not 1 <= self.buffer[2] <= MAX_VERSION:  # not a frame: skip this sync
                self.dropped_bytes += 1
                del self.buffer[:1]
                continue
            total = HEADER + length + CRC_BYTES
            if len(self.buffer) < total:
                return frames
            body = bytes(self.buffer[2: HEADER + length])
            (crc,) = struct.unpack("<H", self.buffer[HEADER + length: total])
            if crc != crc16_ccitt(body):
                self.bad_crc += 1
                self.dropped_bytes += 1
                del self.buffer[:1]  # resync inside: a real frame may start within these bytes
                continue
            del self.buffer[:total]
            frames.append(Frame(type=body[2], seq=body[1], payload=body[4:], version=body[0]))
