"""SuperPoint's post-processing with fixed output shapes and no host synchronisation.

The exact path lists the surviving keypoints with ``nonzero`` (a host
synchronisation whose output size depends on the data). Here every image gets
exactly ``max_keypoints`` slots and a validity mask: threshold and border
removal set a score to -inf instead of dropping the position, top-k runs over
the whole map, and slots beyond the number of survivors are marked invalid.
The valid keypoints are the exact path's, in its order (raster order when all
survivors fit the budget, descending score otherwise), so that a caller can
check one against the other and a GPU can replay the whole section as a graph.
One exception: where scores tie at the budget's cut-off (flat black or
saturated areas), ``topk`` picks which of the tied positions are kept, here
from the whole map and there from the list of survivors, so the two may keep
different positions with the same scores.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .superpoint import CELL, SuperPoint, max_pool_nms, pooled_max, sample_at_grid


class FixedKeypoints(NamedTuple):
    """Keypoints of a batch of images in ``max_keypoints`` slots each.

    keypoints (B, K, 2) float (x, y) pixels, scores (B, K) (0 in invalid
    slots), descriptors (B, K, D) unit rows, valid (B, K) bool. Valid slots
    come first; invalid ones hold some position of the map, so that every
    later stage can compute on them and mask their results.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor
    valid: torch.Tensor


def fixed_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """(B, 65, h, w) logits -> (B, 1, 8h, 8w) keypoint probabilities, the layout of ``SuperPoint.heatmap``
    (bin dy*8 + dx of a cell is pixel (8i + dy, 8j + dx)) in one shuffle."""
    return F.pixel_shuffle(torch.softmax(logits, dim=1)[:, :-1], CELL)


def candidate_scores(heat: torch.Tensor, threshold: float, border: int) -> torch.Tensor:
    """(B, 1, H, W) NMS'd probabilities -> (B, H*W) scores with -inf wherever the exact path drops a
    position (at most ``threshold``, or within ``border`` of an edge)."""
    b, _, height, width = heat.shape
    top, left = min(border, height), min(border, width)  # a border wider than the map leaves nothing
    inner = heat[..., top:max(top, height - border), left:max(left, width - border)]
    inner = inner.masked_fill(inner <= threshold, float("-inf"))
    pad_y = (top, height - top - inner.shape[-2])
    pad_x = (left, width - left - inner.shape[-1])
    return F.pad(inner, (*pad_x, *pad_y), value=float("-inf")).view(b, height * width)


def top_slots(candidates: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) candidate scores -> flat positions and scores of ``budget`` slots, valid ones first in the exact
    path's order: raster order when every survivor fits, descending score otherwise."""
    scores, position = torch.topk(candidates, budget, dim=1)
    survivors = (candidates != float("-inf")).sum(dim=1, keepdim=True)
    invalid = scores == float("-inf")
    raster = position.masked_fill(invalid, candidates.shape[1])  # invalid slots sort last
    rank = torch.arange(budget, device=candidates.device).expand_as(position)
    order = torch.where(survivors <= budget, raster, rank).argsort(dim=1)
    return position.gather(1, order), scores.gather(1, order)


def fixed_keypoints(logits: torch.Tensor, dense: torch.Tensor, config: dict) -> FixedKeypoints:
    """SuperPoint's keypoints from its two heads (see ``SuperPoint.forward``) in ``config["max_keypoints"]``
    slots per image; the positions ``SuperPoint.extract`` gives, with the same scores and descriptors.

    The image must be at least one 8x8 cell in both directions and the budget at most the number of
    pixels (a frame that does not fit goes through the exact path)."""
    budget = config["max_keypoints"]
    heat = max_pool_nms(fixed_heatmap(logits.float()), config["nms_radius"], pooled_max)
    width = heat.shape[-1]
    candidates = candidate_scores(heat, config["keypoint_threshold"], config["remove_borders"])
    position, scores = top_slots(candidates, budget)
    valid = scores != float("-inf")
    x, y = position % width, position // width
    keypoints = torch.stack([x, y], dim=-1).to(heat.dtype)
    return FixedKeypoints(keypoints, scores.masked_fill(~valid, 0.0),
                          sample_at_grid(dense.float(), descriptor_grid(x, y, dense.shape[-2:])), valid)


def descriptor_grid(x: torch.Tensor, y: torch.Tensor, map_size: torch.Size) -> torch.Tensor:
    """(B, K) integer pixel coordinates -> (B, K, 2) grid coordinates of ``sample_descriptors``'s mapping,
    with the same float operations (so the same bits), from Python scalars instead of a constant tensor."""
    offset = CELL / 2 - 0.5
    h, w = map_size
    gx = (x - offset) / (w * CELL - offset - 1) * 2 - 1
    gy = (y - offset) / (h * CELL - offset - 1) * 2 - 1
    return torch.stack([gx, gy], dim=-1)


def pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """The encoder's 2x2 max-pool as one operation (a GPU launch), the same values as the CPU's default."""
    return F.max_pool2d(x, kernel_size=2, stride=2)


def extract_fixed(superpoint: SuperPoint, images: torch.Tensor) -> FixedKeypoints:
    """(B, 1, H, W) images in [0, 1] -> their keypoints in the superpoint's ``max_keypoints`` slots, through
    the plain network (the fixed path's arithmetic on any device, without the CPU's oneDNN shortcut)."""
    if images.dtype != superpoint.convPa.weight.dtype:
        images = images.to(superpoint.convPa.weight.dtype)
    logits, dense = superpoint.forward_pooled(images, pool_2x2)
    return fixed_keypoints(logits, dense, superpoint.config)


def half_superpoint(superpoint: SuperPoint, dtype: torch.dtype) -> SuperPoint:
    """A copy of ``superpoint`` whose convolutions run in ``dtype`` with channels-last weights, for the
    fast modes on a GPU (tensor cores want both); the original stays float32 for the exact path.

    Only the heads' arithmetic changes: ``fixed_keypoints`` takes the logits and the descriptor map back
    to float32 before the softmax, NMS, top-k and sampling, so scores and selection keep float32's
    resolution."""
    return copy.deepcopy(superpoint).eval().to(dtype=dtype, memory_format=torch.channels_last)
