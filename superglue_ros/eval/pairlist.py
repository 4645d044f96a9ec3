"""Pair lists with ground-truth poses, in the format of the SuperGlue reference's ``match_pairs.py``.

Each line is ``name0 name1 [rot0 rot1 [K0(9) K1(9) T_0to1(16)]]`` with
whitespace between fields; the ScanNet-1500, YFCC-4000 and MegaDepth test
lists use it. Images are read as 8-bit gray, resized and turned by
``np.rot90`` as the reference reads them, and the intrinsics and pose are
transformed to match, so that every score can be compared with the
paper's. Blank lines and lines starting with ``#`` are skipped (the
reference has neither).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..geometry.pose import rotate_intrinsics, rotate_relative_pose, scale_intrinsics
from ..io import ImageReadError, read_image
from .bagio import BagError, FrameError

FIELDS_WITH_TRUTH = 2 + 2 + 9 + 9 + 16


@dataclass(frozen=True)
class PoseTruth:
    """Intrinsics of both images and the pose from camera 0 to camera 1 (x1 = R x0 + t)."""

    k0: np.ndarray
    k1: np.ndarray
    t_0to1: np.ndarray


@dataclass(frozen=True)
class PairEntry:
    """One line of a pair list: image names, 90-degree turns and, when present, the ground truth."""

    name0: str
    name1: str
    rot0: int = 0
    rot1: int = 0
    truth: PoseTruth | None = None


def parse_line(line: str, number: int) -> PairEntry:
    """One pair line; ValueError naming the line and the field otherwise.

    Intrinsics must be [[fx 0 cx] [0 fy cy] [0 0 1]] with positive focal
    lengths, T_0to1 a rigid transform; rotations are whole turns in 0..3.
    """
    fields = line.split()
    where = f"line {number}"
    if len(fields) not in (2, 4, FIELDS_WITH_TRUTH):
        raise ValueError(f"{where}: expected 2, 4 or {FIELDS_WITH_TRUTH} fields (names, rotations, K0, K1, "
                         f"T_0to1), got {len(fields)}")
    turns = [0, 0]
    for i, text in enumerate(fields[2:4]):
        if not text.lstrip("-").isdigit() or not 0 <= int(text) <= 3:
            raise ValueError(f"{where}: rot{i} must be a whole number of 90-degree turns in 0..3, got {text!r}")
        turns[i] = int(text)
    if len(fields) != FIELDS_WITH_TRUTH:
        return PairEntry(fields[0], fields[1], *turns)
    k0, k1 = (_intrinsics(fields[start:start + 9], f"{where}: K{i}") for i, start in ((0, 4), (1, 13)))
    t_0to1 = _numbers(fields[22:], f"{where}: T_0to1").reshape(4, 4)
    rotation = t_0to1[:3, :3]
    if list(t_0to1[3]) != [0, 0, 0, 1] or np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3 or \
            np.linalg.det(rotation) <= 0:
        raise ValueError(f"{where}: T_0to1 must be a rigid transform [[R t] [0 0 0 1]], got {t_0to1.tolist()}")
    return PairEntry(fields[0], fields[1], *turns, PoseTruth(k0, k1, t_0to1))


def _numbers(fields: Sequence[str], what: str) -> np.ndarray:
    try:
        values = np.array([float(field) for field in fields])
    except ValueError:
        raise ValueError(f"{what} holds something that is not a number: {' '.join(fields)}") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} holds a non-finite number: {' '.join(fields)}")
    return values


def _intrinsics(fields: Sequence[str], what: str) -> np.ndarray:
    k = _numbers(fields, what).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[0, 1] != 0 or k[1, 0] != 0 or list(k[2]) != [0, 0, 1]:
        raise ValueError(f"{what} must be [[fx 0 cx] [0 fy cy] [0 0 1]] with fx, fy > 0, got {k.tolist()}")
    return k


def resized_size(width: int, height: int, resize: Sequence[int]) -> tuple[int, int]:
    """(W, H) the reference resizes to: (W, H) exactly, (N,) for the longer side (rounded half to even,
    as Python's round), (-1,) or (W, -1) to keep the size or the longer side W."""
    resize = list(resize)
    if len(resize) == 2 and resize[1] == -1:
        resize = resize[:1]
    if resize == [-1]:
        return width, height
    if len(resize) == 1 and resize[0] > 0:
        scale = resize[0] / max(height, width)
        return int(round(width * scale)), int(round(height * scale))
    if len(resize) == 2 and min(resize) > 0:
        return int(resize[0]), int(resize[1])
    raise ValueError(f"--resize must be W H, one number (the longer side) or -1 (keep), got {tuple(resize)}")


class PairListSource:
    """The entries of a pair list, and their images prepared as the reference prepares them."""

    def __init__(self, path: str | os.PathLike, images: str | os.PathLike, resize: Sequence[int]) -> None:
        self.path, self.images, self.resize = Path(path), Path(images), tuple(resize)
        resized_size(640, 480, self.resize)  # a bad --resize fails now, not at the first pair
        if not self.images.is_dir():
            raise BagError(f"--images {self.images}: not a folder")
        try:
            lines = self.path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise BagError(f"cannot read pair list {self.path}: {error}") from None
        try:
            self.entries = [parse_line(line, number) for number, line in enumerate(lines, 1)
                            if line.strip() and not line.lstrip().startswith("#")]
        except ValueError as error:
            raise BagError(f"pair list {self.path}, {error}") from None
        if not self.entries:
            raise BagError(f"pair list {self.path} has no pairs")

    def load(self, entry: PairEntry, max_pixels: int | None) -> tuple[list[np.ndarray], PoseTruth | None]:
        """Both images (uint8 gray, resized, turned) and the truth in their pixels; FrameError when unreadable."""
        images, sizes, scales = [], [], []
        for name, turns in ((entry.name0, entry.rot0), (entry.name1, entry.rot1)):
            try:
                gray = read_image(self.images / name, max_pixels, cv2.IMREAD_GRAYSCALE)
            except ImageReadError as error:
                raise FrameError(str(error), error.reason) from None
            height, width = gray.shape[:2]
            new_size = resized_size(width, height, self.resize)
            images.append(np.ascontiguousarray(np.rot90(cv2.resize(gray, new_size), k=turns)))
            sizes.append(new_size)
            # The reference swaps its scales for odd turns and still applies them to the unturned K:
            # kept, so that scores agree with its (it differs only for odd turns of non-uniform resizes).
            ratio = (width / new_size[0], height / new_size[1])
            scales.append(ratio[::-1] if turns % 2 else ratio)
        return images, self._truth(entry, sizes, scales)

    @staticmethod
    def _truth(entry: PairEntry, sizes: list[tuple[int, int]], scales: list[tuple[float, float]]) -> PoseTruth | None:
        if entry.truth is None:
            return None
        ks = []
        for k, (width, height), scale, turns in zip((entry.truth.k0, entry.truth.k1), sizes, scales,
                                                    (entry.rot0, entry.rot1)):
            k = scale_intrinsics(k, scale)
            ks.append(rotate_intrinsics(k, width, height, turns) if turns else k)
        t_0to1 = entry.truth.t_0to1
        if entry.rot0 or entry.rot1:
            t_0to1 = rotate_relative_pose(t_0to1, entry.rot0, entry.rot1)
        return PoseTruth(ks[0], ks[1], t_0to1)
