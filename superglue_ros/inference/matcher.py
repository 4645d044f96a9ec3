"""One object that turns camera frames into matches: weights, device, preprocessing, caching.

Features are computed in the network's pixel frame (after the optional
resize) and matched there, exactly as the reference does; what callers get
back is mapped to the original image's pixels. Frames given a ``key`` (for
example a ROS stamp) are cached, so a stream matched pairwise runs
SuperPoint once per frame rather than twice per pair.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..models.types import Features, MatchResult
from .preprocess import resize_gray, resized_shape, to_gray_float
from .model_files import BUNDLED, load_open_model, resolve_open_model
from ..models.sift import SIFT
from ..models.superglue import SuperGlue
from ..models.superglue import validate_config as validate_superglue_config
from ..models.superpoint import SuperPoint
from .timing import StageClock
from ..settings import check_choice, check_number
from .weights import WeightsError, file_identity, find_official, load_into, search_dirs

SUPERGLUE_WEIGHTS = ("indoor", "outdoor")
MODEL_CHOICES = ("auto", *SUPERGLUE_WEIGHTS, *BUNDLED)
LOGGER = logging.getLogger("superglue_ros")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse and check a device string; asking for CUDA on a machine without it is an error."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r} ({error})") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available "
                             f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use device='cpu'")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {str(device)!r} requested but only {count} CUDA device(s) exist")
    elif parsed.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return parsed


@dataclass(frozen=True)
class Frame:
    """Features of one frame in network pixels (for matching) and original pixels (for callers)."""

    network: Features
    original: Features


@dataclass(frozen=True)
class PairMatch:
    """Result of matching two frames; keypoints are in original image pixels."""

    features0: Features
    features1: Features
    result: MatchResult
    timings: dict[str, float] = field(default_factory=dict)

    def matched_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, 2) points in image 0, (K, 2) in image 1 and (K,) confidences of accepted matches."""
        pairs = self.result.pairs().cpu().numpy()
        pts0 = self.features0.keypoints.cpu().numpy()[pairs[:, 0]]
        pts1 = self.features1.keypoints.cpu().numpy()[pairs[:, 1]]
        return pts0, pts1, self.result.confidences().cpu().numpy()


