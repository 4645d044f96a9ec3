"""The Matcher's ``fixed`` backend: frames into fixed keypoint slots, pairs matched by stacking slots.

On a GPU the exact path is bound by kernel launches and host synchronisations
(keypoint lists whose length depends on the data, Sinkhorn as a Python loop).
Here an 8-bit frame is uploaded once, made grey and resized on the device
(:mod:`.device_preprocess`), and its keypoints fill exactly ``max_keypoints``
slots with a validity mask (SuperPoint through ``extract_fixed``, XFeat through
its ``detect``); every pair has the same number of slots, so a batch of pairs
is a stack of slots, matched by :class:`FixedSuperGlue` with no padding.
Between the upload and the one download of a batch the host never waits for
the device (unless asked to profile) and no tensor is made from Python values,
so on CUDA extraction and matching
are each captured once per shape and replayed (:class:`CapturedCall`, which
counts every eager fallback); on the CPU the same arithmetic runs eagerly,
which is how CI tests it. The valid slots are the exact path's keypoints (but
for ties at the budget's cut-off, see :mod:`..models.fixed_keypoints`), and
the matches agree with it within the golden tolerances. Its cost follows
``max_keypoints``, not the number of keypoints found: every slot is matched.

A frame that does not fit (not 8-bit, smaller than one 8x8 cell, fewer pixels
than the budget) goes through the exact extractor instead, and a pair whose
frames lack slots, differ in network size or have no keypoint on a side goes
through the exact SuperGlue: the same results, without the fixed path's speed.
"""
from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..models.fixed_keypoints import FixedKeypoints, extract_fixed, half_superpoint
from ..models.fixed_superglue import FixedMatches, FixedSuperGlue
from ..models.superglue import SuperGlue
from ..models.superpoint import CELL, SuperPoint
from ..models.types import Features, MatchResult
from ..models.xfeat import XFeat
from .cuda_graph import CapturedCall
from .device_preprocess import Converter, Staging, checked_8bit
from .lru import LRU
from .preprocess import resized_shape

# Shapes captured per call: frame shapes and batch sizes of extraction, slot batches of matching; and the
# frame shapes whose staging buffers, and the network sizes whose matching graphs, are kept at once (the least
# recently used go first: a stream of ever new frame sizes must not keep adding pinned memory or CUDA graphs).
MAX_GRAPHS = 8
MAX_SIZES = 4


def check_fixed(extractor: Any, superglue: Any) -> None:
    """ValueError naming what keeps these models (with their settings) off the fixed path."""
    if not isinstance(extractor, (SuperPoint, XFeat)):
        raise ValueError(f"backend 'fixed' runs the extractor on the device into fixed keypoint slots: "
                         f"SuperPoint or XFeat, not {type(extractor).__name__} (SIFT runs on the CPU; "
                         f"use backend 'torch')")
    if extractor.config["max_keypoints"] < 1:
        raise ValueError(f"backend 'fixed' needs a keypoint budget: max_keypoints >= 1, got "
                         f"{extractor.config['max_keypoints']}")
    if superglue.config["sinkhorn_tolerance"] != 0:
        raise ValueError(f"backend 'fixed' runs every Sinkhorn iteration: sinkhorn_tolerance must be 0, got "
                         f"{superglue.config['sinkhorn_tolerance']}")
    if superglue.config["scale_orientation"]:
        raise ValueError("backend 'fixed': this SuperGlue reads keypoint scale and orientation, which "
                         f"{type(extractor).__name__} does not give")


