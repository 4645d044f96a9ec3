"""Self-contained model files: the front-end configuration, SuperGlue's configuration and weights.

The official files are bare state dicts whose configuration is implied by
their name. Models trained by this package can differ in size and front
end, so their file says how to rebuild them and what they were trained on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..models.sift import SIFT
from ..models.superglue import SuperGlue
from ..models.superpoint import SuperPoint
from .weights import WeightsError, find_official, load_into

FORMAT = 1
# The default (3 layer pairs, trained on CPU) and a deeper one trained on a GPU (twice the GNN time).
BUNDLED = {name: Path(__file__).resolve().parents[1] / "weights" / f"{name}.pt" for name in ("sift_open", "sift_open_large")}


def save_open_model(path: str | os.PathLike, superglue: SuperGlue, features_config: dict[str, Any],
                    meta: dict[str, Any]) -> None:
    """Write SuperGlue with the front end it was trained for; ``features_config["name"]`` is sift or superpoint."""
    if features_config.get("name") not in ("sift", "superpoint"):
        raise ValueError(f"features_config needs name 'sift' or 'superpoint', got {features_config.get('name')!r}")
    state = {key: value.detach().cpu().clone() for key, value in superglue.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "superglue_config": dict(superglue.config), "features": dict(features_config),
                "state_dict": state, "meta": dict(meta)}, path)


def resolve_open_model(name_or_path: str | os.PathLike) -> Path:
    """A bundled model name (``sift_open``, ``sift_open_large``) or a file path -> the file."""
    return BUNDLED.get(str(name_or_path), Path(name_or_path))


def load_open_model(path: str | os.PathLike) -> tuple[SIFT | SuperPoint, SuperGlue, dict[str, Any]]:
    """Rebuild (front end, SuperGlue in eval mode, meta) from a file written by :func:`save_open_model`.

    A SuperPoint front end still needs the official SuperPoint weights,
    found the usual way (they cannot be bundled).
    """
    path = resolve_open_model(path)
    if not path.is_file():
        raise WeightsError(f"model file {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, pickle refused...
        raise WeightsError(f"model file {path} is unreadable ({type(error).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a superglue_ros model file (format {FORMAT})")
    superglue = SuperGlue(**blob["superglue_config"])
    try:
        superglue.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as error:
        raise WeightsError(f"{path}: weights do not fit the stored configuration ({str(error).splitlines()[0]})") from None
    return build_extractor(blob["features"]), superglue.eval(), dict(blob["meta"])


def build_extractor(features_config: dict[str, Any]) -> SIFT | SuperPoint:
    """The feature extractor a model file names, configured as it was trained."""
    options = {key: value for key, value in features_config.items() if key != "name"}
    if features_config["name"] == "sift":
        return SIFT(**options)
    if features_config["name"] == "superpoint":
        superpoint = SuperPoint(**options)
        load_into(superpoint, find_official("superpoint"))
        return superpoint.eval()
    raise WeightsError(f"unknown front end {features_config['name']!r} (expected sift or superpoint)")
