"""sensor_msgs Image / CompressedImage payloads to numpy, shared by the node and the bag reader.

Works on plain attributes (``data``, ``encoding``, ``height``, ``width``,
``step``, ``is_bigendian`` / ``format``), so rclpy messages and rosbags
messages decode through the same code. Anything a camera driver can get wrong
raises :class:`ImageDecodeError` with a one-line message and a short
``reason`` to count it by. Frames above the pixel budget are refused from
their size fields or compressed header, before any copy or decode.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..files.images import ImageReadError, decode_image_bytes

RAW_IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
# encoding -> (numpy dtype, channels, OpenCV conversion to the BGR order the matcher expects)
ENCODINGS: dict[str, tuple[str, int, int | None]] = {
    "mono8": ("uint8", 1, None),
    "8UC1": ("uint8", 1, None),
    "mono16": ("uint16", 1, None),
    "16UC1": ("uint16", 1, None),
    "bgr8": ("uint8", 3, None),
    "rgb8": ("uint8", 3, cv2.COLOR_RGB2BGR),
    "bgra8": ("uint8", 4, None),
    "rgba8": ("uint8", 4, cv2.COLOR_RGBA2BGRA),
}


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into pixels; ``reason`` names the kind of problem."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_image(message: Any, msgtype: str, topic: str = "", max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs Image/CompressedImage -> numpy (H, W) or (H, W, C), colour in BGR(A) order."""
    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed(payload(message.data), message.format, topic, max_pixels)
    return decode_raw(payload(message.data), message.encoding, int(message.height),
                      int(message.width), int(message.step), bool(message.is_bigendian), topic, max_pixels)


def decode_raw(data: np.ndarray, encoding: str, height: int, width: int, step: int,
               big_endian: bool = False, topic: str = "", max_pixels: int | None = None) -> np.ndarray:
    """Raw pixel buffer -> image; rows may be padded (step > width * pixel size)."""
    where = topic or "the image topic"
    if encoding not in ENCODINGS:
        raise ImageDecodeError(f"unsupported image encoding {encoding!r} on {where}; "
                               f"supported: {', '.join(ENCODINGS)} and CompressedImage", "unsupported encoding")
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image on {where} has no pixels: {width}x{height}", "empty")
    if max_pixels is not None and height * width > max_pixels:
        raise ImageDecodeError(f"image on {where} is {width}x{height} = {height * width} pixels, above "
                               f"max_image_pixels ({max_pixels})", "too large")
    dtype_name, channels, conversion = ENCODINGS[encoding]
    dtype = np.dtype(dtype_name).newbyteorder(">" if big_endian else "<")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes or data.size < step * (height - 1) + row_bytes:
        raise ImageDecodeError(f"image on {where} is malformed: {height}x{width} {encoding} "
                               f"with step {step} but {data.size} data bytes", "malformed")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
    image = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    return cv2.cvtColor(image, conversion) if conversion is not None else image


def decode_compressed(data: np.ndarray, fmt: str, topic: str = "", max_pixels: int | None = None) -> np.ndarray:
    """JPEG/PNG payload -> image as stored (8- or 16-bit, BGR order for colour)."""
    try:
        return decode_image_bytes(data, f"compressed image on {topic or 'the image topic'} (format {fmt!r})",
                                  max_pixels)
    except ImageReadError as error:
        raise ImageDecodeError(str(error), error.reason) from None


def payload(data: Any) -> np.ndarray:
    """uint8 view of a message's data, whatever container the middleware used (bytes, array, numpy)."""
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)