class Matcher:
    """SuperPoint + SuperGlue on a device, fed with numpy images.

    weights: "indoor" or "outdoor" official SuperGlue weights, found through
        ``weights_dir`` -> $SUPERGLUE_ROS_WEIGHTS_DIR -> ~/.cache/superglue_ros;
        "sift_open" or "sift_open_large" (bundled SIFT + SuperGlue trained by this
        project), or the path of a model file written by ``superglue-ros train``; "auto"
        (default): official indoor when found, else sift_open with a notice.
    superpoint_weights / superglue_weights: explicit files, overriding the lookup.
    resize: None, (W, H), or an int for the longer side; keypoints are mapped back.
    superpoint / superglue: model configuration overrides (reference names).
    cache_size: how many keyed frames keep their features.
    precision: "fp32" (exact, default), or "bf16" / "fp16" autocast for SuperGlue's
        projections and attention (keypoint normalisation and Sinkhorn stay
        float32). SuperPoint stays float32 but runs channels-last in the fast
        modes: its descriptors in bf16 changed ~8% of the matches (measured),
        channels-last costs ~1% while being ~1.5x faster.
    profile: split SuperGlue's time into GNN and Sinkhorn and, on CUDA, synchronise
        around every stage so that per-stage times are true (costs a little).
    backend: "torch", or "onnxruntime" to run the exported ONNX graphs (fp32 only),
        read from ``onnx_dir`` when it holds an export of the same weights and
        Sinkhorn iterations, exported there (or to a temporary folder) otherwise.
    """

    def __init__(self, weights: str = "auto", weights_dir: str | os.PathLike | None = None,
                 superpoint_weights: str | os.PathLike | None = None,
                 superglue_weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", resize: int | tuple[int, int] | None = None,
                 superpoint: dict[str, Any] | None = None, superglue: dict[str, Any] | None = None,
                 cache_size: int = 16, channel_order: str = "bgr", precision: str = "fp32",
                 profile: bool = False, backend: str = "torch", onnx_dir: str | os.PathLike | None = None) -> None:
        check_choice("backend", backend, ("torch", "onnxruntime"))
        if backend == "onnxruntime" and precision != "fp32":
            raise ValueError(f"backend 'onnxruntime' runs the exported fp32 graphs; got precision {precision!r}")
        check_choice("precision", precision, tuple(PRECISIONS))
        check_number("cache_size", cache_size, 0, None, integer=True)
        check_choice("channel_order", channel_order, ("bgr", "rgb"))
        _check_resize(resize)
        self.device = resolve_device(device)
        self.resize = resize
        self.channel_order = channel_order
        self.cache_size = cache_size
        self._cache: OrderedDict[Hashable, Frame] = OrderedDict()
        models = load_models(weights, weights_dir, superpoint_weights, superglue_weights, superpoint or {},
                             superglue or {})
        self.extractor, self.superglue = models.extractor, models.superglue.to(self.device)
        if isinstance(self.extractor, torch.nn.Module):
            self.extractor.to(self.device)
            if precision != "fp32":
                self.extractor.to(memory_format=torch.channels_last)
        self.precision = precision
        self.profile = profile
        self.model_name, self.weights_id = models.name, models.identity
        self.backend = backend
        if backend == "onnxruntime":
            if not isinstance(self.extractor, SuperPoint):
                raise ValueError(f"backend 'onnxruntime' exports SuperPoint + SuperGlue; {self.model_name} has no "
                                 f"SuperPoint")
            from .backends.onnx import onnx_runners

            self.extractor, self.superglue = onnx_runners(  # type: ignore[assignment]
                self.extractor, self.superglue, models.files, onnx_dir, self.device)

    def extract(self, image: np.ndarray, key: Hashable | None = None) -> Features:
        """Keypoints of one image, in its original pixels."""
        return self._frame(image, key, {}).original

    def match(self, image0: np.ndarray, image1: np.ndarray,
              key0: Hashable | None = None, key1: Hashable | None = None) -> PairMatch:
        """Match two images; frames with a key already seen reuse their cached features."""
        timings = {"preprocess": 0.0, "features": 0.0}
        frame0 = self._frame(image0, key0, timings)
        frame1 = self._frame(image1, key1, timings)
        with StageClock(timings, "superglue", self.device if self.profile else None), self._autocast():
            result = self.superglue.match(frame0.network, frame1.network, timings if self.profile else None)
        return PairMatch(frame0.original, frame1.original, result, timings)

    def match_features(self, features0: Features, features1: Features) -> MatchResult:
        """SuperGlue on features the caller computed (network pixels of their own images)."""
        with self._autocast():
            return self.superglue.match(features0, features1)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32")

    def clear_cache(self) -> None:
        self._cache.clear()

    def _frame(self, image: np.ndarray, key: Hashable | None, timings: dict[str, float]) -> Frame:
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        sync_device = self.device if self.profile else None
        with StageClock(timings, "preprocess", sync_device):
            gray = to_gray_float(image, self.channel_order)
            height, width = gray.shape
            tensor = upload(resize_gray(gray, resized_shape(height, width, self.resize)), self.device)
        with StageClock(timings, "features", sync_device):
            network = self.extractor.extract(tensor)
        frame = Frame(network, to_original_pixels(network, (height, width)))
        if key is not None and self.cache_size:
            self._cache[key] = frame
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return frame


