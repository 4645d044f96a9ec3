"""onnxruntime runners that stand in for the torch models behind the backend protocol.

They run the graphs of :mod:`.onnx_export` and reuse the models' own
post-processing (``extract_with``, ``match_with``), so they give the same
keypoints and matches as the torch models, which the tests check.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...models.optimal_transport import log_optimal_transport, needs_log_domain
from ...models.superglue import DEFAULT_CONFIG as SUPERGLUE_DEFAULTS
from ...models.superglue import FIXED_BY_WEIGHTS as SUPERGLUE_FIXED
from ...models.superglue import SETTINGS as SUPERGLUE_SETTINGS
from ...models.superglue import SuperGlue, match_with
from ...models.superglue import validate_config as validate_superglue_config
from ...models.superpoint import DEFAULT_CONFIG as SUPERPOINT_DEFAULTS
from ...models.superpoint import FIXED_BY_WEIGHTS as SUPERPOINT_FIXED
from ...models.superpoint import SETTINGS as SUPERPOINT_SETTINGS
from ...models.superpoint import SuperPoint, extract_with
from ...models.superpoint import validate_config as validate_superpoint_config
from ...models.types import Features, MatchResult
from ...settings import merge_config, reconfigure
from ...timing import StageClock
from .onnx_export import (SUPERGLUE_FILE, SUPERGLUE_OUTPUTS, SUPERPOINT_FILE, SUPERPOINT_OUTPUTS, export_models,
                          check_fixed_iterations, read_metadata, superglue_metadata, superpoint_metadata)


def execution_providers(device: torch.device | str) -> list[str]:
    """CUDA first when the matcher runs on CUDA and this onnxruntime build has it; CPU always."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: str | os.PathLike, providers: Sequence[str] | None):
    """An inference session with torch's thread count, whose idle worker threads sleep.

    One knob (torch.set_num_threads, e.g. `bench --threads`) then sizes both
    backends. onnxruntime's threads spin for a while after each run by
    default; on a robot's few shared cores that steals the time that torch
    post-processing, the ROS callbacks and everything else beside the
    matcher need.
    """
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
    except (RuntimeError, Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as error:  # a damaged file
        summary = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"cannot load ONNX file {path} ({summary[:200]}); delete it to export it again") from None


class OnnxSuperPoint:
    """SuperPoint.extract on an onnxruntime session: same heads, same torch post-processing."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None,
                 providers: Sequence[str] | None = None) -> None:
        self.config = validate_superpoint_config(merge_config(SUPERPOINT_DEFAULTS, config or {}, "SuperPoint"))
        self.metadata = read_metadata(path)
        if self.metadata.get("descriptor_dim") != str(self.config["descriptor_dim"]):
            raise ValueError(f"{path} has descriptor_dim {self.metadata.get('descriptor_dim')}, "
                             f"the configuration asks for {self.config['descriptor_dim']}")
        self.session = open_session(path, providers)

    def extract(self, image: torch.Tensor) -> Features | list[Features]:
        """(H, W) float tensor in [0, 1] -> Features, or (B, 1, H, W) -> list of Features."""
        return extract_with(self._heads, image, self.config)

    def configure(self, **changes: Any) -> None:
        """Detection settings act in the torch post-processing, so all but the descriptor length may change."""
        self.config = reconfigure(self.config, SUPERPOINT_SETTINGS, changes, "the SuperPoint extractor (ONNX)",
                                  SUPERPOINT_FIXED)

    def _heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = images.detach().to("cpu", torch.float32).contiguous().numpy()
        logits, dense = self.session.run(list(SUPERPOINT_OUTPUTS), {"image": pixels})
        return torch.from_numpy(logits).to(images.device), torch.from_numpy(dense).to(images.device)


class OnnxSuperGlue:
    """SuperGlue.match on an onnxruntime session; Sinkhorn iterations are those baked into the file.

    ``match_threshold`` is applied outside the graph (from ``config``, which
    defaults to the exported value), so it can still be changed at run time.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None,
                 providers: Sequence[str] | None = None) -> None:
        self.metadata = read_metadata(path)
        self.baked = {"sinkhorn_iterations": int(self.metadata["sinkhorn_iterations"]),
                      "descriptor_dim": int(self.metadata["descriptor_dim"]),
                      "match_threshold": float(self.metadata["match_threshold"])}
        self.config = validate_superglue_config(
            merge_config(SUPERGLUE_DEFAULTS, {**self.baked, **(config or {})}, "SuperGlue"))
        for name in ("sinkhorn_iterations", "descriptor_dim"):
            if self.config[name] != self.baked[name]:
                raise ValueError(f"{path} was exported with {name}={self.baked[name]}, the configuration asks "
                                 f"for {self.config[name]}; export again with that value")
        check_fixed_iterations(self.config)
        self.bin_score = torch.tensor(float(self.metadata["bin_score"]))
        self.session = open_session(path, providers)

    def configure(self, **changes: Any) -> None:
        """Only the threshold acts outside the graph; the iterations are baked into it."""
        for name in ("sinkhorn_iterations", "sinkhorn_tolerance"):
            if name in changes and changes[name] != self.config[name]:
                raise ValueError(f"{name} is baked into the ONNX graph of backend 'onnxruntime' "
                                 f"({self.config[name]}); export again, or restart, to change it")
        self.config = reconfigure(self.config, SUPERGLUE_SETTINGS, changes, "SuperGlue (ONNX)", SUPERGLUE_FIXED)

    def match(self, features0: Features | Sequence[Features], features1: Features | Sequence[Features],
              timings: dict[str, float] | None = None) -> MatchResult | list[MatchResult]:
        """One pair (Features, Features) or two equal-length sequences, matched pair by pair.

        ``timings`` gets the whole graph's seconds under "gnn" (GNN and
        Sinkhorn are one graph here), and "sinkhorn" the time of a log-domain
        Sinkhorn redone in torch for a pair whose scores are too spread out
        for the graph's scaling iterations.
        """
        return match_with(self._plans, self._transport, features0, features1, self.config, timings)

    def _plans(self, batch0: list[Features], batch1: list[Features],
               timings: dict[str, float] | None) -> list[torch.Tensor]:
        return [self._plan(f0, f1, timings) for f0, f1 in zip(batch0, batch1)]

    def _plan(self, features0: Features, features1: Features, timings: dict[str, float] | None) -> torch.Tensor:
        feeds = {**graph_inputs(features0, "0"), **graph_inputs(features1, "1")}
        with StageClock(timings, "gnn"):
            plans, raw_scores = self.session.run(list(SUPERGLUE_OUTPUTS), feeds)
        plan = torch.from_numpy(plans[0])
        scores = torch.from_numpy(raw_scores)
        if needs_log_domain(scores, self.bin_score):
            with StageClock(timings, "sinkhorn"):
                plan = self._transport(scores)[0]
        return plan.to(features0.device)

    def _transport(self, scores: torch.Tensor) -> torch.Tensor:
        """Torch optimal transport with this graph's bin score and iterations, for what the graph cannot do."""
        return log_optimal_transport(scores.cpu(), self.bin_score, self.config["sinkhorn_iterations"])


