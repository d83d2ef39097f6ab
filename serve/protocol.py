"""The server's side of the protocol: what a request must hold, and the metadata sent on connect.

    from serve.protocol import parse_request, metadata, ProtocolError
    request = parse_request(message)     # a FeatureRequest, ActionsRequest, ResetRequest or MetadataRequest
    first_message = metadata(bundle, backend_description, compute_identity, ["actions", "feature"], limits)

docs/serving.md is the specification (message types, fields, units,
versions); this module checks an incoming message against it and raises
`ProtocolError` with a message that names the field, what was expected and
what was found. The error goes back to the sender; the server keeps serving.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from runtime.policy.wire import (
    MAX_IMAGE_SIDE,
    MAX_PROMPT_CHARS,
    PROTOCOL,
    PROTOCOL_VERSION,
    model_identity,
)
from serve.rings import ROBOT_ID_CHARS

MAX_DEADLINE_MS = 3_600_000.0  # a deadline_ms beyond an hour is a mistake, not a deadline


class ProtocolError(ValueError):
    """A request the server cannot serve; the text names the field, the expected and the found."""


@dataclass(frozen=True)
class FeatureRequest:
    image: np.ndarray | EncodedJpeg  # (H, W, 3) uint8 RGB, usually at the bundle's image size (resized by the robot)
    prompt: str | None  # None: the bundle's default instruction
    id: int | None  # echoed in the reply
    deadline_ms: float | None = None  # ms the sender still waits, counted from when it sent this; None: no limit


@dataclass(frozen=True)
class ActionsRequest:
    image: np.ndarray | EncodedJpeg  # (H, W, 3) uint8 RGB, any size up to MAX_IMAGE_SIDE: the server resizes
    prompt: str | None  # None: the bundle's default instruction
    robot_id: str | None  # whose ring; None: this connection's own
    reset: bool  # empty the robot's ring before this frame (a new episode)
    id: int | None
    deadline_ms: float | None = None
    robot_token: str | None = None  # proves the robot when it resumes its ring on a new connection


@dataclass(frozen=True)
class ResetRequest:
    robot_id: str | None
    id: int | None
    robot_token: str | None = None


@dataclass(frozen=True)
class MetadataRequest:
    id: int | None


def _optional_str(message: dict, key: str, limit: int) -> str | None:
    value = message.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string, found {type(value).__name__}")
    if len(value) > limit:
        raise ProtocolError(f"field {key!r} has {len(value)} characters, the limit is {limit}")
    return value


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG checked up to its frame header and not yet decoded (decoding is the expensive part)."""

    data: bytes
    height: int
    width: int


def _image(message: dict, decode: bool) -> np.ndarray | EncodedJpeg:
    if "image" in message:
        image = message["image"]
        if not isinstance(image, np.ndarray):
            raise ProtocolError(f"field 'image' must be a uint8 (H, W, 3) array, found {type(image).__name__}")
        return check_image(image)
    if "jpeg" in message:
        jpeg = encoded_jpeg(message["jpeg"])
        return decode_image(jpeg) if decode else jpeg
    raise ProtocolError("the request has no 'image' (uint8 (H, W, 3) RGB array) and no 'jpeg' (bytes)")


