"""Self-supervised SuperGlue training from single images.

Every training pair is an image and a random homographic, photometrically
perturbed copy of it (the homography experiment of the SuperGlue paper), so
the ground-truth correspondences follow from the warp and any folder of
openly licensed photographs is a training set.

Determinism: the batch of step k is a pure function of (seed, k): its
random generator is seeded with both. Exact resume therefore needs only the
model, the optimizer and the step counter; no generator state is carried.

A trained model is scored like any matcher, by the evaluation's synthetic
homography benchmark: ``superglue-ros eval FOLDER --synthetic-homography
--weights MODEL.pt`` (with SIFT + mutual nearest neighbour + ratio test
as a baseline on the same keypoints).
"""
from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..models.types import Features
from ..eval.metrics import match_counts
from ..inference.model_files import build_extractor, load_open_model, save_open_model
from ..models.optimal_transport import extract_matches
from ..inference.preprocess import image_files
from ..models.sift import SIFT
from ..models.superglue import SuperGlue
from ..models.superpoint import SuperPoint
from ..data.homographies import ground_truth_matches, photometric_noise, sample_homography, warp_image

CHECKPOINT_FORMAT = 1
PREFERRED_TRIES, MAX_TRIES = 10, 100  # random views drawn per pair (see sample_pair)
VALIDATION_EVERY_NTH = 10  # one image in ten (by a hash of its name) validates instead of training
# The run's identity: a resumed run takes these from its checkpoint.
RUN_FIELDS = ("images", "features", "batch", "lr", "seed", "num_keypoints", "crop", "max_side",
              "layers", "sinkhorn_iterations", "val_pairs", "init", "min_keypoints",
              "keypoint_imbalance", "scale_orientation", "contrast_threshold", "max_strength")
DESCRIPTOR_DIMS = {"sift": 128, "superpoint": 256}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints and the model's meta)."""

    images: str
    features: str = "sift"
    steps: int = 2400
    batch: int = 6
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    out: str = "model.pt"
    resume: str | None = None
    init: str | None = None
    checkpoint_every: int = 100
    val_every: int = 100
    val_pairs: int = 24
    num_keypoints: int = 384
    min_keypoints: int | None = None
    keypoint_imbalance: float = 1.0
    crop: tuple[int, int] = (360, 480)
    max_side: int = 640
    layers: int = 3
    sinkhorn_iterations: int = 50
    workers: int = 0
    scale_orientation: bool = False
    contrast_threshold: float | None = None  # SIFT's; None keeps the front end's default
    max_strength: float = 1.0  # training warps' strength is drawn from [1, max_strength]; validation's is 1


@dataclass(frozen=True)
class Pair:
    """One training or validation example: features of both images and the true warp."""

    features0: Features
    features1: Features
    h: np.ndarray


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


def superglue_config(descriptor_dim: int, layers: int, sinkhorn_iterations: int,
                     scale_orientation: bool = False) -> dict[str, Any]:
    """A small SuperGlue: the keypoint encoder ends at descriptor_dim, ``layers`` self/cross pairs."""
    encoder = [width for width in (32, 64, 128, 256) if width < descriptor_dim] or [descriptor_dim]
    return {"descriptor_dim": descriptor_dim, "keypoint_encoder": encoder, "GNN_layers": ["self", "cross"] * layers,
            "num_heads": 4, "sinkhorn_iterations": sinkhorn_iterations, "match_threshold": 0.2,
            "scale_orientation": scale_orientation}


def features_config(name: str, num_keypoints: int, contrast_threshold: float | None = None) -> dict[str, Any]:
    """The front end's settings as a model file stores them: the model is trained, and later run,
    on keypoints detected exactly this way."""
    if name not in DESCRIPTOR_DIMS:
        raise ValueError(f"features must be 'sift' or 'superpoint', got {name!r}")
    config: dict[str, Any] = {"name": name, "max_keypoints": num_keypoints}
    if contrast_threshold is not None:
        if name != "sift":
            raise ValueError("contrast_threshold applies to SIFT only")
        config["contrast_threshold"] = contrast_threshold
    return config


