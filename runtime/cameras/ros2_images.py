"""sensor_msgs/Image and CompressedImage -> the (H, W, 3) uint8 BGR frame the policy takes.

    from runtime.cameras.ros2_images import image_to_bgr, IMAGE_ENCODINGS
    bgr = image_to_bgr(msg, "/camera/image_raw")        # UnsupportedImage names the encoding and the topic

What camera drivers commonly send is converted: `bgr8`, `rgb8`, `bgra8`,
`rgba8` (alpha dropped), `mono8`, `mono16` / `16UC1` (the high byte: the
top of a 16-bit range, as image_view shows it), `yuv422_yuy2` / `yuyv`
(YUYV, what most USB webcams deliver raw, e.g. usb_cam) and `uyvy` /
`yuv422` (UYVY; in sensor_msgs `yuv422` is UYVY). Anything else (Bayer
patterns, float depth, 16-bit colour) is refused by name: have the driver
publish one of these, or its compressed topic. Pure numpy and OpenCV: no
rclpy import here.
"""

from __future__ import annotations

import numpy as np

from runtime.hardware import CameraError


class UnsupportedImage(CameraError):
    """An image the camera cannot turn into BGR (encoding, size, stamp): ends the drive with this message."""


# encoding -> (bytes per pixel, how it becomes BGR)
IMAGE_ENCODINGS = {
    "bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1, "mono16": 2, "16UC1": 2,
    "yuv422_yuy2": 2, "yuyv": 2, "uyvy": 2, "yuv422": 2,
}


def _pixels(msg, topic: str, encoding: str) -> np.ndarray:
    """The message's rows without their padding, as (H, W, bytes per pixel) uint8."""
    size = IMAGE_ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(msg.data, np.uint8)
    if step < w * size or data.size < h * step:
        raise UnsupportedImage(f"ros2 camera {topic}: {encoding} image {w}x{h} with step {step} needs "
                               f"{h * max(step, w * size)} bytes, got {data.size}")
    return data[: h * step].reshape(h, step)[:, : w * size].reshape(h, w, size)


def image_to_bgr(msg, topic: str) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 BGR; encodings not in IMAGE_ENCODINGS raise UnsupportedImage."""
    import cv2  # noqa: PLC0415  cv2: encodings that need conversion only

    encoding = msg.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise UnsupportedImage(f"ros2 camera {topic}: image encoding {encoding!r} is not supported (expected one of "
                               f"{', '.join(IMAGE_ENCODINGS)}); have the camera driver publish bgr8 or rgb8, or "
                               f"subscribe to its compressed topic ({topic}/compressed)")
    px = _pixels(msg, topic, encoding)
    if encoding == "bgr8":
        return px.copy()  # the message's buffer is reused by rclpy
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(px[..., 2::-1])
    if encoding == "bgra8":
        return np.ascontiguousarray(px[..., :3])
    if encoding == "mono8":
        return np.ascontiguousarray(np.repeat(px, 3, axis=2))
    if encoding in ("mono16", "16UC1"):
        high = px[..., 0] if msg.is_bigendian else px[..., 1]  # the high byte of each 16-bit sample
        return np.ascontiguousarray(np.repeat(high[..., None], 3, axis=2))
    code = cv2.COLOR_YUV2BGR_YUYV if encoding in ("yuv422_yuy2", "yuyv") else cv2.COLOR_YUV2BGR_UYVY
    return cv2.cvtColor(np.ascontiguousarray(px), code)


def compressed_to_bgr(msg, topic: str) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, ...) -> (H, W, 3) uint8 BGR."""
    import cv2  # noqa: PLC0415  cv2: CompressedImage only

    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UnsupportedImage(f"ros2 camera {topic}: compressed image (format {msg.format!r}, {len(msg.data)} bytes) "
                               f"could not be decoded by OpenCV")
    return image
