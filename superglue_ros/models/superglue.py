"""SuperGlue: attentional graph neural network + optimal transport (Sarlin et al., 2020).

Module and parameter names mirror the official ``superglue_*.pth`` state
dicts (``kenc``, ``gnn``, ``final_proj``, ``bin_score``) so they load with
``strict=True``; the layers themselves are in :mod:`.attention`. Pairs of
different keypoint counts are matched as one padded, masked batch with the
results each gets alone.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..settings import Setting, check_all, defaults, merge_config, reconfigure
from ..timing import StageClock
from .attention import AttentionalGNN, linear, pointwise_mlp, run_rows
from .optimal_transport import extract_matches, log_optimal_transport
from .types import Features, MatchResult

SETTINGS: tuple[Setting, ...] = (
    Setting("descriptor_dim", int, 256, "descriptor length", 1, None),
    Setting("num_heads", int, 4, "attention heads", 1, None),
    Setting("sinkhorn_iterations", int, 100, "Sinkhorn iterations of the optimal transport", 0, 10000),
    Setting("match_threshold", float, 0.2, "minimum matching score of an accepted match", 0.0, 1.0),
    Setting("sinkhorn_tolerance", float, 0.0, "stop Sinkhorn early once row marginals are this close "
            "(0: run every iteration, the exact mode)", 0.0, 1.0),
    # The project's SIFT models also encode each keypoint's scale and orientation (the official ones do not).
    Setting("scale_orientation", bool, False, "the keypoint encoder also reads scale and orientation"),
)
DEFAULT_CONFIG: dict[str, Any] = {
    **defaults(SETTINGS),
    "keypoint_encoder": [32, 64, 128, 256],
    "GNN_layers": ["self", "cross"] * 9,
}
# What the weights determine; everything else may change between pairs.
FIXED_BY_WEIGHTS = ("descriptor_dim", "num_heads", "scale_orientation", "keypoint_encoder", "GNN_layers")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    checked = check_all(SETTINGS, config)
    if checked["descriptor_dim"] % checked["num_heads"]:
        raise ValueError(f"descriptor_dim ({checked['descriptor_dim']}) must be divisible by "
                         f"num_heads ({checked['num_heads']})")
    encoder = checked["keypoint_encoder"]
    if not isinstance(encoder, (list, tuple)) or not encoder:
        raise ValueError(f"keypoint_encoder must be a non-empty list of layer widths, got {encoder!r}")
    for i, width in enumerate(encoder):
        Setting(f"keypoint_encoder[{i}]", int, None, "", 1, None).check(width)
    layers = checked["GNN_layers"]
    if not isinstance(layers, (list, tuple)) or any(kind not in ("self", "cross") for kind in layers):
        raise ValueError(f"GNN_layers must be a list of 'self'/'cross', got {layers!r}")
    return checked


def normalize_keypoints(keypoints: torch.Tensor, sizes_hw: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) pixels -> centred coordinates scaled by 0.7 * the larger image side.

    sizes_hw: (B, 2) image height and width (the full image, not the 8-px grid).
    """
    wh = sizes_hw.flip(1).to(keypoints.dtype)
    return (keypoints - wh[:, None, :] / 2) / normalising_scale(wh)[:, None, :]


def normalising_scale(wh: torch.Tensor) -> torch.Tensor:
    """(B, 1): 0.7 * the larger side of (B, 2) image sizes."""
    return 0.7 * wh.max(dim=1, keepdim=True).values


def encode_scale_orientation(frames: torch.Tensor, sizes_hw: torch.Tensor) -> torch.Tensor:
    """(B, N, 2) diameters in pixels and orientations in radians -> (B, N, 3) encoder inputs:
    log diameter in normalised units (like the positions, independent of resizing), cos and
    sin of the orientation (so that attention's dot products see orientation differences)."""
    return scale_orientation_columns(frames, normalising_scale(sizes_hw.flip(1).to(frames.dtype)))


