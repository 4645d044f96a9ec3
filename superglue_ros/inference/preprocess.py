"""Camera images (numpy, any common encoding) -> the (H, W) float32 in [0, 1] SuperPoint expects.

Grayscale conversion uses OpenCV's BT.601 weights, the same as reading an
image with ``cv2.IMREAD_GRAYSCALE`` in the reference pipeline, so results
from ROS frames and from image files agree.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..files.images import DEFAULT_MAX_PIXELS
from ..settings import Setting

CHANNEL_ORDERS = ("bgr", "rgb")
MAX_IMAGE_PIXELS = Setting("max_image_pixels", int, DEFAULT_MAX_PIXELS, "frames with more pixels are dropped before "
                           "they are decoded or copied, which bounds memory for any input", 1, 1 << 28)
RESIZE_SIDE = (8, 16384)  # the one range of a network input side, wherever a resize is given
RESIZE_WIDTH = Setting("resize_width", int, 0, "network input width in pixels (with resize_height), 0 keeps "
                       "the camera's size", *RESIZE_SIDE, special=(0,))
RESIZE_HEIGHT = Setting("resize_height", int, 0, "network input height in pixels, 0 keeps the camera's size",
                        *RESIZE_SIDE, special=(0,))
_TO_GRAY = {
    (3, "bgr"): cv2.COLOR_BGR2GRAY, (3, "rgb"): cv2.COLOR_RGB2GRAY,
    (4, "bgr"): cv2.COLOR_BGRA2GRAY, (4, "rgb"): cv2.COLOR_RGBA2GRAY,
}


def to_gray_float(image: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Mono or colour, 8/16-bit or float image -> (H, W) float32 in [0, 1].

    channel_order: "bgr" or "rgb" for 3-/4-channel images (alpha is ignored).
    Float input is taken to be in [0, 1] already and is clipped to it.
    """
    gray = _scaled(checked_frame(image, channel_order))
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, _TO_GRAY[(gray.shape[2], channel_order)])
    return np.ascontiguousarray(gray, dtype=np.float32)


def checked_frame(image: np.ndarray, channel_order: str) -> np.ndarray:
    """The image as (H, W) or (H, W, 3|4) after checking its type, layout and channel order."""
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    return image


def _scaled(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    raise ValueError(f"unsupported image dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")


def check_image_size(shape: tuple[int, ...], max_pixels: int) -> None:
    """ValueError for frames above the pixel budget (and for negative sizes), before any copy is made."""
    height, width = (int(v) for v in shape[:2])
    if height < 0 or width < 0:
        raise ValueError(f"image size {width}x{height} is negative")
    if height * width > max_pixels:
        raise ValueError(f"image of {width}x{height} = {height * width} pixels exceeds max_image_pixels "
                         f"({max_pixels}); resize it first or raise the limit")


def resized_shape(height: int, width: int, resize: int | tuple[int, int] | None) -> tuple[int, int]:
    """Target (H, W): None keeps the size, (W, H) is exact, an int is the longer side (aspect kept)."""
    if resize is None:
        return height, width
    if isinstance(resize, int):
        scale = resize / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    target_w, target_h = resize
    return int(target_h), int(target_w)


def resize_gray(gray: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize, as the reference pipeline does; a no-op when the size already matches."""
    if gray.shape == tuple(shape_hw):
        return gray
    return cv2.resize(gray, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_LINEAR)
