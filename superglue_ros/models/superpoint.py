"""SuperPoint: a shared VGG-style encoder with a keypoint head and a descriptor head.

Parameter names follow the official ``superpoint_v1.pth`` so the published
state dict loads with ``strict=True``. Post-processing (softmax over 65 bins,
non-maximum suppression, border removal, top-k, bilinear descriptor sampling)
reproduces the reference behaviour, including its keypoint order: raster order
when at most ``max_keypoints`` survive, descending score otherwise.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import Setting, check_all, defaults, merge_config, reconfigure
from . import superpoint_onednn
from .types import MAX_KEYPOINTS, Features

CELL = 8  # the encoder downsamples by 8; each detector bin covers an 8x8 cell

SETTINGS: tuple[Setting, ...] = (
    Setting("descriptor_dim", int, 256, "descriptor length (fixed by the weights)", 1, None),
    Setting("nms_radius", int, 4, "SuperPoint non-maximum suppression radius [pixels]", 0, 64),
    Setting("keypoint_threshold", float, 0.005, "SuperPoint detector threshold on the keypoint probability",
            0.0, 1.0),
    MAX_KEYPOINTS,
    Setting("remove_borders", int, 4, "keypoints this close to the image border are dropped [pixels]", 0, None),
)
DEFAULT_CONFIG: dict[str, Any] = defaults(SETTINGS)
FIXED_BY_WEIGHTS = ("descriptor_dim",)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    return check_all(SETTINGS, config)


def max_filter_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Maximum over a window of 2*radius+1 along ``dim`` (-1 or -2), same size, nothing beyond the edges.

    By doubling: windows of span 1, 2, 4, ... then two overlapping ones, ceil(log2(2r+1)) passes instead of
    2r. Max is exact, so the values are those of the direct window. On bool maps it is a logical or.
    """
    if radius == 0:
        return x
    window, length = 2 * radius + 1, x.shape[dim]
    pad = (radius, radius) if dim == -1 else (0, 0, radius, radius)
    if x.dtype == torch.bool:
        m = F.pad(x.view(torch.uint8), pad, value=0).view(torch.bool)
    else:
        m = F.pad(x, pad, value=float("-inf"))
    span = 1
    while 2 * span <= window:
        n = m.shape[dim] - span
        m = torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, span, n))
        span *= 2
    if span < window:
        m = torch.maximum(m.narrow(dim, 0, length), m.narrow(dim, window - span, length))
    return m


def separable_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square window maximum of a (..., H, W) map as a row pass then a column pass: the same maxima as
    max_pool2d's square window (padding is -inf either way), much faster on the CPU."""
    return max_filter_1d(max_filter_1d(x, radius, -1), radius, -2)


def pooled_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Square window maximum of a (B, 1, H, W) map (float or bool) as one max_pool2d: one kernel on a GPU,
    where the launches of the separable passes would cost more than their arithmetic."""
    if x.dtype == torch.bool:
        return pooled_max(x.to(torch.float32), radius) > 0
    return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)


def max_pool_nms(scores: torch.Tensor, radius: int,
                 window_max: Callable[[torch.Tensor, int], torch.Tensor] = separable_max) -> torch.Tensor:
    """Keep local maxima of a (B, H, W) score map within ``radius``, zero the rest.

    Two extra rounds recover maxima that were only suppressed by a
    neighbour which itself got suppressed, as the reference does.
    ``window_max`` is the square max-pool (any exact one gives the same result).
    """
    def pool(x: torch.Tensor) -> torch.Tensor:
        return window_max(x, radius)

    zero = scores.new_zeros(())
    is_max = scores == pool(scores)
    for _ in range(2):
        suppressed = pool(is_max)  # some kept maximum lies within the window
        remaining = torch.where(suppressed, zero, scores)
        is_max = is_max | ((remaining == pool(remaining)) & ~suppressed)
    return torch.where(is_max, scores, zero)


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """2x2/stride-2 max-pool of (B, C, H, W), odd edges dropped like ``max_pool2d``.

    Two strided elementwise maxima give the same values as ``F.max_pool2d``
    (max is exact) in a third of its time on NCHW tensors, which matters at
    full resolution. ReLU is monotone, so the encoder pools before its ReLU
    and rectifies a quarter of the values. ONNX export keeps the MaxPool
    operator, which runtimes implement well.
    """
    if torch.onnx.is_in_onnx_export():
        return F.max_pool2d(x, kernel_size=2, stride=2)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    columns = torch.maximum(x[..., 0::2], x[..., 1::2])
    return torch.maximum(columns[..., 0::2, :], columns[..., 1::2, :])


def sample_descriptors(keypoints: torch.Tensor, dense: torch.Tensor, cell: int = CELL) -> torch.Tensor:
    """Bilinearly sample a (1, D, h, w) descriptor map at (N, 2) pixel keypoints -> (N, D).

    The reference maps pixel x to (x - (cell/2 - 0.5)) / (w*cell - cell/2 - 0.5) * 2 - 1
    with ``align_corners=True`` (not the geometrically centred mapping); using
    exactly that is what makes descriptors agree to 1e-5.
    """
    _, dim, h, w = dense.shape
    if keypoints.shape[0] == 0:
        return dense.new_zeros((0, dim))
    offset = cell / 2 - 0.5
    extent = keypoints.new_tensor([w * cell - cell / 2 - 0.5, h * cell - cell / 2 - 0.5])
    grid = (keypoints - offset) / extent * 2 - 1
    return sample_at_grid(dense, grid[None])[0]


def sample_at_grid(dense: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) map at (B, N, 2) grid coordinates in [-1, 1] (corner-aligned) -> (B, N, D) unit rows."""
    sampled = F.grid_sample(dense, grid[:, None], mode="bilinear", align_corners=True)
    return F.normalize(sampled[:, :, 0].transpose(1, 2), p=2, dim=2)


