"""Image files and encoded image bytes turned into pixels, with one-line errors and a pixel bound.

Every failure a user can cause is an :class:`ImageReadError` with one line
naming the source and the problem, and a short reason to count it by.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .headers import encoded_size, truncation
from .outputs import OutputError, describe, write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
PIXEL_TYPES = (np.uint8, np.uint16, np.float32, np.float64)


class ImageReadError(ValueError):
    """An image file or payload that cannot be turned into pixels; one line for the user, and a
    short ``reason`` to count it by."""

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder in name order (frame order for sequences); an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder} is not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ImageReadError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def read_image(path: str | os.PathLike, max_pixels: int | None = None,
               flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """An image file as stored (8/16-bit or float, mono or colour in BGR(A) order; ``flags`` as
    ``cv2.imread``'s); a JPEG or PNG larger than ``max_pixels`` is refused from its header, before
    it is decoded."""
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"cannot read image {path}: it is a folder, not an image file", "not a file")
    if not path.is_file():
        raise ImageReadError(f"cannot read image {path}: no such file", "missing")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"cannot read image {path}: {describe(error)}") from None
    return decode_image_bytes(data, f"image {path}", max_pixels, flags)


def decode_image_bytes(data: np.ndarray, source: str, max_pixels: int | None = None,
                       flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, TIFF, ...) -> pixels; truncated files, images above
    ``max_pixels`` and pixel types the matcher cannot use are errors, not a half-grey picture,
    gigabytes of memory or a traceback later."""
    problem = truncation(data)
    if problem:
        raise ImageReadError(f"cannot read {source}: {problem}", "truncated")
    size = encoded_size(data)
    if max_pixels is not None and size is not None and size[0] * size[1] > max_pixels:
        raise ImageReadError(f"cannot read {source}: {size[1]}x{size[0]} = {size[0] * size[1]} pixels exceeds "
                             f"max_image_pixels ({max_pixels})", "too large")
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None or image.size == 0:
        raise ImageReadError(f"cannot read {source}: not a decodable image", "undecodable")
    if max_pixels is not None and image.shape[0] * image.shape[1] > max_pixels:
        raise ImageReadError(f"cannot read {source}: {image.shape[1]}x{image.shape[0]} pixels exceeds "
                             f"max_image_pixels ({max_pixels})", "too large")
    if image.dtype not in PIXEL_TYPES:
        raise ImageReadError(f"cannot read {source}: unsupported pixel type {image.dtype} "
                             f"(supported: 8- or 16-bit unsigned, or float)", "unsupported pixel type")
    return image


def write_image(target: str | os.PathLike, image: np.ndarray) -> None:
    """An image file in the format its suffix names, written atomically (never through a link or over a
    device, and never half-written)."""
    ok, encoded = cv2.imencode(Path(target).suffix.lower(), image)
    if not ok:
        raise OutputError(f"cannot encode {target}: use a .png or .jpg file name")
    write_bytes(target, encoded.tobytes())
