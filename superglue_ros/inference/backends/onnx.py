"""ONNX export of SuperPoint and SuperGlue, and onnxruntime runners that stand in for the torch models.

Onboard runtimes (TensorRT, onnxruntime on small GPUs and ARM CPUs) start
from ONNX. Only the networks go into the graphs: SuperPoint's graph stops at
its raw heads, because keypoint selection returns a data-dependent number of
points that graph compilers handle badly, so NMS and top-k stay in the torch
post-processing of :mod:`superglue_ros.superpoint`. SuperGlue's graph runs
the GNN and a fixed number of Sinkhorn iterations (recorded in the model's
metadata) up to the log assignment; match extraction again reuses the torch
code. The runners therefore give the same keypoints and matches as the
torch models, which the tests check.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...models.types import Features, MatchResult
from ...models.optimal_transport import (MAX_EXP_DOMAIN_SPREAD, augment_with_dustbins, log_domain_sinkhorn,
                                log_marginals, log_optimal_transport, scaling_sinkhorn, spread_of)
from ...models.superglue import DEFAULT_CONFIG as SUPERGLUE_DEFAULTS
from ...models.superglue import SuperGlue, assignment_result, check_descriptor_dim, pair_or_batch, unmatchable_plan
from ...models.superglue import validate_config as validate_superglue_config
from ...models.superpoint import CELL, SuperPoint, extract_with
from ...models.superpoint import DEFAULT_CONFIG as SUPERPOINT_DEFAULTS
from ...models.superpoint import validate_config as validate_superpoint_config
from ..timing import StageClock
from ...settings import check_choice, check_number, merge_config
from ..weights import file_identity

SUPERPOINT_FILE = "superpoint.onnx"
SUPERGLUE_FILE = "superglue.onnx"
DEFAULT_OPSET = 17
# scaled_dot_product_attention needs opset 14; the TorchScript exporter stops at 20.
MIN_OPSET, MAX_OPSET = 14, 20
SUPERPOINT_INPUTS = ("image",)
SUPERPOINT_OUTPUTS = ("logits", "descriptors")
SUPERGLUE_INPUTS = ("keypoints0", "scores0", "descriptors0", "image_size0",
                    "keypoints1", "scores1", "descriptors1", "image_size1")
SUPERGLUE_OUTPUTS = ("log_assignment", "scores")
# "scaling": float64 scaling iterations, as the torch model runs them (fast; onnxruntime has float64).
# "log-domain": the reference's float32 log-domain iterations, for runtimes without float64 (TensorRT).
SINKHORN_VARIANTS = ("scaling", "log-domain")


def package_version() -> str:
    from ... import __version__

    return __version__


class SuperGlueGraph(nn.Module):
    """SuperGlue for one pair up to the log assignment, in a form the tracer can export.

    ``optimal_transport.sinkhorn`` picks between scaling and log-domain
    iterations by a data-dependent test that a graph cannot hold; by default
    the graph always takes the scaling path (the one every input with a
    coupling spread below MAX_EXP_DOMAIN_SPREAD takes) and also returns the
    score matrix, so that a runner can redo the rare other case outside the
    graph. ``sinkhorn="log-domain"`` bakes in the reference's float32
    log-domain iterations instead: two to three times slower on a CPU, but
    free of float64, which TensorRT lacks.
    """

    def __init__(self, superglue: SuperGlue, sinkhorn: str = "scaling") -> None:
        super().__init__()
        check_choice("sinkhorn", sinkhorn, SINKHORN_VARIANTS)
        self.superglue = superglue
        self.sinkhorn = sinkhorn

    def forward(self, keypoints0: torch.Tensor, scores0: torch.Tensor, descriptors0: torch.Tensor,
                image_size0: torch.Tensor, keypoints1: torch.Tensor, scores1: torch.Tensor,
                descriptors1: torch.Tensor, image_size1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scores = self.superglue.score_stages(keypoints0, scores0, descriptors0, image_size0,
                                                 keypoints1, scores1, descriptors1, image_size1)["raw_scores"]
        couplings = augment_with_dustbins(raw_scores, self.superglue.bin_score)
        log_mu, log_nu, log_total = log_marginals(torch.ones_like(scores0, dtype=torch.bool),
                                                 torch.ones_like(scores1, dtype=torch.bool))
        iterations = self.superglue.config["sinkhorn_iterations"]
        if self.sinkhorn == "scaling":
            plan = scaling_sinkhorn(couplings, log_mu, log_nu, iterations)
        else:
            plan = log_domain_sinkhorn(couplings, log_mu, log_nu, iterations)
        return plan + log_total[:, None, None], raw_scores


def export_models(superpoint: SuperPoint, superglue: SuperGlue, out_dir: str | os.PathLike,
                  weight_files: tuple[str | os.PathLike, str | os.PathLike],
                  opset: int = DEFAULT_OPSET, sinkhorn: str = "scaling") -> tuple[Path, Path]:
    """Write superpoint.onnx and superglue.onnx into ``out_dir``; returns their paths.

    ``weight_files`` (SuperPoint, SuperGlue) are the files the models were
    loaded from; their identities go into the metadata so that a stale
    export is recognised.
    """
    check_number("opset", opset, MIN_OPSET, MAX_OPSET, integer=True)
    check_choice("sinkhorn", sinkhorn, SINKHORN_VARIANTS)
    check_fixed_iterations(superglue.config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp_path, sg_path = out / SUPERPOINT_FILE, out / SUPERGLUE_FILE
    export_superpoint(superpoint, sp_path, opset, superpoint_metadata(superpoint, weight_files[0]))
    export_superglue(superglue, sg_path, opset, sinkhorn, superglue_metadata(superglue, weight_files[1], sinkhorn))
    return sp_path, sg_path


def check_fixed_iterations(config: dict[str, Any]) -> None:
    """The graph runs a fixed number of Sinkhorn iterations: an early-stopping tolerance cannot apply."""
    if config["sinkhorn_tolerance"] > 0:
        raise ValueError("the ONNX graph runs a fixed number of Sinkhorn iterations; "
                         f"sinkhorn_tolerance must be 0, got {config['sinkhorn_tolerance']}")


def superpoint_metadata(superpoint: SuperPoint, weight_file: str | os.PathLike) -> dict[str, str]:
    return {"model": "superpoint", "descriptor_dim": str(superpoint.config["descriptor_dim"]),
            "weights": file_identity(weight_file), "superglue_ros_version": package_version()}


def superglue_metadata(superglue: SuperGlue, weight_file: str | os.PathLike,
                       sinkhorn: str = "scaling") -> dict[str, str]:
    config = superglue.config
    return {"model": "superglue", "sinkhorn_iterations": str(config["sinkhorn_iterations"]), "sinkhorn": sinkhorn,
            "descriptor_dim": str(config["descriptor_dim"]), "match_threshold": repr(config["match_threshold"]),
            "bin_score": repr(superglue.bin_score.item()), "weights": file_identity(weight_file),
            "superglue_ros_version": package_version()}


def export_superpoint(superpoint: SuperPoint, path: Path, opset: int, metadata: dict[str, str]) -> None:
    """SuperPoint.forward: image (B, 1, H, W) -> logits (B, 65, H/8, W/8), descriptors (B, D, H/8, W/8)."""
    device = superpoint.convPa.weight.device
    example = torch.rand(1, 1, 15 * CELL, 20 * CELL, device=device)
    axes = {"image": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height_8", 3: "width_8"},
            "descriptors": {0: "batch", 2: "height_8", 3: "width_8"}}
    export_atomic(superpoint, (example,), path, SUPERPOINT_INPUTS, SUPERPOINT_OUTPUTS, axes, opset, metadata)


def export_superglue(superglue: SuperGlue, path: Path, opset: int, sinkhorn: str,
                     metadata: dict[str, str]) -> None:
    """One pair: keypoints (1, N, 2), scores (1, N), descriptors (1, N, D), image size (1, 2) as (H, W)
    for each image -> log_assignment (1, N+1, M+1) and the score matrix before optimal transport (1, N, M)."""
    device = superglue.bin_score.device
    dim = superglue.config["descriptor_dim"]
    generator = torch.Generator().manual_seed(0)

    def side(n: int) -> tuple[torch.Tensor, ...]:
        descriptors = nn.functional.normalize(torch.randn(1, n, dim, generator=generator), dim=2)
        return tuple(t.to(device) for t in (torch.rand(1, n, 2, generator=generator) * 100,
                                            torch.rand(1, n, generator=generator), descriptors,
                                            torch.tensor([[120.0, 160.0]])))

    axes = {name: {1: "N" if name.endswith("0") else "M"}
            for name in SUPERGLUE_INPUTS if not name.startswith("image_size")}
    axes["log_assignment"] = {1: "N_plus_1", 2: "M_plus_1"}
    axes["scores"] = {1: "N", 2: "M"}
    export_atomic(SuperGlueGraph(superglue, sinkhorn), (*side(24), *side(31)), path, SUPERGLUE_INPUTS,
                  SUPERGLUE_OUTPUTS, axes, opset, metadata)


def export_atomic(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, inputs: Sequence[str],
                  outputs: Sequence[str], axes: dict[str, dict[int, str]], opset: int,
                  metadata: dict[str, str]) -> None:
    """Trace ``module`` to ONNX under a temporary name beside ``path``, add metadata, then rename.

    The TorchScript exporter (dynamo=False) is used: torch.export's needs
    onnxscript, which is not a dependency, and tracing keeps N, M, H and W
    symbolic here (the tests run the files at other sizes). Its deprecation
    warning and the tracer's note about the constant -inf are expected.
    """
    import onnx

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module.eval(), example, tmp, input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        model = onnx.load(tmp)
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """metadata_props of an ONNX file, without loading its weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


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

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), sess_options=options,
                                        providers=list(providers or ["CPUExecutionProvider"]))