def upload(gray: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host image -> device tensor; through pinned memory on CUDA so the copy is asynchronous."""
    tensor = torch.from_numpy(gray)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def to_original_pixels(features: Features, original_hw: tuple[int, int]) -> Features:
    """Map keypoints from the resized frame to the original one (pixel centres stay centres)."""
    if tuple(features.image_size) == tuple(original_hw):
        return features
    sy = original_hw[0] / features.image_size[0]
    sx = original_hw[1] / features.image_size[1]
    offset = features.keypoints.new_tensor([0.5, 0.5])
    keypoints = (features.keypoints + offset) * features.keypoints.new_tensor([sx, sy]) - offset
    frames = features.scale_orientation
    if frames is not None:
        frames = frames * frames.new_tensor([(sx * sy) ** 0.5, 1.0])
    return Features(keypoints, features.scores, features.descriptors, original_hw, frames)


@dataclass(frozen=True)
class LoadedModels:
    """The two networks of a Matcher and what to call them in messages and reports."""

    extractor: SuperPoint | SIFT
    superglue: SuperGlue
    name: str
    identity: str
    files: tuple[Path, ...]


def load_models(weights: str, weights_dir: str | os.PathLike | None,
                superpoint_weights: str | os.PathLike | None, superglue_weights: str | os.PathLike | None,
                superpoint: dict[str, Any], superglue: dict[str, Any]) -> LoadedModels:
    """Official SuperPoint + SuperGlue, or a self-contained open model; see :class:`Matcher` for ``weights``."""
    is_model_file = weights not in MODEL_CHOICES and str(weights).endswith(".pt")
    if not is_model_file:
        check_choice("weights", weights, MODEL_CHOICES)
    if weights == "auto":
        explicit = superpoint_weights is not None or superglue_weights is not None
        weights = "indoor" if explicit or _official_available(weights_dir) else "sift_open"
        if weights == "sift_open":
            LOGGER.warning("official SuperPoint/SuperGlue weights not found (%s); using the bundled open model "
                           "sift_open. For the official ones: superglue-ros weights download (non-commercial "
                           "licence)", ", ".join(str(d) for d in search_dirs(weights_dir)))
    if weights in BUNDLED or is_model_file:
        return _open_models(weights, superpoint, superglue)
    sp_path = Path(superpoint_weights) if superpoint_weights is not None else find_official("superpoint", weights_dir)
    sg_path = Path(superglue_weights) if superglue_weights is not None else find_official(weights, weights_dir)
    extractor, matcher = SuperPoint(**superpoint), SuperGlue(**superglue)
    load_into(extractor, sp_path)
    load_into(matcher, sg_path)
    name = f"superpoint+superglue_{weights}" if superglue_weights is None else "superpoint+superglue"
    return LoadedModels(extractor.eval(), matcher.eval(), name, f"{file_identity(sp_path)}+{file_identity(sg_path)}",
                        (sp_path, sg_path))


def _open_models(weights: str, superpoint: dict[str, Any], superglue: dict[str, Any]) -> LoadedModels:
    """A model file from ``superglue-ros train``; overrides apply where the front end has the knob."""
    path = resolve_open_model(weights)
    extractor, matcher, _ = load_open_model(path)
    for name, value in superglue.items():
        matcher.config[name] = value
    validate_superglue_config(matcher.config)
    if isinstance(extractor, SIFT) and "max_keypoints" in superpoint:
        extractor = SIFT(**{**extractor.config, "max_keypoints": superpoint["max_keypoints"]})
    front = "sift" if isinstance(extractor, SIFT) else "superpoint"
    name = f"{front}+superglue_{path.stem}"
    return LoadedModels(extractor, matcher, name, file_identity(path), (path,))


def _official_available(weights_dir: str | os.PathLike | None) -> bool:
    try:
        find_official("superpoint", weights_dir)
        find_official("indoor", weights_dir)
    except WeightsError:
        return False
    return True


def _check_resize(resize: int | tuple[int, int] | None) -> None:
    if resize is None:
        return
    if isinstance(resize, int) and not isinstance(resize, bool):
        check_number("resize", resize, 8, 16384, integer=True)
        return
    if not isinstance(resize, (tuple, list)) or len(resize) != 2:
        raise ValueError(f"resize must be None, an int (longer side) or (W, H), got {resize!r}")
    for name, value in zip(("resize width", "resize height"), resize):
        check_number(name, value, 8, 16384, integer=True)
