"""The policy server's wire format: msgpack maps with numpy arrays in openpi's encoding (docs/serving.md).

    from runtime.policy.wire import packb, unpackb, WireError
    data = packb({"image": rgb_uint8, "prompt": "reach the bottle"})
    message = unpackb(data)          # arrays come back as read-only numpy arrays; WireError on anything odd

An array travels as a map `{b"__ndarray__": True, b"data": raw bytes, b"dtype":
numpy's dtype string ("|u1", "<f4"), b"shape": [dims]}` and a numpy scalar as
`{b"__npgeneric__": True, b"data": value, b"dtype": ...}`: the keys are
msgpack *bin* strings, exactly as `openpi_client.msgpack_numpy` writes them, so
openpi's `WebsocketClientPolicy` and this project's robot client read each
other's messages. Everything else is plain msgpack (str keys, ints, floats,
lists, bytes).

Decoding is strict where openpi's is not, because a server reads whatever a
network sends: only bool, integer and float dtypes (never object, void or
complex), at most `MAX_DIMS` dimensions, no negative sizes, and the data must
hold exactly the bytes the shape and dtype say. A message that breaks a rule
raises `WireError` naming what was found, never a crash or a huge allocation.
numpy and msgpack only: the robot side imports this.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import msgpack
import numpy as np

PROTOCOL = "mobile-vla-serve"  # the metadata's "protocol": a client refuses any other server
PROTOCOL_VERSION = 1  # raised on any change a version-1 peer would misread (docs/serving.md)
MAX_IMAGE_SIDE = 4096  # pixels: a larger image is refused before it is decoded or resized
MAX_PROMPT_CHARS = 1024  # characters of an instruction
MAX_DIMS = 8
ALLOWED_KINDS = ("b", "i", "u", "f")  # bool, signed, unsigned, float
API_KEY_ENV = "MOBILE_VLA_API_KEY"  # where the server and the robot read the key when no key file is given


class WireError(ValueError):
    """A message that is not valid msgpack or carries a malformed array; the text says what was found."""


def _pack_default(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in ALLOWED_KINDS:
        raise WireError(f"cannot send a numpy {obj.dtype} value: only bool, integer and float arrays travel")
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(f"cannot send a {type(obj).__name__}: only msgpack types and numpy arrays travel")


def _dtype(value) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise WireError(f"array dtype must be a string such as '<f4', got {type(value).__name__}")
    try:
        dtype = np.dtype(value)
    except TypeError as e:
        raise WireError(f"array dtype {value!r} is not a numpy dtype ({e})") from None
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"array dtype {value!r} is not allowed: only bool, integer and float arrays travel")
    return dtype


def _unpack_hook(obj: dict):
    if b"__ndarray__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        shape, data = obj.get(b"shape"), obj.get(b"data")
        if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS or \
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise WireError(f"array shape must be a list of at most {MAX_DIMS} non-negative ints, got {shape!r}")
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes, got {type(data).__name__}")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise WireError(f"array data has {len(data)} bytes, shape {list(shape)} of {dtype.str} needs {expected}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = _dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj.get(b"data"))
        except (TypeError, ValueError, OverflowError) as e:
            raise WireError(f"numpy scalar of {dtype.str}: {e}") from None
    return obj


def model_identity(manifest: dict) -> str:
    """sha256 over the fp32 graphs' and the tokenizer's own sha256 in bundle.json: two bundles with the same
    identity produce the same ACT features, so a robot may run its head on a server's features."""
    files = manifest["files"]
    names = sorted(set(manifest["variants"]["fp32"]["files"].values()) | {"tokenizer.json"})
    text = "\n".join(f"{name} {files[name]['sha256']}" for name in names if name in files)
    return hashlib.sha256(text.encode()).hexdigest()


def read_api_key(path: str | Path | None, env: str = API_KEY_ENV) -> str | None:
    """The shared key from a file (its first line, whitespace stripped) or else the environment variable `env`;
    None when neither gives one. A key on the command line is visible to every user of the machine (ps)."""
    if path is not None:
        path = Path(path)
        try:
            key = path.read_text().strip().splitlines()
        except OSError as e:
            raise ValueError(f"{path}: cannot read the key file: {e.strerror}") from None
        if not key or not key[0].strip():
            raise ValueError(f"{path}: the key file is empty; write the key on its first line")
        return key[0].strip()
    return os.environ.get(env) or None


def packb(message) -> bytes:
    """A message (dict of msgpack types and numpy arrays) -> bytes."""
    return msgpack.packb(message, default=_pack_default, use_bin_type=True)


def unpackb(data: bytes, max_bytes: int | None = None):
    """Bytes -> the message; WireError for anything that is not a well-formed message."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary message, got {type(data).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes is over the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False)
    except WireError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise WireError(f"not a msgpack message: {type(e).__name__}: {e}") from None