def check_image(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ProtocolError(f"field 'image' must be a uint8 (H, W, 3) RGB array, found {image.dtype} "
                            f"{list(image.shape)}")
    if not (1 <= image.shape[0] <= MAX_IMAGE_SIDE and 1 <= image.shape[1] <= MAX_IMAGE_SIDE):
        raise ProtocolError(f"field 'image' must be 1..{MAX_IMAGE_SIDE} pixels a side, found {list(image.shape)}")
    return image


def image_pixels(image: np.ndarray | EncodedJpeg) -> int:
    """Pixels in a request's image, decoded or not: what decoding and resizing it will cost."""
    if isinstance(image, EncodedJpeg):
        return image.height * image.width
    return int(image.shape[0]) * int(image.shape[1])


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's frame header, read before decoding (a small file may claim a huge image)."""
    i = 2
    if data[:2] != b"\xff\xd8":
        raise ProtocolError("field 'jpeg' is not a JPEG (no start-of-image marker)")
    while i + 9 < len(data):
        if data[i] != 0xFF:
            raise ProtocolError(f"field 'jpeg': malformed marker at byte {i}")
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame header
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        if length < 2:
            break
        i += 2 + length
    raise ProtocolError("field 'jpeg' has no frame header")


def encoded_jpeg(data) -> EncodedJpeg:
    """The `jpeg` field checked from its header: bytes, a JPEG, 1..MAX_IMAGE_SIDE pixels a side."""
    if not isinstance(data, bytes):
        raise ProtocolError(f"field 'jpeg' must be bytes, found {type(data).__name__}")
    h, w = jpeg_size(data)
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise ProtocolError(f"field 'jpeg' must be 1..{MAX_IMAGE_SIDE} pixels a side, found {h}x{w}")
    return EncodedJpeg(data, h, w)


def decode_image(image: np.ndarray | EncodedJpeg, min_side: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array; a JPEG is decoded (its size was checked before: no decompression bomb).
    `min_side`: the size it will be resized to; a JPEG at least twice as large is decoded at 1/2, 1/4 or 1/8
    scale (libjpeg's DCT scaling averages, as INTER_AREA does: within 1/255 of a full decode + resize on a
    4096 x 4096 test image, in 17 ms instead of 290 ms), never below `min_side`."""
    if not isinstance(image, EncodedJpeg):
        return image
    import cv2  # noqa: PLC0415  cv2: JPEG frames only

    flag = cv2.IMREAD_COLOR
    for scale, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                           (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if min_side and min(image.height, image.width) >= scale * min_side:
            flag = reduced
            break
    bgr = cv2.imdecode(np.frombuffer(image.data, np.uint8), flag)
    if bgr is None or bgr.ndim != 3:
        raise ProtocolError("field 'jpeg' could not be decoded as a colour JPEG")
    return check_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def decode_jpeg(data) -> np.ndarray:
    return decode_image(encoded_jpeg(data))


def _request_id(message: dict) -> int | None:
    value = message.get("id")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**63) <= value < 2**64:
        raise ProtocolError(f"field 'id' must be an integer, found {type(value).__name__}")
    return value


def request_id_of(message) -> int | None:
    """The id to echo in an error reply, when the message has a usable one."""
    try:
        return _request_id(message) if isinstance(message, dict) else None
    except ProtocolError:
        return None


def _deadline_ms(message: dict) -> float | None:
    value = message.get("deadline_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or \
            not 0 <= float(value) <= MAX_DEADLINE_MS:
        raise ProtocolError(f"field 'deadline_ms' must be a number of milliseconds in [0, {MAX_DEADLINE_MS:.0f}], "
                            f"found {value!r}")
    return float(value)


def parse_request(message, decode: bool = True) -> FeatureRequest | ActionsRequest | ResetRequest | MetadataRequest:
    """Check a decoded message against the protocol. A JPEG is decoded here (off the event loop), or with
    `decode=False` left as an EncodedJpeg checked up to its header (decode_image() later, where it is cheap
    to wait)."""
    if not isinstance(message, dict):
        raise ProtocolError(f"a request must be a msgpack map, found {type(message).__name__}")
    kind = message.get("type", "actions")  # openpi's clients send no type: an observation asks for actions
    rid = _request_id(message)
    if kind == "actions":
        reset = message.get("reset", False)
        if not isinstance(reset, bool):
            raise ProtocolError(f"field 'reset' must be true or false, found {type(reset).__name__}")
        robot_id = _optional_str(message, "robot_id", ROBOT_ID_CHARS)
        token = _optional_str(message, "robot_token", ROBOT_ID_CHARS)
        deadline = _deadline_ms(message)
        prompt = _optional_str(message, "prompt", MAX_PROMPT_CHARS)
        return ActionsRequest(_image(message, decode), prompt, robot_id, reset, rid, deadline, token)
    if kind == "feature":
        deadline = _deadline_ms(message)
        prompt = _optional_str(message, "prompt", MAX_PROMPT_CHARS)
        return FeatureRequest(_image(message, decode), prompt, rid, deadline)
    if kind == "reset":
        return ResetRequest(_optional_str(message, "robot_id", ROBOT_ID_CHARS), rid,
                            _optional_str(message, "robot_token", ROBOT_ID_CHARS))
    if kind == "metadata":
        return MetadataRequest(rid)
    raise ProtocolError(f"field 'type' must be one of actions, feature, reset, metadata; found {kind!r}")


def metadata(bundle, backend: str, compute: dict, modes: list[str], limits: dict) -> dict:
    """The first message on every connection. `compute`: the backend's identity() (what the features are
    computed with); `modes`: the request types served; `limits`: max_message_bytes, ring_ttl_s, ..."""
    manifest = bundle.manifest
    return {
        "protocol": PROTOCOL,
        "protocol_version": PROTOCOL_VERSION,
        "model_sha256": model_identity(manifest),
        "bundle_json_sha256": hashlib.sha256((bundle.root / "bundle.json").read_bytes()).hexdigest(),
        "backend": backend,
        "variant": compute["variant"],
        "compute": compute,
        "window": bundle.window,
        "chunk": bundle.chunk,
        "action_axes": list(manifest["policy"].get("axis_names", [])) or bundle.action_axes,
        "action_units": list(manifest["actions"]["units"]),
        "action_range": bundle.action_range,
        "image_size": bundle.preprocess.size,
        "image_channel_order": "rgb",
        "feature_dim": int(bundle.outputs("language")[0].shape[-1]),
        "default_instruction": manifest["prompt"]["default_instruction"],
        "modes": list(modes),
        "deadlines": True,  # requests' deadline_ms is honoured: an expired one is answered, not computed
        **limits,
    }
