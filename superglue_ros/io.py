"""Files in and out: atomic writes, staged output folders, and image files read with clear errors.

Every output appears under its final name only once complete (written
beside it under a temporary name, then renamed), with the permissions the
user's umask asks for. A folder of outputs is staged and published item by
item, and nothing the tool did not create is ever replaced: a target that
is, holds or lies inside an input is refused before any work starts.
Every failure a user can cause is an :class:`OutputError` or
:class:`ImageReadError` with one line naming the path and the problem.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
STAGING_PREFIX = ".superglue-ros-staging-"
PIXEL_TYPES = (np.uint8, np.uint16, np.float32, np.float64)


class OutputError(Exception):
    """An output that cannot be written where asked; the message is one line for the user."""


class ImageReadError(ValueError):
    """An image file or payload that cannot be turned into pixels; one line for the user, and a
    short ``reason`` to count it by."""

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


def describe(error: OSError) -> str:
    """An OSError as a short phrase: 'No space left on device', 'Read-only file system'..."""
    return error.strerror or str(error) or type(error).__name__


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; renamed to ``target`` when the block succeeds,
    removed when it fails. OSErrors (full disk, read-only folder) become one-line OutputErrors."""
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {describe(error)}") from None
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, file_mode())
        os.replace(temporary, target)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {describe(error)}") from None
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def write_json(target: str | os.PathLike, document: Any) -> None:
    """Strict JSON (non-finite numbers become null: JSON has no NaN or Infinity), written atomically."""
    write_bytes(target, (json.dumps(finite(document), indent=1) + "\n").encode())


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python ones, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return finite(value.item())
    return value


def check_writable(target: str | os.PathLike) -> None:
    """Fail before the work, not after it: ``target``'s folder must exist (or be creatable) and be writable."""
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {target}: {folder} is not writable")


def refuse_inputs(targets: Iterable[Path], inputs: Iterable[str | os.PathLike], folder: Path | None = None) -> None:
    """Inputs are never touched: an output that would replace an input, hold one (an output folder
    named like the input bag) or go inside one is refused, and so is an output ``folder`` that is an
    input or lies inside one."""
    resolved = [Path(path).resolve() for path in inputs]
    for target, replaced in [(Path(t).resolve(), True) for t in targets] + (
            [(folder.resolve(), False)] if folder is not None else []):
        for source in resolved:
            if target == source or target.is_relative_to(source) or (replaced and source.is_relative_to(target)):
                raise OutputError(f"refusing to write {target}: it would replace or go inside the input {source}; "
                                  f"choose another --out")


class StagedFolder:
    """Outputs written into a hidden folder inside ``out_dir`` and renamed into place by :meth:`publish`.

    A run killed before publishing leaves its staging folder; the next run in
    the same ``out_dir`` removes those whose process is gone. An existing item
    of the wrong kind (a file where a folder goes, or the reverse) is refused
    at the start, before any work.
    """

    def __init__(self, out_dir: str | os.PathLike, items: dict[str, str]) -> None:
        """``items``: name -> "file" or "folder", the outputs this run may publish."""
        self.out_dir = Path(out_dir)
        self.items = items
        for name, kind in items.items():
            existing = self.out_dir / name
            if existing.exists() and existing.is_dir() != (kind == "folder"):
                raise OutputError(f"cannot write {existing}: a {'file' if kind == 'folder' else 'folder'} of that "
                                  f"name is in the way; move it or choose another --out")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_staging(self.out_dir)
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out_dir))
        except OSError as error:
            raise OutputError(f"cannot create output folder {self.out_dir}: {describe(error)}") from None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def publish(self, last: str) -> None:
        """Rename the staged items into place, ``last`` at the end: its presence marks a complete run."""
        try:
            (self.out_dir / last).unlink(missing_ok=True)
            for name in sorted(self.items, key=lambda item: item == last):
                source, target = self.path / name, self.out_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                if source.exists():
                    if source.is_file():
                        os.chmod(source, file_mode())
                    os.replace(source, target)
        except OSError as error:
            raise OutputError(f"cannot write into {self.out_dir}: {describe(error)}") from None

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale_staging(out_dir: Path) -> None:
    """Remove staging folders left in ``out_dir`` by runs whose process no longer exists."""
    for folder in out_dir.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def truncation(data: np.ndarray) -> str:
    """Why an encoded JPEG or PNG is cut short, or "" (OpenCV would decode the rest as grey)."""
    raw = data.tobytes()
    if raw[:2] == b"\xff\xd8" and b"\xff\xd9" not in raw[-4096:]:
        return "truncated JPEG (no end-of-image marker)"
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in raw[-32:]:
        return "truncated PNG (no IEND chunk)"
    return ""


def encoded_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding it; None for other formats."""
    raw = data[:1 << 20].tobytes()
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[20:24], "big"), int.from_bytes(raw[16:20], "big")
    if raw[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(raw):
        if raw[offset] != 0xFF:
            return None
        marker = raw[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return int.from_bytes(raw[offset + 5:offset + 7], "big"), int.from_bytes(raw[offset + 7:offset + 9], "big")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        offset += 2 + int.from_bytes(raw[offset + 2:offset + 4], "big")
    return None
