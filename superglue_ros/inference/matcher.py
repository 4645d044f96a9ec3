"""One object that turns camera frames into matches: weights, device, preprocessing, caching, batching.

Features are computed in the network's pixel frame (after the optional
resize) and matched there, exactly as the reference does; what callers get
back is mapped to the original image's pixels. Frames given a ``key`` (for
example a ROS stamp) are cached, so a stream matched pairwise runs the
extractor once per frame rather than twice per pair. Several pairs (one per
camera, say) are matched with one extractor call per image size and one
padded SuperGlue batch, with the results each pair gets alone.
"""
from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..models.fixed_keypoints import FixedKeypoints
from ..models.types import DEFAULT_BUDGET, Features, MatchResult
from ..settings import Setting, check_choice, check_number
from ..timing import StageClock
from .backends.protocol import Extractor, PairMatcher
from .fixed_path import FixedPath, check_fixed, download, row, slot_features, slot_result, stack
from .loading import load_models
from .lru import LRU
from .preprocess import (MAX_IMAGE_PIXELS, RESIZE_SIDE, check_image_size, checked_frame, resize_gray, resized_shape,
                         to_gray_float)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE = Setting("device", str, "cpu", "cpu, cuda or cuda:N")
PRECISION = Setting("precision", str, "fp32", "fp32 is exact; bf16 (CPU) or fp16 (CUDA) is faster",
                    choices=tuple(PRECISIONS))
BACKEND = Setting("backend", str, "torch", "torch (exact); fixed: keypoints in max_keypoints slots (every slot "
                  "is matched: the cost follows max_keypoints), no host synchronisation, replayed as CUDA graphs on "
                  "CUDA (SuperPoint or XFeat models; frames that do not fit go through torch); onnxruntime: exported "
                  "fp32 graphs, near-exact",
                  choices=("torch", "fixed", "onnxruntime"))
ONNX_DIR = Setting("onnx_dir", str, "", "backend onnxruntime: folder for the exported graphs, reused across "
                   "starts (empty: export to a temporary folder at every start)")


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
    """Features of one frame in network pixels (for matching) and original pixels (for callers); on the
    fixed backend also its keypoint slots on the device (None for a frame the exact extractor took)."""

    network: Features
    original: Features
    slots: FixedKeypoints | None = None


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


@dataclass(frozen=True)
class PairRequest:
    """Two images to match, with optional cache keys (a frame seen under a key is not extracted again)."""

    image0: np.ndarray
    image1: np.ndarray
    key0: Hashable | None = None
    key1: Hashable | None = None