def load_gray(path: Path, max_side: int) -> np.ndarray:
    """uint8 gray image whose longer side is at most ``max_side`` (area-averaged when shrunk)."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot read image {path}")
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
              strength: float = 1.0) -> Pair:
    """Features of a photometrically perturbed image and of its random warp."""
    h = sample_homography(rng, image.shape[0], image.shape[1], strength)
    image0 = photometric_noise(image, rng)
    image1 = warp_image(image, h, rng)
    return Pair(extract(extractor, image0), extract(extractor, image1), h)


def sample_pair(images: Sequence[np.ndarray], rng: np.random.Generator, extractor: SIFT | SuperPoint,
                crop_hw: tuple[int, int], min_keypoints: int, max_strength: float = 1.0) -> Pair:
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


def collate(pairs: Sequence[Pair], limits: tuple[int, int] | None = None) -> Batch:
    """Keep the strongest min-count (at most ``limits`` for image 0 and image 1) keypoints of every
    image, then label them under the known warps."""
    n = min(len(p.features0) for p in pairs)
    m = min(len(p.features1) for p in pairs)
    if limits is not None:
        n, m = min(n, limits[0]), min(m, limits[1])
    if n == 0 or m == 0:
        raise ValueError("every pair of a batch needs keypoints in both images")
    labels = [ground_truth_matches(p.features0.keypoints[:n].numpy(), p.features1.keypoints[:m].numpy(), p.h)
              for p in pairs]

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
                   step: int) -> Batch:
    """The batch of ``step``: identical whenever and however often it is drawn."""
    rng = np.random.default_rng([config.seed, 0, step])
    counts = step_keypoints(config, rng)
    return collate([sample_pair(images, rng, extractor, config.crop, min(counts) // 2, config.max_strength)
                    for _ in range(config.batch)], counts)


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

    def __len__(self) -> int:
        return self.config.steps

    def __getitem__(self, step: int) -> Batch:
        if self.extractor is None:
            self.extractor = build_extractor(features_config(self.config.features, self.config.num_keypoints,
                                                             self.config.contrast_threshold))
        return training_batch(self.images, self.extractor, self.config, step)

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
    """Fixed validation pairs (one per batch, so none loses keypoints to a shorter partner)."""
    return [collate([sample_pair(images, np.random.default_rng([config.seed, 1, k]), extractor, config.crop, 1)])
            for k in range(config.val_pairs)]


def nll_loss(log_assignment: torch.Tensor, gt0: torch.Tensor, gt1: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the ground-truth assignment, dustbins included.

    log_assignment (B, N+1, M+1); gt0 (B, N), gt1 (B, M) as from ground_truth_matches.
    Terms: -log P[i, j] per true match, -log P[i, dustbin] per unmatched keypoint
    of image 0, -log P[dustbin, j] per unmatched keypoint of image 1 (ignored
    keypoints contribute nothing). Averaged per pair, then over the batch.
    """
    n, m = gt0.shape[1], gt1.shape[1]
    matched = log_assignment[:, :n, :m].gather(2, gt0.clamp(min=0)[..., None])[..., 0]
    zero = log_assignment.new_zeros(())
    total = (torch.where(gt0 >= 0, matched, zero).sum(1)
             + torch.where(gt0 == -1, log_assignment[:, :n, m], zero).sum(1)
             + torch.where(gt1 == -1, log_assignment[:, n, :m], zero).sum(1))
    count = (gt0 >= 0).sum(1) + (gt0 == -1).sum(1) + (gt1 == -1).sum(1)
    return (-total / count.clamp(min=1)).mean()


def learning_rate(config: TrainConfig, step: int) -> float:
    """Constant, then a linear decay to a tenth over the last 40% of the steps (settles the weights)."""
    decay_start = 0.6 * config.steps
    if step < decay_start:
        return config.lr
    return config.lr * (1.0 - 0.9 * (step - decay_start) / max(config.steps - decay_start, 1))


def training_step(model: SuperGlue, optimizer: torch.optim.Optimizer, batch: Batch, lr: float) -> float:
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = nll_loss(model(*batch.inputs())["log_assignment"], batch.gt0, batch.gt1)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode()
def validate(model: SuperGlue, batches: Sequence[Batch], device: torch.device) -> tuple[float, float]:
    """Match precision and recall against the ground-truth labels, over all validation pairs.

    Predictions for ignored keypoints (label -2) count neither way, as in the loss.
    """
    model.eval()
    totals = np.zeros(3, dtype=np.int64)
    for batch in batches:
        batch = batch.to(device)
        log_assignment = model(*batch.inputs())["log_assignment"]
        matches0 = extract_matches(log_assignment, model.config["match_threshold"])[0]
        totals += match_counts(matches0.cpu().numpy(), batch.gt0.cpu().numpy())
    correct, predicted, positives = (int(t) for t in totals)
    return correct / max(predicted, 1), correct / max(positives, 1)


def checkpoint_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.ckpt.pt")


def save_checkpoint(path: Path, model: SuperGlue, optimizer: torch.optim.Optimizer, step: int,
                    config: TrainConfig, history: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "superglue_config": dict(model.config),
                "train_config": {**dataclasses.asdict(config), "crop": list(config.crop)}, "history": history}, tmp)
    tmp.replace(path)  # a run killed while saving keeps its previous checkpoint


