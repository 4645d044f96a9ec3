"""Pair lists with ground-truth poses as an evaluation source (format: :mod:`superglue_ros.data.pair_list`).

Images are read as 8-bit gray, resized and turned by ``np.rot90`` as the
reference's ``match_pairs.py`` reads them, and the intrinsics and pose are
transformed to match, so that every score can be compared with the paper's.
Blank lines and lines starting with ``#`` are skipped (the reference has
neither).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..data.pair_list import PairEntry, PoseTruth, parse_line
from ..geometry.pose import rotate_intrinsics, rotate_relative_pose, scale_intrinsics
from ..files.images import ImageReadError, read_image
from ..inference.preprocess import resized_shape
from ..files.inputs import InputFileError, read_text
from .bagio import BagError, FrameError


def resized_size(width: int, height: int, resize: Sequence[int]) -> tuple[int, int]:
    """(W, H) the reference resizes to: (W, H) exactly, (N,) for the longer side (rounded half to even,
    as Python's round), (-1,) or (W, -1) to keep the size or the longer side W."""
    resize = list(resize)
    if len(resize) == 2 and resize[1] == -1:
        resize = resize[:1]
    if resize == [-1]:
        return width, height
    if (len(resize) == 1 and resize[0] > 0) or (len(resize) == 2 and min(resize) > 0):
        height, width = resized_shape(height, width, int(resize[0]) if len(resize) == 1 else tuple(resize))
        return width, height  # OpenCV's dsize order
    raise ValueError(f"--resize must be W H, one number (the longer side) or -1 (keep), got {tuple(resize)}")


class PairListSource:
    """The entries of a pair list, and their images prepared as the reference prepares them."""

    def __init__(self, path: str | os.PathLike, images: str | os.PathLike, resize: Sequence[int]) -> None:
        self.path, self.images, self.resize = Path(path), Path(images), tuple(resize)
        resized_size(640, 480, self.resize)  # a bad --resize fails now, not at the first pair
        if not self.images.is_dir():
            raise BagError(f"--images {self.images}: not a folder")
        try:
            lines = read_text(self.path, what="pair list").splitlines()
        except InputFileError as error:
            raise BagError(str(error)) from None
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