def select_keypoints(heatmap: torch.Tensor, threshold: float, border: int,
                     max_keypoints: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Threshold, drop borders and keep the top-k of one (H, W) NMS'd heatmap.

    Returns (N, 2) float (x, y) keypoints and their (N,) scores. Thresholding
    the interior view lists the keypoints in the raster order of filtering
    the whole map, which is the reference's order when no budget applies.
    """
    height, width = heatmap.shape
    inner = heatmap[border:max(border, height - border), border:max(border, width - border)]
    yx = torch.nonzero(inner > threshold)
    scores = inner[yx[:, 0], yx[:, 1]]
    if border:
        yx = yx + border
    if 0 <= max_keypoints < scores.shape[0]:
        scores, order = torch.topk(scores, max_keypoints, dim=0)
        yx = yx[order]
    return yx.flip(1).to(heatmap.dtype), scores


class SuperPoint(nn.Module):
    """Keypoint detector and descriptor (DeTone et al., 2018).

    ``extract`` is the public entry point; ``forward`` returns the raw heads
    so that exactness tests and ONNX export can reach them.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = validate_config(merge_config(DEFAULT_CONFIG, config, "SuperPoint"))
        widths = (64, 64, 128, 128)
        conv = lambda c_in, c_out, k=3: nn.Conv2d(c_in, c_out, k, stride=1, padding=k // 2)  # noqa: E731
        c_in = 1
        for stage, width in zip("1234", widths):
            setattr(self, f"conv{stage}a", conv(c_in, width))
            setattr(self, f"conv{stage}b", conv(width, width))
            c_in = width
        self.convPa = conv(c_in, 256)
        self.convPb = conv(256, CELL * CELL + 1, 1)
        self.convDa = conv(c_in, 256)
        self.convDb = conv(256, self.config["descriptor_dim"], 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) in [0, 1] -> detector logits (B, 65, H/8, W/8), unit-norm dense descriptors."""
        return self.forward_pooled(images, max_pool_2x2)

    def forward_pooled(self, images: torch.Tensor, pool: Callable[[torch.Tensor], torch.Tensor],
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` with ``pool`` as the 2x2 max-pool: any exact one gives the same result (one
        ``max_pool2d`` launch suits a GPU, ``max_pool_2x2`` is faster on a CPU)."""
        x = images
        for stage in "1234":
            x = F.relu_(getattr(self, f"conv{stage}a")(x))
            x = getattr(self, f"conv{stage}b")(x)
            x = F.relu_(x if stage == "4" else pool(x))
        logits = self.convPb(F.relu_(self.convPa(x)))
        dense = F.normalize(self.convDb(F.relu_(self.convDa(x))), p=2, dim=1)
        return logits, dense

    def configure(self, **changes: Any) -> None:
        """Change detection settings between frames; the weights fix the descriptor length."""
        self.config = reconfigure(self.config, SETTINGS, changes, "the SuperPoint extractor", FIXED_BY_WEIGHTS)

    @staticmethod
    def heatmap(logits: torch.Tensor) -> torch.Tensor:
        """(B, 65, h, w) logits -> (B, 8h, 8w) keypoint probabilities; bin 64 is 'no keypoint'."""
        b, _, h, w = logits.shape
        prob = torch.softmax(logits, dim=1)[:, :-1]
        prob = prob.view(b, CELL, CELL, h, w).permute(0, 3, 1, 4, 2)
        return prob.reshape(b, h * CELL, w * CELL)

    @torch.inference_mode()
    def extract(self, image: torch.Tensor) -> Features | list[Features]:
        """Detect and describe keypoints.

        image: (H, W) float tensor in [0, 1] -> Features, or (B, 1, H, W) -> list of Features.
        Images smaller than one 8x8 cell have no keypoints and give empty Features.
        """
        return extract_with(self.heads, image, self.config)

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` for inference: through oneDNN directly where the result is bit-identical and faster
        (CPU float32, see superpoint_onednn), else ``forward`` itself."""
        images = images.to(self.convPa.weight.dtype)
        if (images.device.type == "cpu" and images.dtype == torch.float32 and not torch.is_grad_enabled()
                and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()):
            heads = superpoint_onednn.inference_heads(self, images)
            if heads is not None:
                return heads
        return self(images)


def extract_with(heads: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], image: torch.Tensor,
                 config: dict[str, Any]) -> Features | list[Features]:
    """SuperPoint's extraction around any implementation of its two heads (torch, onnxruntime)."""
    if image.ndim == 2:
        return _extract_batch(heads, image[None, None], config)[0]
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"image must be (H, W) or (B, 1, H, W), got {tuple(image.shape)}")
    return _extract_batch(heads, image, config)


def _extract_batch(heads: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], images: torch.Tensor,
                   config: dict[str, Any]) -> list[Features]:
    b, _, height, width = images.shape
    if height < CELL or width < CELL:
        return [Features.empty((height, width), config["descriptor_dim"], images.device) for _ in range(b)]
    logits, dense = heads(images)
    heat = max_pool_nms(SuperPoint.heatmap(logits.float()), config["nms_radius"])
    features = []
    for i in range(b):
        keypoints, scores = select_keypoints(heat[i], config["keypoint_threshold"], config["remove_borders"],
                                             config["max_keypoints"])
        descriptors = sample_descriptors(keypoints, dense[i:i + 1].float())
        features.append(Features(keypoints, scores, descriptors, (height, width)))
    return features
