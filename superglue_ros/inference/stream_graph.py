"""The GPU path of a camera stream: each new frame against the previous one as one fixed set of kernels.

A frame is uploaded once (8-bit, through pinned memory), turned grey and
resized on the device, run through SuperPoint into ``max_keypoints`` slots
with a validity mask, and matched against the previous frame's slots by the
fixed-shape SuperGlue with Sinkhorn as one operation. Between the upload and
the download of the result nothing waits for the host and no tensor is made
from Python values, so on CUDA the whole step is captured once as a graph and
replayed for every later frame (:class:`CapturedCall`); on the CPU the same
arithmetic runs eagerly, which is how CI tests it. The exact path
(:class:`Matcher`) remains the reference: the fixed path's keypoints are the
exact path's, and its matches agree within the golden tolerances.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.fixed_keypoints import FixedKeypoints, extract_fixed
from ..models.fixed_superglue import FixedSuperGlue
from ..models.superglue import SuperGlue
from ..models.superpoint import SuperPoint
from .cuda_graph import CapturedCall
from .device_preprocess import DevicePreprocess

FAST_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class StreamMatch:
    """One stream pair on the host: keypoints of the previous and the new frame in original-image pixels,
    and the matches as index pairs with their confidences."""

    keypoints0: np.ndarray  # (N0, 2)
    keypoints1: np.ndarray  # (N1, 2)
    matches: np.ndarray  # (M, 2) indices into keypoints0 and keypoints1
    confidences: np.ndarray  # (M,)

    def matched_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.keypoints0[self.matches[:, 0]], self.keypoints1[self.matches[:, 1]], self.confidences


class StreamGraph:
    """``StreamGraph(superpoint, superglue, device, (H, W)).push(frame)``: the new frame's matches against
    the previous frame (None for the first frame of a stream).

    superpoint / superglue: the official architecture in eval mode (the SuperPoint's ``max_keypoints`` is the
    slot budget and must be set). precision: "fp32" keeps the exact results; "fp16" (CUDA) or "bf16" runs the
    GNN layers in that type, everything else in float32. Frames must all have one size.
    """

    def __init__(self, superpoint: SuperPoint, superglue: SuperGlue, device: torch.device | str,
                 shape_hw: tuple[int, int], precision: str = "fp32", capture: bool = True) -> None:
        if superpoint.config["max_keypoints"] < 1:
            raise ValueError("the fixed path needs a keypoint budget (max_keypoints >= 1)")
        if precision not in FAST_DTYPES:
            raise ValueError(f"precision must be one of {', '.join(FAST_DTYPES)}, got {precision!r}")
        self.device = torch.device(device)
        self.shape_hw = (int(shape_hw[0]), int(shape_hw[1]))
        self.superpoint = superpoint.to(self.device).eval()
        self.glue = FixedSuperGlue(superglue.to(self.device).eval(), FAST_DTYPES[precision])
        self.preprocess = DevicePreprocess(self.device, self.shape_hw)
        self.step = CapturedCall(self.hot_step, warmup=2) if capture else self.hot_step
        self.first = CapturedCall(self.extract, warmup=2) if capture else self.extract
        self.previous: FixedKeypoints | None = None
        self._original_hw: tuple[int, int] | None = None

    def reset(self) -> None:
        """Start a new stream: the next frame is a reference, not matched."""
        self.previous = None

    @torch.inference_mode()
    def push(self, frame: np.ndarray) -> StreamMatch | None:
        """Match ``frame`` (8-bit grey or colour, BGR) against the previous frame and keep it as the next
        reference."""
        original_hw = frame.shape[:2]
        if self._original_hw not in (None, original_hw):
            raise ValueError(f"every frame of a stream must have one size: {self._original_hw} then {original_hw}")
        self._original_hw = original_hw
        uploaded = self.preprocess.upload(frame)
        if self.previous is None:
            self.previous = FixedKeypoints(*(t.clone() for t in self.first(uploaded)))
            return None
        *current, matches0, scores0 = self.step(uploaded, *self.previous)
        result = self.download(self.previous, FixedKeypoints(*current), matches0, scores0)
        self.previous = FixedKeypoints(*(t.clone() for t in current))
        return result

    def extract(self, frame: torch.Tensor) -> FixedKeypoints:
        """The uploaded 8-bit frame -> its keypoints in fixed slots (batch of one)."""
        image = self.preprocess.convert(frame)
        return extract_fixed(self.superpoint, image[None, None])

    def hot_step(self, frame: torch.Tensor, keypoints0: torch.Tensor, scores0: torch.Tensor,
                 descriptors0: torch.Tensor, valid0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One stream pair on the device: the new frame's slots, and matches against the previous slots.
        Everything a graph replay needs comes in as tensors, and comes out as tensors of fixed shapes."""
        current = self.extract(frame)
        matched = self.glue(keypoints0, scores0, descriptors0, valid0, *current, self.shape_hw)
        return (*current, matched.matches0, matched.matching_scores0)

    def download(self, previous: FixedKeypoints, current: FixedKeypoints, matches0: torch.Tensor,
                 scores0: torch.Tensor) -> StreamMatch:
        """The one copy back to the host, then the valid slots and matches in original-image pixels."""
        host = [t[0].cpu().numpy() for t in (previous.keypoints, previous.valid, current.keypoints, current.valid,
                                             matches0, scores0)]
        keypoints0, valid0, keypoints1, valid1, matches, confidences = host
        scale = np.array([self._original_hw[1] / self.shape_hw[1], self._original_hw[0] / self.shape_hw[0]])
        index0 = np.flatnonzero(valid0)
        index1 = np.full(len(valid1), -1)
        index1[valid1] = np.arange(int(valid1.sum()))
        matched = index0[matches[index0] >= 0]
        pairs = np.stack([np.searchsorted(index0, matched), index1[matches[matched]]], axis=1)
        return StreamMatch(to_original(keypoints0[valid0], scale), to_original(keypoints1[valid1], scale),
                           pairs.astype(np.int64), confidences[matched].astype(np.float32))


def to_original(keypoints: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Network-input pixels -> original-image pixels, with the exact path's convention (pixel centres)."""
    return ((keypoints + 0.5) * scale - 0.5).astype(np.float32)
