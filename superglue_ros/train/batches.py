"""Training pairs and batches: random views of single images, warped by random homographies.

Every training pair is an image and a random homographic, photometrically
perturbed copy of it (the homography experiment of the SuperGlue paper), so
the ground-truth correspondences follow from the warp and any folder of
openly licensed photographs is a training set.

Determinism: the batch of step k is a pure function of (seed, k): its
random generator is seeded with both. Exact resume therefore needs only the
model, the optimizer and the step counter; no generator state is carried.
"""
from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..data.homographies import ground_truth_matches, photometric_noise, sample_homography, warp_image
from ..data.pair_list import PairEntry
from ..inference.model_files import build_extractor
from ..files.images import read_image
from ..models.sift import SIFT
from ..models.superpoint import SuperPoint
from ..models.types import Features
from .config import TrainConfig, extractor_config
from .scene_pairs import SceneSet, SceneTruth

PREFERRED_TRIES, MAX_TRIES = 10, 100  # random views drawn per pair (see sample_pair)
VALIDATION_EVERY_NTH = 10  # one image in ten (by a hash of its name) validates instead of training


@dataclass(frozen=True)
class TrainingPair:
    """One training or validation example: features of both images and what labels them, the true
    warp of a homography pair or the depth and pose of a rendered scene pair."""

    features0: Features
    features1: Features
    h: np.ndarray | None = None
    scene: SceneTruth | None = None

    def labels(self, keypoints0: np.ndarray, keypoints1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.scene is not None:
            return self.scene.labels(keypoints0, keypoints1)
        return ground_truth_matches(keypoints0, keypoints1, self.h)


@dataclass(frozen=True)
class Batch:
    """Pairs cut to equal keypoint counts (no padding, so BatchNorm statistics stay clean)."""

    keypoints0: torch.Tensor
    scores0: torch.Tensor
    descriptors0: torch.Tensor
    size0: torch.Tensor
    keypoints1: torch.Tensor
    scores1: torch.Tensor
    descriptors1: torch.Tensor
    size1: torch.Tensor
    gt0: torch.Tensor
    gt1: torch.Tensor
    scale_orientation0: torch.Tensor | None = None
    scale_orientation1: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(None if value is None else value.to(device)
                       for value in (getattr(self, f.name) for f in dataclasses.fields(self))))

    def inputs(self) -> tuple[torch.Tensor | None, ...]:
        """Positional arguments of SuperGlue.forward (no masks: nothing is padded)."""
        return (self.keypoints0, self.scores0, self.descriptors0, self.size0,
                self.keypoints1, self.scores1, self.descriptors1, self.size1,
                None, None, self.scale_orientation0, self.scale_orientation1)