def scale_orientation_columns(frames: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """:func:`encode_scale_orientation` given the normalising scale ((B, 1) or one number)."""
    log_size = torch.log(frames[..., 0].clamp(min=1e-3) / scale)
    return torch.stack([log_size, torch.cos(frames[..., 1]), torch.sin(frames[..., 1])], dim=-1)


class KeypointEncoder(nn.Module):
    """Lifts (x, y, score[, log scale, cos, sin orientation]) into descriptor space so the GNN can
    reason about geometry."""

    def __init__(self, widths: Sequence[int], descriptor_dim: int, inputs: int = 3) -> None:
        super().__init__()
        self.encoder = pointwise_mlp([inputs, *widths, descriptor_dim])

    def forward(self, keypoints: torch.Tensor, scores: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        columns = [keypoints, scores[..., None]] + ([] if extra is None else [extra])
        return run_rows(self.encoder, torch.cat(columns, dim=-1))


class SuperGlue(nn.Module):
    """Matches two sets of keypoints+descriptors with a GNN and Sinkhorn.

    ``match`` is the public entry point; ``forward`` takes padded batches and
    returns every intermediate stage (used by exactness tests and training).
    """

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = validate_config(merge_config(DEFAULT_CONFIG, config, "SuperGlue"))
        dim = self.config["descriptor_dim"]
        self.kenc = KeypointEncoder(self.config["keypoint_encoder"], dim,
                                    6 if self.config["scale_orientation"] else 3)
        self.gnn = AttentionalGNN(dim, self.config["GNN_layers"], self.config["num_heads"])
        self.final_proj = nn.Conv1d(dim, dim, kernel_size=1, bias=True)
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))

    def forward(self, keypoints0: torch.Tensor, scores0: torch.Tensor, descriptors0: torch.Tensor,
                size0: torch.Tensor, keypoints1: torch.Tensor, scores1: torch.Tensor,
                descriptors1: torch.Tensor, size1: torch.Tensor,
                mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                scale_orientation0: torch.Tensor | None = None, scale_orientation1: torch.Tensor | None = None,
                ) -> dict[str, torch.Tensor]:
        """Padded batch in, all stages out.

        keypoints (B, N, 2) pixels, scores (B, N), descriptors (B, N, D), size (B, 2) as (H, W),
        masks (B, N) bool (True = real keypoint) or None when nothing is padded,
        scale_orientation (B, N, 2) as in Features (read only if the config says so).
        """
        stages = self.score_stages(keypoints0, scores0, descriptors0, size0,
                                   keypoints1, scores1, descriptors1, size1, mask0, mask1,
                                   scale_orientation0, scale_orientation1)
        stages["log_assignment"] = self.optimal_transport(stages["raw_scores"], mask0, mask1)
        return stages

    def score_stages(self, keypoints0: torch.Tensor, scores0: torch.Tensor, descriptors0: torch.Tensor,
                     size0: torch.Tensor, keypoints1: torch.Tensor, scores1: torch.Tensor,
                     descriptors1: torch.Tensor, size1: torch.Tensor,
                     mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                     scale_orientation0: torch.Tensor | None = None,
                     scale_orientation1: torch.Tensor | None = None,
                     ) -> dict[str, torch.Tensor]:
        """Keypoint encoder, attentional GNN and final projection up to the (B, N, M) score matrix."""
        extra0, extra1 = self._encoder_extras(scale_orientation0, size0, scale_orientation1, size1)
        kenc0 = self.kenc(normalize_keypoints(keypoints0, size0), scores0, extra0)
        kenc1 = self.kenc(normalize_keypoints(keypoints1, size1), scores1, extra1)
        gnn0, gnn1 = self.gnn(descriptors0 + kenc0, descriptors1 + kenc1, mask0, mask1)
        mdesc0, mdesc1 = linear(gnn0, self.final_proj), linear(gnn1, self.final_proj)
        raw_scores = torch.einsum("bnd,bmd->bnm", mdesc0, mdesc1) / self.config["descriptor_dim"] ** 0.5
        return {"kenc0": kenc0, "kenc1": kenc1, "gnn_desc0": gnn0, "gnn_desc1": gnn1,
                "mdesc0": mdesc0, "mdesc1": mdesc1, "raw_scores": raw_scores}

    def _encoder_extras(self, frames0: torch.Tensor | None, size0: torch.Tensor,
                        frames1: torch.Tensor | None, size1: torch.Tensor,
                        ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.config["scale_orientation"]:
            return None, None
        if frames0 is None or frames1 is None:
            raise ValueError("this SuperGlue reads keypoint scale and orientation, which these features lack "
                             "(it was trained for SIFT; use the front end stored with the model)")
        return encode_scale_orientation(frames0, size0), encode_scale_orientation(frames1, size1)

    def optimal_transport(self, raw_scores: torch.Tensor, mask0: torch.Tensor | None = None,
                          mask1: torch.Tensor | None = None) -> torch.Tensor:
        raw_scores = raw_scores.to(self.bin_score.device)
        return log_optimal_transport(raw_scores, self.bin_score, self.config["sinkhorn_iterations"],
                                     mask0, mask1, self.config["sinkhorn_tolerance"])

    def configure(self, **changes: Any) -> None:
        """Change matching settings between pairs (threshold, iterations); the architecture is the weights'."""
        self.config = reconfigure(self.config, SETTINGS, changes, "SuperGlue", FIXED_BY_WEIGHTS)

    @torch.inference_mode()
    def match(self, features0: Features | Sequence[Features],
              features1: Features | Sequence[Features],
              timings: dict[str, float] | None = None) -> MatchResult | list[MatchResult]:
        """Match one pair (Features, Features) or a batch (two equal-length sequences).

        A batch with different keypoint counts is padded and masked, so every
        pair gets the result it would get alone. ``timings``, when given, gets
        the seconds spent in the GNN ("gnn") and in Sinkhorn ("sinkhorn"); on
        CUDA that costs a synchronisation per stage.
        """
        return match_with(self._plans, self.optimal_transport, features0, features1, self.config, timings)

    def _plans(self, batch0: list[Features], batch1: list[Features],
               timings: dict[str, float] | None) -> list[torch.Tensor]:
        """(n+1, m+1) log assignments of pairs with keypoints on both sides, as one padded batch."""
        device = self.bin_score.device
        kpts0, scores0, desc0, size0, mask0, frames0 = pad_features(batch0, device)
        kpts1, scores1, desc1, size1, mask1, frames1 = pad_features(batch1, device)
        if bool(mask0.all()) and bool(mask1.all()):
            mask0 = mask1 = None
        with StageClock(timings, "gnn", device):
            raw_scores = self.score_stages(kpts0, scores0, desc0, size0, kpts1, scores1, desc1, size1,
                                           mask0, mask1, frames0, frames1)["raw_scores"]
        with StageClock(timings, "sinkhorn", device):
            log_assignment = self.optimal_transport(raw_scores, mask0, mask1)
        return [unpad_plan(log_assignment[b], len(f0), len(f1)) for b, (f0, f1) in enumerate(zip(batch0, batch1))]


PlanFunction = Callable[[list[Features], list[Features], "dict[str, float] | None"], list[torch.Tensor]]


def match_with(plans: PlanFunction, transport: Callable[[torch.Tensor], torch.Tensor],
               features0: Features | Sequence[Features], features1: Features | Sequence[Features],
               config: dict[str, Any], timings: dict[str, float] | None = None) -> MatchResult | list[MatchResult]:
    """SuperGlue's matching around any implementation of its network (torch, onnxruntime).

    ``plans`` maps pairs with keypoints on both sides to their log
    assignments; ``transport`` (scores (1, n, m) -> plans) gives the plan of a
    pair with no keypoints on one side, whose mass all goes to the dustbins.
    Matches are the mutual best assignments above ``config["match_threshold"]``.
    """
    batch0, batch1, single = pair_or_batch(features0, features1)
    check_descriptor_dim(batch0 + batch1, config["descriptor_dim"])
    results: list[MatchResult | None] = [None] * len(batch0)
    full = [i for i, (f0, f1) in enumerate(zip(batch0, batch1)) if len(f0) and len(f1)]
    for i in set(range(len(batch0))) - set(full):
        plan = unmatchable_plan(len(batch0[i]), len(batch1[i]), transport)
        results[i] = assignment_result(plan, config["match_threshold"])
    if full:
        for i, plan in zip(full, plans([batch0[i] for i in full], [batch1[i] for i in full], timings)):
            results[i] = assignment_result(plan, config["match_threshold"])
    return results[0] if single else results  # type: ignore[return-value]


def pair_or_batch(features0: Features | Sequence[Features], features1: Features | Sequence[Features],
                  ) -> tuple[list[Features], list[Features], bool]:
    """The two call forms of ``match`` -- (Features, Features) or two equal-length sequences --
    as two lists, and whether a single pair was given."""
    if isinstance(features0, Features) and isinstance(features1, Features):
        return [features0], [features1], True
    if isinstance(features0, Features) or isinstance(features1, Features):
        raise TypeError("match() takes two Features or two sequences of Features")
    if len(features0) != len(features1):
        raise ValueError(f"batched match needs as many features0 as features1 "
                         f"({len(features0)} != {len(features1)})")
    return list(features0), list(features1), False


def check_descriptor_dim(features: Sequence[Features], dim: int) -> None:
    for f in features:
        if len(f) and f.descriptor_dim != dim:
            raise ValueError(f"descriptors have dimension {f.descriptor_dim}, this SuperGlue expects {dim}")


def assignment_result(log_assignment: torch.Tensor, match_threshold: float) -> MatchResult:
    """Matches and scores of one pair's (N+1, M+1) log assignment."""
    m0, m1, s0, s1 = extract_matches(log_assignment[None], match_threshold)
    return MatchResult(m0[0], m1[0], s0[0], s1[0], log_assignment)


def unmatchable_plan(n: int, m: int, transport: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(n+1, m+1) log assignment of a pair where one side has no keypoints: all mass to the
    dustbins, as ``transport`` (scores (1, n, m) -> plans, on its own device) computes it."""
    return transport(torch.zeros((1, n, m)))[0]


def pad_features(batch: Sequence[Features], device: torch.device,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stack Features of different lengths: (B, N, 2), (B, N), (B, N, D), sizes (B, 2), mask (B, N),
    and scale/orientation (B, N, 2) if every one has them, else None."""
    length = max(len(f) for f in batch)
    dim = batch[0].descriptor_dim

    def padded(t: torch.Tensor, width: int | None) -> torch.Tensor:
        shape = (length,) if width is None else (length, width)
        out = torch.zeros(shape, dtype=torch.float32, device=device)
        out[: t.shape[0]] = t.to(device=device, dtype=torch.float32)
        return out

    keypoints = torch.stack([padded(f.keypoints, 2) for f in batch])
    scores = torch.stack([padded(f.scores, None) for f in batch])
    descriptors = torch.stack([padded(f.descriptors, dim) for f in batch])
    sizes = torch.tensor([f.image_size for f in batch], dtype=torch.float32, device=device)
    mask = torch.arange(length, device=device)[None] < torch.tensor([len(f) for f in batch], device=device)[:, None]
    frames = None
    if all(f.scale_orientation is not None for f in batch):
        frames = torch.stack([padded(f.scale_orientation, 2) for f in batch])  # type: ignore[arg-type]
    return keypoints, scores, descriptors, sizes, mask, frames


def unpad_plan(plan: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """(N_pad+1, M_pad+1) -> (n+1, m+1): real rows/columns plus the dustbins (always last)."""
    rows = torch.cat([torch.arange(n, device=plan.device), torch.tensor([plan.shape[0] - 1], device=plan.device)])
    cols = torch.cat([torch.arange(m, device=plan.device), torch.tensor([plan.shape[1] - 1], device=plan.device)])
    return plan[rows][:, cols]
