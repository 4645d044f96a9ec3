"""SIFT (OpenCV) as an openly licensed front end with the same ``Features`` output as SuperPoint.

Descriptors are RootSIFT (Arandjelovic & Zisserman, 2012): L1-normalise,
then take the square root. The result is L2-unit, like SuperPoint's, and its
dot product is the Hellinger kernel, which compares histograms better than
the Euclidean distance on raw SIFT.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import cv2
import numpy as np
import torch

from ..settings import Setting, check_all, defaults, merge_config, reconfigure
from .types import DEFAULT_BUDGET, MAX_KEYPOINTS, Features

DESCRIPTOR_DIM = 128
SETTINGS: tuple[Setting, ...] = (
    replace(MAX_KEYPOINTS, default=DEFAULT_BUDGET),
    Setting("contrast_threshold", float, 0.04, "SIFT's contrast threshold: lower finds more keypoints in "
            "plain images", 0.0, 1.0),
    Setting("edge_threshold", float, 10.0, "SIFT's edge threshold", 0.0, None),
    Setting("sigma", float, 1.6, "SIFT's Gaussian scale of the first octave", 0.0, None),
    Setting("n_octave_layers", int, 3, "SIFT's layers per octave", 1, 10),
)


class SIFT:
    """Keypoints, scores in [0, 1] and 128-d RootSIFT descriptors of a gray image.

    Keypoints are sorted by decreasing detector response (ties by position),
    so the output is deterministic and truncating it keeps the strongest.
    OpenCV repeats a keypoint for each dominant orientation; only the first
    is kept, because two keypoints at one position make the ground truth of
    training and evaluation ambiguous (either could be "the" match).
    """

    def __init__(self, **config: Any) -> None:
        self.config: dict[str, Any] = check_all(SETTINGS, merge_config(defaults(SETTINGS), config, "SIFT"))
        self._sift = self._detector()

    def configure(self, **changes: Any) -> None:
        """Change settings between frames; OpenCV's detector, whose budget is fixed when it is made,
        is made again."""
        self.config = reconfigure(self.config, SETTINGS, changes, "the SIFT extractor")
        self._sift = self._detector()

    def _detector(self) -> Any:
        budget = self.config["max_keypoints"]
        # OpenCV's budget counts orientation duplicates, removed later: ask for room to spare (0: no limit).
        return cv2.SIFT_create(nfeatures=2 * budget if budget > 0 else 0,
                               nOctaveLayers=self.config["n_octave_layers"],
                               contrastThreshold=self.config["contrast_threshold"],
                               edgeThreshold=self.config["edge_threshold"], sigma=self.config["sigma"])

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTOR_DIM

    def extract(self, image: torch.Tensor | np.ndarray) -> Features | list[Features]:
        """(H, W) float tensor in [0, 1] or uint8 numpy gray image -> Features on the CPU;
        a (B, 1, H, W) batch -> one Features per image."""
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            return [self._extract(frame[0]) for frame in image]
        return self._extract(image)

    def _extract(self, image: torch.Tensor | np.ndarray) -> Features:
        gray = to_uint8(image)
        size = (int(gray.shape[0]), int(gray.shape[1]))
        if gray.size == 0:
            return Features.empty(size, DESCRIPTOR_DIM, scale_orientation=True)
        keypoints, descriptors = self._sift.detectAndCompute(gray, None)
        if not keypoints:
            return Features.empty(size, DESCRIPTOR_DIM, scale_orientation=True)
        xy = np.array([kp.pt for kp in keypoints], dtype=np.float32)
        response = np.array([kp.response for kp in keypoints], dtype=np.float32)
        frames = np.array([(kp.size, np.deg2rad(kp.angle)) for kp in keypoints], dtype=np.float32)
        order = np.lexsort((xy[:, 1], xy[:, 0], -response))
        order = order[first_occurrences(xy[order])]
        if self.config["max_keypoints"] > 0:
            order = order[: self.config["max_keypoints"]]
        return Features(
            torch.from_numpy(xy[order]),
            torch.from_numpy(normalise_scores(response[order])),
            torch.from_numpy(root_sift(descriptors[order])),
            size,
            torch.from_numpy(frames[order]))


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The 8-bit gray image OpenCV's SIFT works on."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W) gray, got shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"image must be uint8 or float in [0, 1], got {image.dtype}")


def first_occurrences(xy: np.ndarray) -> np.ndarray:
    """Sorted indices of the first row of each distinct (x, y) position."""
    _, first = np.unique(xy, axis=0, return_index=True)
    return np.sort(first)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """(N, 128) SIFT histograms -> L2-unit RootSIFT rows (float32)."""
    d = np.maximum(descriptors.astype(np.float32), 0.0)
    d = np.sqrt(d / np.maximum(d.sum(axis=1, keepdims=True), 1e-12))
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


def normalise_scores(response: np.ndarray) -> np.ndarray:
    """Detector responses -> [0, 1] by dividing by the image's strongest response."""
    top = float(response.max()) if response.size else 0.0
    return (response / top if top > 0 else np.zeros_like(response)).astype(np.float32)
