"""Rendered 3D scene pairs as training examples: real parallax and occlusion, labelled from depth.

A folder written by ``superglue-ros pairs scenes`` holds image pairs, their
depth maps and a pair list with intrinsics and poses. Keypoints are labelled
by reprojection through depth (mutual nearest within 3 px is a match, an
occluded or far keypoint is unmatched), the way homography pairs are
labelled through their warp, so both kinds train the same loss. One pair in
ten (by its line number) is kept for validation and never trained on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..data.depth_truth import ground_truth_matches
from ..data.pair_list import PairEntry, parse_line
from ..data.scenes import depth_path
from ..files.images import DEFAULT_MAX_PIXELS, read_image
from ..files.inputs import read_text

VALIDATION_EVERY_NTH = 10


@dataclass(frozen=True)
class SceneTruth:
    """What labels the keypoints of a rendered pair: both depth maps, the intrinsics and the relative pose."""

    depth0: np.ndarray
    depth1: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    t_0to1: np.ndarray

    def labels(self, keypoints0: np.ndarray, keypoints1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ground_truth_matches(keypoints0, keypoints1, self.depth0, self.depth1, self.k0, self.k1, self.t_0to1)

    def swapped(self) -> "SceneTruth":
        """The same pair seen from image 1: the matcher must not prefer one direction."""
        return SceneTruth(self.depth1, self.depth0, self.k1, self.k0, np.linalg.inv(self.t_0to1))


class SceneSet:
    """The pairs of a rendered folder, loaded one at a time (the set may be larger than memory)."""

    def __init__(self, folder: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.folder, self.max_pixels = Path(folder), max_pixels
        lines = read_text(self.folder / "pairs.txt", what="pair list").splitlines()
        entries = [parse_line(line, number) for number, line in enumerate(lines, 1) if line.strip()]
        if not entries or any(entry.truth is None for entry in entries):
            raise ValueError(f"{self.folder}/pairs.txt needs rendered pairs with ground truth (superglue-ros pairs "
                             f"scenes)")
        self.train = [e for i, e in enumerate(entries) if i % VALIDATION_EVERY_NTH]
        self.validation = [e for i, e in enumerate(entries) if not i % VALIDATION_EVERY_NTH]

    def load(self, entry: PairEntry) -> tuple[np.ndarray, np.ndarray, SceneTruth]:
        """uint8 gray images and the truth of one pair."""
        paths = self.folder / entry.name0, self.folder / entry.name1
        images = [read_image(path, self.max_pixels, cv2.IMREAD_GRAYSCALE) for path in paths]
        depths = [np.load(depth_path(str(path))) for path in paths]
        truth = entry.truth
        return images[0], images[1], SceneTruth(depths[0], depths[1], truth.k0, truth.k1, truth.t_0to1)

    def sample(self, entries: Sequence[PairEntry], rng: np.random.Generator,
               ) -> tuple[np.ndarray, np.ndarray, SceneTruth]:
        """A random pair, in a random order of its two images."""
        image0, image1, truth = self.load(entries[int(rng.integers(len(entries)))])
        if rng.random() < 0.5:
            return image1, image0, truth.swapped()
        return image0, image1, truth