class Matcher:
    """A keypoint extractor (SuperPoint, SIFT or XFeat) + SuperGlue on a device, fed with numpy images.

    weights: "indoor" or "outdoor" official SuperGlue weights, found through
        ``weights_dir`` -> $SUPERGLUE_ROS_WEIGHTS_DIR -> ~/.cache/superglue_ros;
        "sift_open" / "xfeat_open" (bundled SIFT / XFeat + SuperGlue trained by this project), or the path
        of a model file written by ``superglue-ros train``; "auto" (default):
        official indoor when found, else sift_open with a notice.
    superpoint_weights / superglue_weights: explicit files, overriding the lookup.
    resize: None, (W, H), or an int for the longer side; keypoints are mapped back.
    extractor / superglue: setting overrides of the two models (reference names); a
        setting the model does not have is refused with the reason. ``max_keypoints``
        defaults to 1024 (``DEFAULT_BUDGET``) for every extractor, as in the CLI and the node.
    cache_size: how many keyed frames keep their features.
    precision: "fp32" (exact, default), or "bf16" / "fp16" autocast for SuperGlue's
        projections and attention (keypoint normalisation and Sinkhorn stay
        float32). SuperPoint stays float32 but runs channels-last in the fast
        modes, because bf16 descriptors change a share of the matches.
    profile: split SuperGlue's time into GNN and Sinkhorn and, on CUDA, synchronise
        around every stage so that per-stage times are true (costs a little).
    backend: "torch"; "fixed" for the GPU path (see :mod:`.fixed_path`): SuperPoint
        or XFeat into ``max_keypoints`` slots and SuperGlue on stacked slots, no host
        synchronisation, CUDA graphs on CUDA, its GNN in the precision's type; the
        keypoints are the exact ones, the matches within the golden tolerances, and
        results (but descriptors and log assignments, left on the device) come to the
        host once per batch. "onnxruntime" runs the exported ONNX graphs (fp32 only),
        read from ``onnx_dir`` when it holds an export of the same weights and
        Sinkhorn iterations, exported there (or to a temporary folder) otherwise.
    max_image_pixels: larger frames are refused before any conversion or copy.
    """

    def __init__(self, weights: str = "auto", weights_dir: str | os.PathLike | None = None,
                 superpoint_weights: str | os.PathLike | None = None,
                 superglue_weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", resize: int | tuple[int, int] | None = None,
                 extractor: dict[str, Any] | None = None, superglue: dict[str, Any] | None = None,
                 cache_size: int = 16, channel_order: str = "bgr", precision: str = "fp32",
                 profile: bool = False, backend: str = "torch", onnx_dir: str | os.PathLike | None = None,
                 max_image_pixels: int = MAX_IMAGE_PIXELS.default) -> None:
        BACKEND.check(backend)
        PRECISION.check(precision)
        if backend == "onnxruntime" and precision != "fp32":
            raise ValueError(f"backend 'onnxruntime' runs the exported fp32 graphs; got precision {precision!r}")
        check_number("cache_size", cache_size, 0, None, integer=True)
        check_choice("channel_order", channel_order, ("bgr", "rgb"))
        check_resize(resize)
        self.max_image_pixels = MAX_IMAGE_PIXELS.check(max_image_pixels)
        self.device = resolve_device(device)
        self.resize = resize
        self.channel_order = channel_order
        self.precision = precision
        self.profile = profile
        self.backend = backend
        self._cache: LRU[Hashable, Frame] = LRU(cache_size)
        extractor = {"max_keypoints": DEFAULT_BUDGET, **(extractor or {})}  # as the CLI and the node
        models = load_models(weights, weights_dir, superpoint_weights, superglue_weights, extractor, superglue)
        self.model_name, self.weights_id, self.weight_files = models.name, models.identity, models.files
        self.extractor: Extractor = models.extractor
        self.superglue: PairMatcher = models.superglue.to(self.device)
        if isinstance(models.extractor, torch.nn.Module):
            models.extractor.to(self.device)
            if precision != "fp32":
                models.extractor.to(memory_format=torch.channels_last)
        if backend == "onnxruntime":
            from .backends.onnx_runners import onnx_runners

            self.extractor, self.superglue = onnx_runners(models.extractor, models.superglue, models.files,
                                                          onnx_dir, self.device)
        self.fixed = FixedPath(models.extractor, models.superglue, self.device, PRECISIONS[precision], resize,
                               channel_order) if backend == "fixed" else None

    def configure(self, extractor: dict[str, Any] | None = None, superglue: dict[str, Any] | None = None) -> None:
        """Change model settings between frames; a value or a setting a model refuses leaves both as they were.

        A changed extractor setting empties the feature cache, since cached
        features were detected under the old one.
        """
        previous = dict(self.extractor.config), dict(self.superglue.config)

        def undo_extractor() -> None:
            self.extractor.configure(**{k: v for k, v in previous[0].items() if k in (extractor or {})})

        if extractor:
            self.extractor.configure(**extractor)  # a refusing model keeps its settings
        try:
            if superglue:
                self.superglue.configure(**superglue)
        except ValueError:
            undo_extractor()
            raise
        if self.fixed is not None:
            try:
                check_fixed(self.extractor, self.superglue)
            except ValueError:  # both models took the changes, so they take their old values back
                undo_extractor()
                self.superglue.configure(**{k: v for k, v in previous[1].items() if k in (superglue or {})})
                raise
        if extractor and self.extractor.config != previous[0]:
            self.clear_cache()
        if self.fixed is not None and (extractor or superglue):
            self.fixed.prepare()

    def extract(self, image: np.ndarray, key: Hashable | None = None) -> Features:
        """Keypoints of one image, in its original pixels."""
        if self.fixed is not None:
            frames, fresh, repeats = self._fixed_frames([image], [key], {})
            return self._finish_frames(frames, fresh, download(fresh_tensors(fresh)), [key], repeats)[0].original
        return self._frames([image], [key], {})[0].original

    def match(self, image0: np.ndarray, image1: np.ndarray,
              key0: Hashable | None = None, key1: Hashable | None = None) -> PairMatch:
        """Match two images; frames with a key already seen reuse their cached features."""
        return self.match_batch([PairRequest(image0, image1, key0, key1)])[0]

    def match_batch(self, requests: Sequence[PairRequest]) -> list[PairMatch]:
        """Match several pairs: frames not cached go through the extractor in one call per image size,
        then all pairs through SuperGlue as one padded batch. ``timings`` are the batch's, shared."""
        requests = list(requests)  # read once, also when given as an iterator
        if self.fixed is not None:
            return self._match_fixed(requests)
        timings = {"preprocess": 0.0, "extract": 0.0}
        images = [image for request in requests for image in (request.image0, request.image1)]
        keys = [key for request in requests for key in (request.key0, request.key1)]
        frames = self._frames(images, keys, timings)
        with StageClock(timings, "match", self.device if self.profile else None), self._autocast():
            results = self.superglue.match([f.network for f in frames[0::2]], [f.network for f in frames[1::2]],
                                           timings if self.profile else None)
        return [PairMatch(frames[2 * i].original, frames[2 * i + 1].original, result, timings)
                for i, result in enumerate(results)]

    def match_features(self, features0: Features, features1: Features) -> MatchResult:
        """SuperGlue on features the caller computed (network pixels of their own images); the exact
        SuperGlue on every backend but onnxruntime."""
        with self._autocast():
            return self.superglue.match(features0, features1)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision], enabled=self.precision != "fp32")

    def clear_cache(self) -> None:
        self._cache.clear()

    def _frames(self, images: Sequence[np.ndarray], keys: Sequence[Hashable | None],
                timings: dict[str, float]) -> list[Frame]:
        """Frames of the images, cached ones from the cache; one extractor call per network size."""
        frames, new, repeats = self._sorted_frames(keys)
        sync_device = self.device if self.profile else None
        pending: dict[tuple[int, int], list[tuple[int, torch.Tensor, tuple[int, int]]]] = {}
        with StageClock(timings, "preprocess", sync_device):
            for index in new:
                image = images[index]
                self._check(image)
                gray = to_gray_float(image, self.channel_order)
                network_hw = resized_shape(gray.shape[0], gray.shape[1], self.resize)
                tensor = upload(resize_gray(gray, network_hw), self.device)
                pending.setdefault(network_hw, []).append((index, tensor, gray.shape))
        with StageClock(timings, "extract", sync_device):
            for group in pending.values():
                batch = torch.stack([tensor for _, tensor, _ in group])[:, None] if len(group) > 1 else None
                extracted = self.extractor.extract(batch) if batch is not None else [
                                                   self.extractor.extract(group[0][1])]
                for (index, _, original_hw), network in zip(group, extracted):
                    frames[index] = Frame(network, to_original_pixels(network, original_hw))
                    self._remember(keys[index], frames[index])
        for index, first in repeats.items():
            frames[index] = frames[first]
        return frames  # type: ignore[return-value]

    def _sorted_frames(self, keys: Sequence[Hashable | None]) -> tuple[list[Frame | None], list[int], dict[int, int]]:
        """The cached frames (None for the others), the positions of the images to extract, and where a key
        repeats within the call, its first position (extracted once)."""
        frames: list[Frame | None] = [None if key is None else self._cache.get(key) for key in keys]
        new: list[int] = []
        repeats: dict[int, int] = {}
        first_of_key: dict[Hashable, int] = {}
        for index, key in enumerate(keys):
            if frames[index] is not None:
                continue
            if key is not None and key in first_of_key:
                repeats[index] = first_of_key[key]
                continue
            if key is not None:
                first_of_key[key] = index
            new.append(index)
        return frames, new, repeats

    def _check(self, image: np.ndarray) -> None:
        """TypeError or ValueError for what is not an image or too large, before any copy."""
        check_image_size(checked_frame(image, self.channel_order).shape, self.max_image_pixels)

    def _match_fixed(self, requests: Sequence[PairRequest]) -> list[PairMatch]:
        """``match_batch`` on the fixed backend: new frames into slots, the pairs with slots on both sides
        matched as one stack per network size, one download; the other pairs through the exact SuperGlue."""
        timings = {"preprocess": 0.0, "extract": 0.0, "match": 0.0}
        images = [image for request in requests for image in (request.image0, request.image1)]
        keys = [key for request in requests for key in (request.key0, request.key1)]
        frames, fresh, repeats = self._fixed_frames(images, keys, timings)
        with StageClock(timings, "match", self.device if self.profile else None):
            slots = slots_by_index(frames, fresh, repeats)
            stacks: dict[tuple[int, int], list[int]] = {}
            for i in range(len(requests)):
                pair = slots.get(2 * i), slots.get(2 * i + 1)
                if pair[0] is not None and pair[1] is not None and pair[0][1] == pair[1][1]:
                    stacks.setdefault(pair[0][1], []).append(i)
            matched = [(pairs, self.fixed.match(stack([slots[2 * i][0] for i in pairs]),
                                                stack([slots[2 * i + 1][0] for i in pairs]), network_hw))
                       for network_hw, pairs in stacks.items()]
            host = download(fresh_tensors(fresh) + [t for _, m in matched for t in m[:4]])
            frames = self._finish_frames(frames, fresh, host[:3 * len(fresh)], keys, repeats)
            results = self._fixed_results(frames, matched, host[3 * len(fresh):])
        return [PairMatch(frames[2 * i].original, frames[2 * i + 1].original, result, timings)
                for i, result in enumerate(results)]

    def _fixed_frames(self, images: Sequence[np.ndarray], keys: Sequence[Hashable | None],
                      timings: dict[str, float]) -> tuple[list[Frame | None], list[FreshFrames], dict[int, int]]:
        """Cached frames from the cache; new ones that fit uploaded and extracted into slots on the device
        (one call per frame shape), the others through the exact extractor. Returns the frames known so far
        (None for the new ones in slots), the new ones' slots, and repeated keys' first positions."""
        frames, new, repeats = self._sorted_frames(keys)
        sync_device = self.device if self.profile else None
        pending: dict[tuple[int, ...], list[tuple[int, torch.Tensor, tuple[int, int]]]] = {}
        exact: list[int] = []
        with StageClock(timings, "preprocess", sync_device):
            for index in new:
                image = images[index]
                self._check(image)
                if not self.fixed.fits(image):
                    exact.append(index)
                    continue
                tensor = self.fixed.upload(image)
                pending.setdefault(tuple(tensor.shape), []).append((index, tensor, image.shape[:2]))
        for index, frame in zip(exact, self._frames([images[i] for i in exact], [keys[i] for i in exact], timings)):
            frames[index] = frame
        with StageClock(timings, "extract", sync_device):
            fresh = [FreshFrames([index for index, _, _ in group], self.fixed.extract(*(t for _, t, _ in group)),
                                 self.fixed.network_shape(group[0][2]), [hw for _, _, hw in group])
                     for group in pending.values()]
        return frames, fresh, repeats

    @torch.inference_mode()  # inference tensors, as the torch backend's: writing to the cache is an error
    def _finish_frames(self, frames: list[Frame | None], fresh: list[FreshFrames], host: list[np.ndarray],
                       keys: Sequence[Hashable | None], repeats: dict[int, int]) -> list[Frame]:
        """The new frames' Features from their downloaded slots, remembered under their keys."""
        for group, index in zip(fresh, range(0, len(host), 3)):
            keypoints, scores, valid = host[index:index + 3]
            for b, (position, original_hw) in enumerate(zip(group.indices, group.original_hw)):
                network = slot_features(keypoints[b], scores[b], valid[b], group.slots.descriptors[b],
                                        group.network_hw)
                frames[position] = Frame(network, to_original_pixels(network, original_hw),
                                         row(group.slots, b, len(group.indices)))
                self._remember(keys[position], frames[position])
        for position, first in repeats.items():
            frames[position] = frames[first]
        return frames  # type: ignore[return-value]

    @torch.inference_mode()
    def _fixed_results(self, frames: list[Frame], matched: list[tuple[list[int], Any]],
                       host: list[np.ndarray]) -> list[MatchResult]:
        """Each pair's MatchResult: from its downloaded slot matches, or (no slots on a side, two network
        sizes, a side without keypoints) from the exact SuperGlue."""
        results: list[MatchResult | None] = [None] * (len(frames) // 2)
        for (pairs, matches), index in zip(matched, range(0, len(host), 4)):
            matches0, matches1, scores0, scores1 = host[index:index + 4]
            for b, i in enumerate(pairs):
                n, m = len(frames[2 * i].network), len(frames[2 * i + 1].network)
                if n and m:
                    results[i] = slot_result(matches0[b], matches1[b], scores0[b], scores1[b],
                                             matches.log_assignment[b], n, m)
        rest = [i for i, result in enumerate(results) if result is None]
        if rest:
            with self._autocast():
                exact = self.superglue.match([frames[2 * i].network for i in rest],
                                             [frames[2 * i + 1].network for i in rest])
            for i, result in zip(rest, exact):
                results[i] = result
        return results  # type: ignore[return-value]

    def _remember(self, key: Hashable | None, frame: Frame) -> None:
        if key is not None:
            self._cache.put(key, frame)


@dataclass(frozen=True)
class FreshFrames:
    """New frames of one shape extracted together on the fixed backend: their positions in the request, their
    slots (B, K, ...) on the device, their network size and original sizes."""

    indices: list[int]
    slots: FixedKeypoints
    network_hw: tuple[int, int]
    original_hw: list[tuple[int, int]]


def fresh_tensors(fresh: Sequence[FreshFrames]) -> list[torch.Tensor]:
    """What the host needs of new frames' slots: keypoints, scores and validity (descriptors stay)."""
    return [t for group in fresh for t in (group.slots.keypoints, group.slots.scores, group.slots.valid)]


def slots_by_index(frames: Sequence[Frame | None], fresh: Sequence[FreshFrames],
                   repeats: dict[int, int]) -> dict[int, tuple[FixedKeypoints, tuple[int, int]]]:
    """Each request frame's slots (batch of one) and network size, where it has slots."""
    slots = {index: (frame.slots, frame.network.image_size) for index, frame in enumerate(frames)
             if frame is not None and frame.slots is not None}
    for group in fresh:
        for b, index in enumerate(group.indices):
            slots[index] = (row(group.slots, b, len(group.indices)), group.network_hw)
    for index, first in repeats.items():
        if first in slots:
            slots[index] = slots[first]
    return slots


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


def check_resize(resize: int | tuple[int, int] | None) -> None:
    if resize is None:
        return
    if isinstance(resize, int) and not isinstance(resize, bool):
        check_number("resize", resize, *RESIZE_SIDE, integer=True)
        return
    if not isinstance(resize, (tuple, list)) or len(resize) != 2:
        raise ValueError(f"resize must be None, an int (longer side) or (W, H), got {resize!r}")
    for name, value in zip(("resize width", "resize height"), resize):
        check_number(name, value, *RESIZE_SIDE, integer=True)