def graph_inputs(features: Features, suffix: str) -> dict[str, np.ndarray]:
    """One side's feeds for superglue.onnx, batch of one."""
    def host(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).contiguous().numpy()[None]

    return {f"keypoints{suffix}": host(features.keypoints), f"scores{suffix}": host(features.scores),
            f"descriptors{suffix}": host(features.descriptors),
            f"image_size{suffix}": np.array([features.image_size], dtype=np.float32)}


def onnx_runners(superpoint: SuperPoint, superglue: SuperGlue,
                 weight_files: tuple[str | os.PathLike, str | os.PathLike],
                 onnx_dir: str | os.PathLike | None, device: torch.device) -> tuple[OnnxSuperPoint, OnnxSuperGlue]:
    """The Matcher's onnxruntime backend: runners for these loaded models.

    The files in ``onnx_dir`` are reused when their metadata says they come
    from the same weight files and Sinkhorn iterations; otherwise (or when
    missing) they are exported there first. Without ``onnx_dir`` they are
    exported into a temporary folder that is gone once the sessions are open.
    """
    if not isinstance(superpoint, SuperPoint):
        raise ValueError(f"backend onnxruntime runs the exported SuperPoint + SuperGlue graphs; this model's "
                         f"extractor is {type(superpoint).__name__} (use backend torch)")
    providers = execution_providers(device)
    if onnx_dir is None:
        with tempfile.TemporaryDirectory(prefix="superglue_ros_onnx_") as folder:
            return open_runners(superpoint, superglue, export_models(superpoint, superglue, folder, weight_files),
                                providers)
    paths = Path(onnx_dir) / SUPERPOINT_FILE, Path(onnx_dir) / SUPERGLUE_FILE
    if not exports_current(paths, superpoint, superglue, weight_files):
        paths = export_models(superpoint, superglue, onnx_dir, weight_files)
    return open_runners(superpoint, superglue, paths, providers)


def open_runners(superpoint: SuperPoint, superglue: SuperGlue, paths: tuple[Path, Path],
                 providers: Sequence[str]) -> tuple[OnnxSuperPoint, OnnxSuperGlue]:
    return (OnnxSuperPoint(paths[0], dict(superpoint.config), providers),
            OnnxSuperGlue(paths[1], dict(superglue.config), providers))


def exports_current(paths: tuple[Path, Path], superpoint: SuperPoint, superglue: SuperGlue,
                    weight_files: tuple[str | os.PathLike, str | os.PathLike]) -> bool:
    """Whether both files exist and their metadata (weights, sizes, iterations, version) matches these models."""
    if not all(p.is_file() for p in paths):
        return False
    expected = (superpoint_metadata(superpoint, weight_files[0]), superglue_metadata(superglue, weight_files[1]))
    keys = ("weights", "descriptor_dim", "sinkhorn_iterations", "superglue_ros_version")
    for path, wanted in zip(paths, expected):
        found = read_metadata(path)
        if any(found.get(key) != wanted[key] for key in keys if key in wanted):
            return False
    return True