class OnnxSuperPoint:
    """SuperPoint.extract on an onnxruntime session: same heads, same torch post-processing."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None,
                 providers: Sequence[str] | None = None) -> None:
        self.config = merge_config(SUPERPOINT_DEFAULTS, config or {}, "SuperPoint")
        validate_superpoint_config(self.config)
        self.metadata = read_metadata(path)
        if self.metadata.get("descriptor_dim") != str(self.config["descriptor_dim"]):
            raise ValueError(f"{path} has descriptor_dim {self.metadata.get('descriptor_dim')}, "
                             f"the configuration asks for {self.config['descriptor_dim']}")
        self.session = open_session(path, providers)

    def extract(self, image: torch.Tensor) -> Features | list[Features]:
        """(H, W) float tensor in [0, 1] -> Features, or (B, 1, H, W) -> list of Features."""
        return extract_with(self._heads, image, self.config)

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
        baked = {"sinkhorn_iterations": int(self.metadata["sinkhorn_iterations"]),
                 "descriptor_dim": int(self.metadata["descriptor_dim"]),
                 "match_threshold": float(self.metadata["match_threshold"])}
        self.config = merge_config(SUPERGLUE_DEFAULTS, {**baked, **(config or {})}, "SuperGlue")
        validate_superglue_config(self.config)
        for name in ("sinkhorn_iterations", "descriptor_dim"):
            if self.config[name] != baked[name]:
                raise ValueError(f"{path} was exported with {name}={baked[name]}, the configuration asks for "
                                 f"{self.config[name]}; export again with that value")
        check_fixed_iterations(self.config)
        self.bin_score = torch.tensor(float(self.metadata["bin_score"]))
        self.session = open_session(path, providers)

    def match(self, features0: Features | Sequence[Features], features1: Features | Sequence[Features],
              timings: dict[str, float] | None = None) -> MatchResult | list[MatchResult]:
        """One pair (Features, Features) or two equal-length sequences, matched pair by pair.

        ``timings`` gets the whole graph's seconds under "superglue_gnn"
        (GNN and Sinkhorn are one graph here), and "sinkhorn" the time of a
        log-domain Sinkhorn redone in torch for a pair whose scores are too
        spread out for the graph's scaling iterations.
        """
        batch0, batch1, single = pair_or_batch(features0, features1)
        check_descriptor_dim(batch0 + batch1, self.config["descriptor_dim"])
        results = [self._match_pair(f0, f1, timings) for f0, f1 in zip(batch0, batch1)]
        return results[0] if single else results

    def _match_pair(self, features0: Features, features1: Features,
                    timings: dict[str, float] | None) -> MatchResult:
        if self.config["sinkhorn_iterations"] != int(self.metadata["sinkhorn_iterations"]):
            raise ValueError(f"sinkhorn_iterations is baked into the ONNX graph "
                             f"({self.metadata['sinkhorn_iterations']}); export again to change it")
        if not len(features0) or not len(features1):
            plan = unmatchable_plan(len(features0), len(features1), self._transport, "cpu")
        else:
            feeds = {**graph_inputs(features0, "0"), **graph_inputs(features1, "1")}
            with StageClock(timings, "superglue_gnn"):
                plans, raw_scores = self.session.run(list(SUPERGLUE_OUTPUTS), feeds)
            plan = torch.from_numpy(plans[0])
            scores = torch.from_numpy(raw_scores)
            if spread_of(augment_with_dustbins(scores, self.bin_score)) > MAX_EXP_DOMAIN_SPREAD:
                with StageClock(timings, "sinkhorn"):
                    plan = self._transport(scores)[0]
        return assignment_result(plan.to(features0.device), self.config["match_threshold"])

    def _transport(self, scores: torch.Tensor) -> torch.Tensor:
        """Torch optimal transport with this graph's bin score and iterations, for what the graph cannot do."""
        return log_optimal_transport(scores, self.bin_score, self.config["sinkhorn_iterations"])


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