class FixedPath:
    """Extraction into slots and matching of stacked slots for a Matcher (see the module's text).

    extractor / superglue: the loaded models, in eval mode on ``device``;
    dtype: the GNN's type (float32 keeps the exact results); resize and
    channel_order: the Matcher's. Call :meth:`prepare` after a setting of
    either model changed: captured graphs hold the settings they ran with.
    """

    def __init__(self, extractor: SuperPoint | XFeat, superglue: SuperGlue, device: torch.device,
                 dtype: torch.dtype, resize: int | tuple[int, int] | None, channel_order: str) -> None:
        check_fixed(extractor, superglue)
        self.extractor, self.superglue = extractor, superglue
        self.device, self.dtype, self.resize, self.channel_order = device, dtype, resize, channel_order
        # No captured graph reads a staging buffer (a graph copies its inputs into buffers of its own), so one
        # may go once its last copy is done; every extraction graph reads the one converter's weights, which
        # therefore live as long as this path.
        self._staging: LRU[tuple[int, ...], Staging] = LRU(MAX_SIZES, on_evict=Staging.wait)
        self._convert = Converter(device, channel_order)
        self.prepare()

    def prepare(self) -> None:
        """Snapshot the models' weights and settings, forget captured graphs (counts start again).

        With float16 (a GPU's fast mode) SuperPoint's convolutions run in float16, channels-last, on a
        copy (tensor cores want both; selection and sampling stay float32, so the keypoints stay float32's
        but for near ties); with bfloat16 (a CPU's fast mode) SuperPoint stays float32, as XFeat always
        does: bfloat16's 8-bit mantissa moves clearly more keypoints (test_fixed_precision measures both)."""
        self.glue = FixedSuperGlue(self.superglue, self.dtype)
        half = self.dtype == torch.float16 and isinstance(self.extractor, SuperPoint)
        self.network = half_superpoint(self.extractor, self.dtype) if half else self.extractor
        self._extract = CapturedCall(self.extract_frames, max_buckets=MAX_GRAPHS, warmup=2, clone_outputs=True)
        self._match: LRU[tuple[int, int], CapturedCall] = LRU(MAX_SIZES, on_evict=self._retire)
        self._retired: Counter[str] = Counter()  # the counts of matching calls of sizes no longer kept

    def stats(self) -> dict[str, int]:
        """How extraction and matching calls ran: captured, replayed, or eager and why."""
        total: Counter[str] = Counter(self._extract.stats) + self._retired
        for call in self._match.values():
            total.update(call.stats)
        return dict(total)

    def network_shape(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """The (H, W) the network sees for a frame of this size (the Matcher's resize setting)."""
        return resized_shape(frame_hw[0], frame_hw[1], self.resize)

    def fits(self, frame: np.ndarray) -> bool:
        """Whether the frame goes through the fixed extraction: 8-bit, at least one 8x8 cell, and at least
        as many pixels searched (the whole 8x8 cells) as keypoint slots."""
        height, width = (side // CELL * CELL for side in self.network_shape(frame.shape[:2]))
        return (frame.dtype == np.uint8 and min(height, width) >= CELL
                and height * width >= self.extractor.config["max_keypoints"])

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        """The 8-bit frame on the device (asynchronously on CUDA); it must fit (:meth:`fits`)."""
        frame = checked_8bit(frame, self.channel_order)
        return self._staging.get_or_make(frame.shape, lambda: Staging(self.device, frame.shape)).upload(frame)

    @torch.inference_mode()
    def extract(self, *frames: torch.Tensor) -> FixedKeypoints:
        """Uploaded frames of one shape -> their slots (B, K, ...), which stay valid (copies of a graph's
        outputs on CUDA)."""
        return FixedKeypoints(*self._extract(*frames))

    @torch.inference_mode()
    def match(self, slots0: FixedKeypoints, slots1: FixedKeypoints, network_hw: tuple[int, int]) -> FixedMatches:
        """B pairs of slots of frames of network size ``network_hw`` -> their matches on the device."""
        call = self._match.get_or_make(network_hw, lambda: CapturedCall(
            functools.partial(self.match_slots, image_size=network_hw), max_buckets=MAX_GRAPHS, warmup=2,
            clone_outputs=True))
        return FixedMatches(*call(*slots0, *slots1))

    def _retire(self, call: CapturedCall) -> None:
        """Keep the counts of a size's matching calls when its graphs go: stats count every call."""
        self._retired.update(call.stats)

    def extract_frames(self, *frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The captured extraction: uint8 frames -> network inputs on the device -> keypoints in slots."""
        network_hw = self.network_shape(tuple(frames[0].shape[:2]))
        images = torch.stack([self._convert(frame, network_hw) for frame in frames])[:, None]
        if isinstance(self.extractor, XFeat):
            height, width = network_hw[0] // CELL * CELL, network_hw[1] // CELL * CELL
            return tuple(self.extractor.detect(images[..., :height, :width], self.extractor.config["max_keypoints"]))
        return tuple(extract_fixed(self.network, images))

    def match_slots(self, *slots: torch.Tensor, image_size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """The captured matching: the two images' slots (keypoints, scores, descriptors, valid each)."""
        return tuple(self.glue(*slots, image_size))


def stack(slots: Sequence[FixedKeypoints]) -> FixedKeypoints:
    """Slots of several frames as one batch (no copy for one frame)."""
    return slots[0] if len(slots) == 1 else FixedKeypoints(*(torch.cat(parts) for parts in zip(*slots)))


def row(slots: FixedKeypoints, index: int, count: int) -> FixedKeypoints:
    """One frame's slots (batch of one) out of a batch of ``count``: views, no copy."""
    return slots if count == 1 else FixedKeypoints(*(t[index:index + 1] for t in slots))


def download(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """The batch's one copy back to the host: every tensor, then a single wait for all of them."""
    if not tensors or tensors[0].device.type != "cuda":
        return [t.numpy() for t in tensors]
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, tensor in zip(host, tensors):
        target.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [t.numpy() for t in host]


def slot_features(keypoints: np.ndarray, scores: np.ndarray, valid: np.ndarray, descriptors: torch.Tensor,
                  network_hw: tuple[int, int]) -> Features:
    """One frame's valid slots (they come first) as Features in network pixels: positions and scores from
    the host copy, the (K, D) descriptors left on the device."""
    n = int(valid.sum())
    return Features(torch.from_numpy(keypoints[:n].copy()), torch.from_numpy(scores[:n].copy()),
                    descriptors[:n], network_hw)


def slot_result(matches0: np.ndarray, matches1: np.ndarray, scores0: np.ndarray, scores1: np.ndarray,
                log_assignment: torch.Tensor, n: int, m: int) -> MatchResult:
    """One pair's matches over its n and m valid slots (valid slots come first, invalid ones never match);
    its (K+1, K+1) log assignment cut to (n+1, m+1), dustbins last, on the device."""
    slots = log_assignment.shape[-1] - 1
    plan = log_assignment
    if n < slots:
        plan = torch.cat([plan[:n], plan[slots:]])
    if m < slots:
        plan = torch.cat([plan[:, :m], plan[:, slots:]], dim=1)
    return MatchResult(torch.from_numpy(matches0[:n].astype(np.int64)), torch.from_numpy(matches1[:m].astype(np.int64)),
                       torch.from_numpy(scores0[:n].copy()), torch.from_numpy(scores1[:m].copy()), plan)
