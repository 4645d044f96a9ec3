"""ONNX export of SuperPoint and SuperGlue, for onboard runtimes (TensorRT, onnxruntime on small GPUs and ARM CPUs).

Only the networks go into the graphs: SuperPoint's graph stops at its raw
heads, because keypoint selection returns a data-dependent number of points
that graph compilers handle badly, so NMS and top-k stay in the torch
post-processing of :mod:`superglue_ros.models.superpoint`. SuperGlue's graph
runs the GNN and a fixed number of Sinkhorn iterations (recorded in the
model's metadata) up to the log assignment; match extraction again reuses
the torch code (see :mod:`.onnx_runners`).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...version import __version__
from ...files.inputs import InputFileError, regular_file
from ...files.outputs import atomic_path, check_output_folder
from ...models.optimal_transport import fixed_path_transport
from ...models.superglue import SuperGlue
from ...models.superpoint import CELL, SuperPoint
from ...settings import check_choice, check_number
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
        plan = fixed_path_transport(raw_scores, self.superglue.bin_score, self.superglue.config["sinkhorn_iterations"],
                                    self.sinkhorn)
        return plan, raw_scores


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
    out = check_output_folder(out_dir)  # a file or a read-only place: one line, before the export
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
            "weights": file_identity(weight_file), "superglue_ros_version": __version__}


def superglue_metadata(superglue: SuperGlue, weight_file: str | os.PathLike,
                       sinkhorn: str = "scaling") -> dict[str, str]:
    config = superglue.config
    return {"model": "superglue", "sinkhorn_iterations": str(config["sinkhorn_iterations"]), "sinkhorn": sinkhorn,
            "descriptor_dim": str(config["descriptor_dim"]), "match_threshold": repr(config["match_threshold"]),
            "bin_score": repr(superglue.bin_score.item()), "weights": file_identity(weight_file),
            "superglue_ros_version": __version__}


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
    """Trace ``module`` to ONNX under a temporary name beside ``path``, add metadata, then rename it into place.

    The TorchScript exporter (dynamo=False) is used: torch.export's needs
    onnxscript, which is not a dependency, and tracing keeps N, M, H and W
    symbolic here (the tests run the files at other sizes). Its deprecation
    warning and the tracer's note about the constant -inf are expected.
    """
    import onnx

    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module.eval(), example, str(tmp), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
        model = onnx.load(str(tmp))
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """metadata_props of an ONNX file, without loading its weights."""
    import onnx

    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(regular_file(path, "ONNX file")), load_external_data=False)
    except (DecodeError, OSError, InputFileError):  # damaged or cut short: no metadata, so not current
        return {}
    return {prop.key: prop.value for prop in model.metadata_props}
