"""Plain containers passed between the detector, the matcher and the ROS layer.

They hold tensors in the layout callers want (one row per keypoint), not the
channel-first layout the networks use internally, so that numpy consumers
(geometry, message building) never need to transpose.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..settings import Setting

# The keypoint budget that Matcher, the CLI and the node give every extractor unless told otherwise.
# SuperPoint's own default, the reference's, stays -1 (no limit) for the model class used alone.
DEFAULT_BUDGET = 1024
# The one setting every keypoint extractor (SuperPoint, SIFT) has, with one meaning.
# Bounded above by the largest frame's pixel count: no image has more keypoints than pixels, and the
# value must fit the extractors' 32-bit counts (OpenCV's SIFT).
MAX_KEYPOINTS = Setting("max_keypoints", int, -1, "keypoint budget per image (the strongest are kept), "
                        "-1 for no limit", 1, 1 << 28, special=(-1,))


@dataclass(frozen=True)
class Features:
    """Keypoints of one image.

    keypoints: (N, 2) float32, (x, y) in pixels of the image that was fed.
    scores: (N,) float32 detector confidence in [0, 1].
    descriptors: (N, D) float32, L2-normalised rows.
    image_size: (H, W) of the image the keypoints live in; SuperGlue needs it
        to normalise keypoint positions.
    scale_orientation: (N, 2) float32 keypoint diameter in pixels and
        orientation in radians, for detectors that estimate them (SIFT), else
        None. A SuperGlue trained with them reads them: unlike a descriptor,
        the orientation difference of a true match agrees with its neighbours'.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    image_size: tuple[int, int]
    scale_orientation: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.keypoints.shape[0]
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 2:
            raise ValueError(f"keypoints must be (N, 2), got {tuple(self.keypoints.shape)}")
        if self.scores.shape != (n,):
            raise ValueError(f"scores must be ({n},), got {tuple(self.scores.shape)}")
        if self.descriptors.ndim != 2 or self.descriptors.shape[0] != n:
            raise ValueError(f"descriptors must be ({n}, D), got {tuple(self.descriptors.shape)}")
        if len(self.image_size) != 2 or min(self.image_size) < 0:
            raise ValueError(f"image_size must be (H, W), got {self.image_size}")
        if self.scale_orientation is not None and self.scale_orientation.shape != (n, 2):
            raise ValueError(f"scale_orientation must be ({n}, 2), got {tuple(self.scale_orientation.shape)}")

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def descriptor_dim(self) -> int:
        return int(self.descriptors.shape[1])

    @property
    def device(self) -> torch.device:
        return self.keypoints.device

    def to(self, device: torch.device | str) -> "Features":
        return Features(
            self.keypoints.to(device),
            self.scores.to(device),
            self.descriptors.to(device),
            self.image_size,
            None if self.scale_orientation is None else self.scale_orientation.to(device),
        )

    @staticmethod
    def empty(image_size: tuple[int, int], descriptor_dim: int, device: torch.device | str = "cpu",
              scale_orientation: bool = False) -> "Features":
        return Features(
            torch.zeros((0, 2), device=device),
            torch.zeros((0,), device=device),
            torch.zeros((0, descriptor_dim), device=device),
            image_size,
            torch.zeros((0, 2), device=device) if scale_orientation else None,
        )


@dataclass(frozen=True)
class MatchResult:
    """SuperGlue output for one image pair.

    matches0: (N,) int64 index into image 1 for each keypoint of image 0, -1 if unmatched.
    matches1: (M,) int64, the same seen from image 1.
    matching_scores0 / matching_scores1: confidence of the mutual best
        assignment (non-zero for every mutual match, even below threshold).
    log_assignment: (N+1, M+1) log-domain optimal-transport plan; the last row
        and column are the dustbins.
    """

    matches0: torch.Tensor
    matches1: torch.Tensor
    matching_scores0: torch.Tensor
    matching_scores1: torch.Tensor
    log_assignment: torch.Tensor

    @property
    def num_matches(self) -> int:
        return int((self.matches0 >= 0).sum())

    def pairs(self) -> torch.Tensor:
        """(K, 2) int64 index pairs (i in image 0, j in image 1) of accepted matches."""
        idx0 = torch.nonzero(self.matches0 >= 0).flatten()
        return torch.stack([idx0, self.matches0[idx0]], dim=1)

    def confidences(self) -> torch.Tensor:
        """(K,) scores of the pairs returned by :meth:`pairs`, in the same order."""
        return self.matching_scores0[self.matches0 >= 0]

    def to(self, device: torch.device | str) -> "MatchResult":
        return MatchResult(*(t.to(device) for t in (
            self.matches0, self.matches1, self.matching_scores0, self.matching_scores1, self.log_assignment)))
