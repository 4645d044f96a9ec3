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
from .inputs import InputFileError, regular_file
from .outputs import OutputError, describe, shown, write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
PIXEL_TYPES = (np.uint8, np.uint16, np.float32, np.float64)
# The package's bound on a frame (max_image_pixels' default): one 3072 x 2048 frame through SuperPoint +
# SuperGlue stays under about 2 GB (README, "Memory").
DEFAULT_MAX_PIXELS = 3072 * 2048
MAX_BYTES_PER_PIXEL = 32  # four float64 channels: no image file of N pixels needs more, headers aside
NO_FINITE_PIXELS = "no finite pixels"  # the reason such a frame is counted under
HEADER_ALLOWANCE = 16 << 20  # metadata, thumbnails and colour profiles on top of the pixels


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


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """An image file as stored (8/16-bit or float, mono or colour in BGR(A) order; ``flags`` as
    ``cv2.imread``'s); an image larger than ``max_pixels`` is refused from its header, before it is
    decoded, and so is a file too large to hold an image of that size."""
    path = Path(path)
    try:
        regular_file(path, "image")
    except InputFileError as error:
        reason = "missing" if "no such file" in str(error) else "not a file"
        raise ImageReadError(str(error).replace("it is a folder, not a regular file",
                                                "it is a folder, not an image file"), reason) from None
    limit = None if max_pixels is None else max_pixels * MAX_BYTES_PER_PIXEL + HEADER_ALLOWANCE
    try:
        with path.open("rb") as stream:
            data = np.frombuffer(stream.read(-1 if limit is None else limit + 1), dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"cannot read image {shown(path)}: {describe(error)}") from None
    if limit is not None and data.size > limit:
        raise ImageReadError(f"cannot read image {shown(path)}: over {limit >> 20} MiB, more than an image of "
                             f"max_image_pixels ({max_pixels}) can hold", "too large")
    return decode_image_bytes(data, f"image {shown(path)}", max_pixels, flags)


def decode_image_bytes(data: np.ndarray, source: str, max_pixels: int | None = None,
                       flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, TIFF, WebP, ...) -> pixels; truncated files, images above
    ``max_pixels`` (read from the header: a format whose header gives no size is refused when there is a
    bound) and pixel types the matcher cannot use are errors, not a half-grey picture, gigabytes of memory
    or a traceback later."""
    problem = truncation(data)
    if problem:
        raise ImageReadError(f"cannot read {source}: {problem}", "truncated")
    size = encoded_size(data)
    if max_pixels is not None and size is None:
        raise ImageReadError(f"cannot read {source}: not a decodable image (no image size in its header)",
                             "undecodable")
    if max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageReadError(f"cannot read {source}: {size[1]}x{size[0]} = {size[0] * size[1]} pixels exceeds "
                             f"max_image_pixels ({max_pixels})", "too large")
    image = quiet_decode(data, flags) if data.size else None
    if image is None or image.size == 0:
        raise ImageReadError(f"cannot read {source}: not a decodable image", "undecodable")
    if max_pixels is not None and image.shape[0] * image.shape[1] > max_pixels:
        raise ImageReadError(f"cannot read {source}: {image.shape[1]}x{image.shape[0]} pixels exceeds "
                             f"max_image_pixels ({max_pixels})", "too large")
    if image.dtype not in PIXEL_TYPES:
        raise ImageReadError(f"cannot read {source}: unsupported pixel type {image.dtype} "
                             f"(supported: 8- or 16-bit unsigned, or float)", "unsupported pixel type")
    if no_finite_pixels(image):
        raise ImageReadError(f"cannot read {source}: {NO_FINITE_PIXELS} (all NaN or infinite)", NO_FINITE_PIXELS)
    return image


def no_finite_pixels(image: np.ndarray) -> bool:
    """A float image with nothing but NaN and infinities: it would give keypoints of nothing, and become a
    stream's reference frame."""
    return image.dtype.kind == "f" and not np.isfinite(image).any()


def quiet_decode(data: np.ndarray, flags: int) -> np.ndarray | None:
    """cv2.imdecode without OpenCV's or libjpeg's warnings on stderr (a damaged file is one error line,
    said by the caller) and without its exceptions (OpenCV's own size limit, damaged headers)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(data, flags)
    except cv2.error:
        return None
    finally:
        cv2.utils.logging.setLogLevel(level)


def write_image(target: str | os.PathLike, image: np.ndarray) -> None:
    """An image file in the format its suffix names, written atomically (never through a link or over a
    device, and never half-written)."""
    ok, encoded = cv2.imencode(Path(target).suffix.lower(), image)
    if not ok:
        raise OutputError(f"cannot encode {target}: use a .png or .jpg file name")
    write_bytes(target, encoded.tobytes())