def load_gray(path: Path, max_side: int, max_pixels: int) -> np.ndarray:
    """uint8 gray image whose longer side is at most ``max_side`` (area-averaged when shrunk); one of more
    than ``max_pixels`` is refused before it is decoded."""
    image = read_image(path, max_pixels, cv2.IMREAD_GRAYSCALE)
    scale = max_side / max(image.shape)
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def split_images(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(train, validation): a fixed split by a hash of each file name, independent of the folder's other files."""
    val = [p for p in paths if zlib.crc32(p.name.encode()) % VALIDATION_EVERY_NTH == 0]
    train = [p for p in paths if p not in val]
    if not train or not val:
        return list(paths), list(paths)
    return train, val


def random_view(image: np.ndarray, rng: np.random.Generator, crop_hw: tuple[int, int]) -> np.ndarray:
    """A random rescale (0.5-1x, never smaller than the crop) and crop: varied scale and content per step."""
    crop_h, crop_w = crop_hw
    fit = max(crop_h / image.shape[0], crop_w / image.shape[1])
    scale = max(fit, rng.uniform(0.5, 1.0))
    size = (max(crop_w, round(image.shape[1] * scale)), max(crop_h, round(image.shape[0] * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    top = int(rng.integers(0, resized.shape[0] - crop_h + 1))
    left = int(rng.integers(0, resized.shape[1] - crop_w + 1))
    return np.ascontiguousarray(resized[top:top + crop_h, left:left + crop_w])


def extract(extractor: SIFT | SuperPoint, image: np.ndarray) -> Features:
    """Features of a uint8 gray image with either front end (both take a float tensor in [0, 1])."""
    with torch.inference_mode():
        return extractor.extract(torch.from_numpy(image.astype(np.float32) / 255.0)).to("cpu")


def make_pair(image: np.ndarray, rng: np.random.Generator, extractor: SIFT | SuperPoint,
              strength: float = 1.0) -> TrainingPair:
    """Features of a photometrically perturbed image and of its random warp."""
    h = sample_homography(rng, image.shape[0], image.shape[1], strength)
    image0 = photometric_noise(image, rng)
    image1 = warp_image(image, h, rng)
    return TrainingPair(extract(extractor, image0), extract(extractor, image1), h)


def sample_pair(images: Sequence[np.ndarray], rng: np.random.Generator, extractor: SIFT | SuperPoint,
                crop_hw: tuple[int, int], min_keypoints: int, max_strength: float = 1.0) -> TrainingPair:
    """A training pair from a random image view, redrawn while it has too few keypoints.

    After ``PREFERRED_TRIES`` draws any pair with keypoints in both images
    is accepted, so that folders with many plain images still train; only
    a folder without any keypoints gives up. ``max_strength`` above 1 draws
    each view's warp strength from [1, max_strength] (stronger rotations,
    scale changes and perspective than the benchmark's); at 1 no extra
    random number is drawn, so runs without it keep their data.
    """
    for attempt in range(MAX_TRIES):
        view = random_view(images[int(rng.integers(len(images)))], rng, crop_hw)
        strength = float(rng.uniform(1.0, max_strength)) if max_strength > 1.0 else 1.0
        pair = make_pair(view, rng, extractor, strength)
        needed = min_keypoints if attempt < PREFERRED_TRIES else 1
        if min(len(pair.features0), len(pair.features1)) >= needed:
            return pair
    raise ValueError(f"no keypoints found in {MAX_TRIES} random views of the images; are they blank?")


def sample_scene_pair(scenes: SceneSet, entries: Sequence[PairEntry], rng: np.random.Generator,
                      extractor: SIFT | SuperPoint, min_keypoints: int) -> TrainingPair:
    """A rendered pair (real parallax and occlusion), redrawn while it has too few keypoints."""
    for attempt in range(MAX_TRIES):
        image0, image1, truth = scenes.sample(entries, rng)
        pair = TrainingPair(extract(extractor, image0), extract(extractor, image1), scene=truth)
        needed = min_keypoints if attempt < PREFERRED_TRIES else 1
        if min(len(pair.features0), len(pair.features1)) >= needed:
            return pair
    raise ValueError(f"no keypoints found in {MAX_TRIES} rendered pairs of {scenes.folder}")


def collate(pairs: Sequence[TrainingPair], limits: tuple[int, int] | None = None) -> Batch:
    """Keep the strongest min-count (at most ``limits`` for image 0 and image 1) keypoints of every
    image, then label them under the known warps."""
    n = min(len(p.features0) for p in pairs)
    m = min(len(p.features1) for p in pairs)
    if limits is not None:
        n, m = min(n, limits[0]), min(m, limits[1])
    if n == 0 or m == 0:
        raise ValueError("every pair of a batch needs keypoints in both images")
    labels = [p.labels(p.features0.keypoints[:n].numpy(), p.features1.keypoints[:m].numpy()) for p in pairs]

    def stack(side: int, field: str, count: int) -> torch.Tensor | None:
        rows = [getattr(p.features0 if side == 0 else p.features1, field) for p in pairs]
        return None if any(r is None for r in rows) else torch.stack([r[:count] for r in rows])

    def sizes(side: int) -> torch.Tensor:
        return torch.tensor([(p.features0 if side == 0 else p.features1).image_size for p in pairs],
                            dtype=torch.float32)

    return Batch(stack(0, "keypoints", n), stack(0, "scores", n), stack(0, "descriptors", n), sizes(0),
                 stack(1, "keypoints", m), stack(1, "scores", m), stack(1, "descriptors", m), sizes(1),
                 torch.from_numpy(np.stack([g0 for g0, _ in labels])),
                 torch.from_numpy(np.stack([g1 for _, g1 in labels])),
                 stack(0, "scale_orientation", n), stack(1, "scale_orientation", m))


def training_batch(images: Sequence[np.ndarray], extractor: SIFT | SuperPoint, config: TrainConfig,
                   step: int, scenes: SceneSet | None = None) -> Batch:
    """The batch of ``step``: identical whenever and however often it is drawn. With ``scenes``, each
    pair is a rendered scene pair with probability ``config.scene_share`` (runs without scenes draw
    no extra random number, so they keep their data)."""
    rng = np.random.default_rng([config.seed, 0, step])
    counts = step_keypoints(config, rng)
    pairs = []
    for _ in range(config.batch):
        if scenes is not None and rng.random() < config.scene_share:
            pairs.append(sample_scene_pair(scenes, scenes.train, rng, extractor, min(counts) // 2))
        else:
            pairs.append(sample_pair(images, rng, extractor, config.crop, min(counts) // 2, config.max_strength))
    return collate(pairs, counts)


def step_keypoints(config: TrainConfig, rng: np.random.Generator) -> tuple[int, int]:
    """Keypoints of image 0 and image 1 for one step, so that one model serves sparse and dense,
    balanced and unbalanced pairs alike (the matcher sees any counts).

    Image 0 gets ``num_keypoints``, or with ``min_keypoints`` a log-uniform
    draw between the two. With ``keypoint_imbalance`` R > 1, image 1 gets
    that count times a log-uniform factor in [1/R, R] (as when one view is
    zoomed out or blurred), within the same bounds; otherwise the same count.
    """
    high = config.num_keypoints
    low = min(config.min_keypoints or high, high)
    count0 = int(round(np.exp(rng.uniform(np.log(low), np.log(high))))) if low < high else high
    if config.keypoint_imbalance <= 1.0:
        return count0, count0
    factor = np.exp(rng.uniform(-1.0, 1.0) * np.log(config.keypoint_imbalance))
    return count0, int(np.clip(round(count0 * factor), low, high))


class StepBatches(torch.utils.data.Dataset):
    """The training batches by step number, for a DataLoader whose worker processes build the
    next batches while the model trains (feature extraction, not the model, bounds a GPU run).

    Each batch depends only on (seed, step), never on which process builds it
    or when, so any number of workers trains the same weights. Workers are
    spawned, not forked (a forked OpenCV thread pool can deadlock), and
    build their own front end from the configuration; the training process
    uses its own.
    """

    def __init__(self, images: Sequence[np.ndarray], config: TrainConfig,
                 extractor: SIFT | SuperPoint | None = None) -> None:
        self.images, self.config, self.extractor = images, config, extractor
        self.scenes = SceneSet(config.scenes, config.max_image_pixels) if config.scenes else None

    def __len__(self) -> int:
        return self.config.steps

    def __getitem__(self, step: int) -> Batch:
        if self.extractor is None:
            self.extractor = build_extractor(extractor_config(self.config.extractor, self.config.num_keypoints,
                                                              self.config.contrast_threshold))
        return training_batch(self.images, self.extractor, self.config, step, self.scenes)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "extractor": None}


def single_threaded_worker(_: int) -> None:
    """Workers already run in parallel; their own thread pools would only oversubscribe the cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def step_batches(images: Sequence[np.ndarray], extractor: SIFT | SuperPoint, config: TrainConfig,
                 start: int) -> torch.utils.data.DataLoader:
    """Batches of steps start..steps-1 in order, built by ``config.workers`` processes (0: in this one)."""
    parallel = {"worker_init_fn": single_threaded_worker, "prefetch_factor": 4,
                "multiprocessing_context": "spawn"} if config.workers else {}
    return torch.utils.data.DataLoader(StepBatches(images, config, extractor), batch_size=None,
                                       sampler=range(start, config.steps), num_workers=config.workers,
                                       **parallel)


def validation_batches(images: Sequence[np.ndarray], extractor: SIFT | SuperPoint,
                       config: TrainConfig) -> list[Batch]:
    """Fixed validation pairs (one per batch, so none loses keypoints to a shorter partner): homography
    pairs of the validation images, and with scenes as many of the scene set's validation pairs."""
    batches = [collate([sample_pair(images, np.random.default_rng([config.seed, 1, k]), extractor, config.crop, 1)])
               for k in range(config.val_pairs)]
    if config.scenes:
        scenes = SceneSet(config.scenes, config.max_image_pixels)
        batches += [collate([sample_scene_pair(scenes, [entry], np.random.default_rng([config.seed, 2, k]),
                                               extractor, 1)])
                    for k, entry in enumerate(scenes.validation[:config.val_pairs])]
    return batches