def resumed_config(config: TrainConfig, checkpoint: dict[str, Any]) -> TrainConfig:
    """The checkpoint's run settings, with this invocation's steps, output, device and intervals."""
    stored = checkpoint["train_config"]
    run = {name: stored[name] for name in RUN_FIELDS if name in stored}  # older runs lack newer fields
    run["crop"] = tuple(run["crop"])
    return dataclasses.replace(config, **run)


def inherit_front_end(config: TrainConfig) -> TrainConfig:
    """A fine-tuning run keeps the SIFT contrast threshold its --init model was trained on unless told
    otherwise: a model meets the keypoints it learnt on, whichever file it started from."""
    if config.init is None or config.contrast_threshold is not None or config.features != "sift":
        return config
    extractor, _, _ = load_open_model(config.init)
    if not isinstance(extractor, SIFT):
        return config
    return dataclasses.replace(config, contrast_threshold=extractor.config["contrast_threshold"])


def initialise_from(model: SuperGlue, path: str) -> None:
    """Start from the weights of a model file (fine-tuning), possibly a shallower one (growing).

    A model with fewer attention layers fills the first layers; each added
    layer starts with its residual update at zero (last MLP projection), so
    the grown model computes exactly what the file's model did and training
    goes on from there instead of from scratch. Likewise a model without
    scale/orientation inputs gives a model with them zero weights on those.
    """
    _, superglue, _ = load_open_model(path)
    architecture = ("descriptor_dim", "keypoint_encoder", "num_heads")
    theirs = {key: superglue.config[key] for key in architecture}
    ours = {key: model.config[key] for key in architecture}
    layers, known = list(model.config["GNN_layers"]), list(superglue.config["GNN_layers"])
    if (theirs != ours or layers[:len(known)] != known
            or superglue.config["scale_orientation"] > model.config["scale_orientation"]):
        raise ValueError(f"--init {path}: its SuperGlue {theirs} with layers {known} does not fit this run's "
                         f"{ours} with layers {layers} (match --features and --scale-orientation; "
                         "--layers may only grow)")
    state = superglue.state_dict()
    first = "kenc.encoder.0.weight"
    width = model.kenc.encoder[0].weight.shape[1]
    state[first] = torch.cat([state[first], state[first].new_zeros(
        (state[first].shape[0], width - state[first].shape[1], 1))], dim=1)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("gnn.layers.") for key in missing):
        raise ValueError(f"--init {path}: unexpected weights {unexpected or missing}")
    with torch.no_grad():
        for layer in model.gnn.layers[len(known):]:
            last = layer.mlp[-1]
            last.weight.zero_()
            last.bias.zero_()


def train(config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training; writes checkpoints and the final model file, returns its meta."""
    from tqdm import tqdm

    device = torch.device(config.device)
    checkpoint = torch.load(config.resume, map_location="cpu", weights_only=True) if config.resume else None
    config = resumed_config(config, checkpoint) if checkpoint is not None else inherit_front_end(config)
    torch.manual_seed(config.seed)
    extractor = build_extractor(features_config(config.features, config.num_keypoints, config.contrast_threshold))
    train_paths, val_paths = split_images(image_files(config.images))
    train_images = [load_gray(p, config.max_side) for p in train_paths]
    val_images = [load_gray(p, config.max_side) for p in val_paths]
    model_config = superglue_config(DESCRIPTOR_DIMS[config.features], config.layers, config.sinkhorn_iterations,
                                    config.scale_orientation)
    model = SuperGlue(**model_config)
    if config.init and checkpoint is None:
        initialise_from(model, config.init)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start, history = 0, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start, history = int(checkpoint["step"]), list(checkpoint["history"])
    val_batches = validation_batches(val_images, extractor, config)
    began = time.perf_counter()
    bar = tqdm(step_batches(train_images, extractor, config, start), initial=start, total=config.steps,
               disable=not progress, desc="train", dynamic_ncols=True)
    precision = recall = float("nan")
    for step, batch in enumerate(bar, start):
        batch = batch.to(device)
        loss = training_step(model, optimizer, batch, learning_rate(config, step))
        done = step + 1
        if done % config.val_every == 0 or done == config.steps:
            precision, recall = validate(model, val_batches, device)
            history.append({"step": done, "loss": loss, "precision": precision, "recall": recall})
        bar.set_postfix(loss=f"{loss:.3f}", P=f"{precision:.3f}", R=f"{recall:.3f}")
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(checkpoint_path(config.out), model, optimizer, done, config, history)
    meta = {"steps": config.steps, "train_images": len(train_paths), "val_images": len(val_paths),
            "wall_time_s_this_run": round(time.perf_counter() - began, 1), "history": history,
            "train_config": {k: v for k, v in dataclasses.asdict(config).items() if k in RUN_FIELDS}}
    meta["train_config"]["crop"] = list(config.crop)
    save_open_model(config.out, model.cpu(), features_config(config.features, 1024, config.contrast_threshold), meta)
    return meta
