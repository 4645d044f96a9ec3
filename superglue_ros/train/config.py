"""What defines a training run: its settings, SuperGlue's size and the extractor it trains for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..files.images import DEFAULT_MAX_PIXELS

# The run's identity: a resumed run takes these from its checkpoint.
RUN_FIELDS = ("images", "extractor", "batch", "lr", "seed", "num_keypoints", "crop", "max_side",
              "layers", "sinkhorn_iterations", "val_pairs", "init", "min_keypoints",
              "keypoint_imbalance", "scale_orientation", "contrast_threshold", "max_strength", "scenes", "scene_share")
DESCRIPTOR_DIMS = {"sift": 128, "superpoint": 256, "xfeat": 64}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints and the model's meta)."""

    images: str
    extractor: str = "sift"
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
    scenes: str | None = None  # a folder of rendered 3D pairs (superglue-ros pairs scenes)
    scene_share: float = 0.5  # with scenes: the share of each batch's pairs that are rendered scene pairs
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
