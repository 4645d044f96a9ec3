"""SuperGlue on fixed-shape, masked inputs without a host synchronisation: few, large tensor operations.

``SuperGlue.match`` adapts to its inputs (padding only when needed, the
Sinkhorn arithmetic chosen from the data), which costs host synchronisations
and about five times as many tensor operations. :class:`FixedSuperGlue`
takes both images' keypoints in ``K`` slots with validity masks (as
``fixed_keypoints`` gives them) and always computes the same sequence:

- both images go through the keypoint encoder and every GNN layer as one
  (2B*K, D) matrix, so each projection is one matrix product; a cross layer
  swaps the two images' keys and values;
- the weights are derived once: BatchNorm folded into the encoder's
  convolutions, query/key/value in one head-major matrix, the merge
  projection and BatchNorm folded into the MLP's first layer, the MLP's last
  bias carried by a constant hidden unit, and the score scale 1/sqrt(D) split
  over the two final projections (a power of two for D = 256: the same bits);
- attention is ``scaled_dot_product_attention`` (fused kernels) with an
  additive key-padding mask, heads split as the reference does
  (channel = d * heads + h);
- Sinkhorn and its masks are one operator (:mod:`.sinkhorn_op`), in float32
  whatever the network's precision; matches come from max, gather and
  comparisons, padded slots never match.

The GNN's weights may be cast once to half precision (fp16 on CUDA, bf16 on
a CPU), so that no per-operation casting kernel runs. The keypoint encoder,
the final projection and the score matrix stay float32 (small, and in half
precision they lose keypoint positions and the score differences that decide
matches: bf16 agreement with exact matches on real frames drops from about
99% to about 97%). Prepare again after changing the model's weights: this is
a snapshot.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attention import batch_norm_affine
from .optimal_transport import extract_matches
from .sinkhorn_op import log_transport
from .superglue import SuperGlue, scale_orientation_columns

# Extra hidden units of each MLP: the first is constantly 1 and carries the output bias through the last
# matrix product; the others keep the width a multiple of 8 (tensor cores want aligned matrices).
BIAS_UNITS = 8


class FixedMatches(NamedTuple):
    """Matches of a batch of padded pairs: matches0 (B, K) index into image 1 or -1, matches1 (B, K),
    their scores (B, K) (0 for padded slots), and the (B, K+1, K+1) float32 log assignment."""

    matches0: torch.Tensor
    matches1: torch.Tensor
    matching_scores0: torch.Tensor
    matching_scores1: torch.Tensor
    log_assignment: torch.Tensor


class PreparedLayer(NamedTuple):
    """One GNN layer's matrices, transposed for ``addmm`` on (rows, channels)."""

    qkv: torch.Tensor  # (D, 3D): head-major queries | keys | values
    qkv_bias: torch.Tensor
    state: torch.Tensor  # (D, 2D + BIAS_UNITS): the hidden layer's weights on the state ...
    message: torch.Tensor  # ... and on the head-major attention output (merge folded in)
    hidden_bias: torch.Tensor
    out: torch.Tensor  # (2D + BIAS_UNITS, D): the output layer, its bias in the constant unit's row
    cross: bool


def fold_pointwise(mlp: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight^T, bias) of each Conv1d of a ``pointwise_mlp``, the following eval-mode BatchNorm folded in."""
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []
    for module in mlp:
        if isinstance(module, nn.Conv1d):
            layers.append((module.weight[..., 0], module.bias))
        elif isinstance(module, nn.BatchNorm1d):
            scale, shift = batch_norm_affine(module)
            weight, bias = layers[-1]
            layers[-1] = (weight * scale[:, None], bias * scale + shift)
    return [(weight.t(), bias) for weight, bias in layers]


def prepare_layer(layer: nn.Module, cross: bool) -> PreparedLayer:
    """A GNN layer's derived weights (see ``AttentionalPropagation.weights``) in the fixed path's layout."""
    weights = layer.weights()
    dim = weights.qkv_weight.shape[1]
    hidden = weights.hidden_weight.shape[0]
    pad_rows = weights.hidden_weight.new_zeros((BIAS_UNITS, 2 * dim))
    hidden_weight = torch.cat([weights.hidden_weight, pad_rows])  # (hidden + units, 2D)
    hidden_bias = torch.cat([weights.hidden_bias, weights.hidden_bias.new_zeros(BIAS_UNITS)])
    hidden_bias[hidden] = 1.0
    out_conv = layer.mlp[3]
    out = torch.cat([out_conv.weight[..., 0].t(), out_conv.bias[None],
                     out_conv.weight.new_zeros((BIAS_UNITS - 1, dim))])
    return PreparedLayer(weights.qkv_weight.t(), weights.qkv_bias, hidden_weight[:, :dim].t(),
                         hidden_weight[:, dim:].t(), hidden_bias, out, cross)


class FixedSuperGlue:
    """A SuperGlue's arithmetic in the fixed path's form, its GNN in ``dtype`` (float32: the exact results)."""

    def __init__(self, superglue: SuperGlue, dtype: torch.dtype = torch.float32) -> None:
        if superglue.training:
            raise ValueError("FixedSuperGlue folds BatchNorm statistics: put the model in eval mode first")
        self.superglue = superglue
        self.dtype = dtype
        self.num_heads = superglue.config["num_heads"]
        with torch.no_grad():
            cast = lambda t: t.detach().to(dtype).contiguous()  # noqa: E731
            exact = lambda t: t.detach().float().contiguous()  # noqa: E731
            self.encoder = [(exact(w), exact(b)) for w, b in fold_pointwise(superglue.kenc.encoder)]
            self.layers = [PreparedLayer(*(cast(t) for t in prepare_layer(layer, kind == "cross")[:-1]),
                                         kind == "cross")
                           for layer, kind in zip(superglue.gnn.layers, superglue.gnn.kinds)]
            # raw scores = <mdesc0, mdesc1> / sqrt(D): each side carries D ** -0.25
            scale = superglue.config["descriptor_dim"] ** -0.25
            self.final = (exact(superglue.final_proj.weight[..., 0].t() * scale),
                          exact(superglue.final_proj.bias * scale))
            self.bin_score = superglue.bin_score.detach().float()

    @torch.inference_mode()
    def __call__(self, keypoints0: torch.Tensor, scores0: torch.Tensor, descriptors0: torch.Tensor,
                 valid0: torch.Tensor, keypoints1: torch.Tensor, scores1: torch.Tensor,
                 descriptors1: torch.Tensor, valid1: torch.Tensor, image_size: tuple[int, int],
                 scale_orientation0: torch.Tensor | None = None,
                 scale_orientation1: torch.Tensor | None = None) -> FixedMatches:
        """Match B pairs of padded keypoints: (B, K, 2) pixels, (B, K) scores, (B, K, D) descriptors,
        (B, K) bool valid, both images of ``image_size`` (H, W); scale/orientation (B, K, 2) for models
        that read them. Each pair needs a valid keypoint on at least one side."""
        batch, slots = valid0.shape
        config = self.superglue.config
        frames = None
        if config["scale_orientation"]:
            if scale_orientation0 is None or scale_orientation1 is None:
                raise ValueError("this SuperGlue reads keypoint scale and orientation, which these features lack")
            frames = torch.cat([scale_orientation0, scale_orientation1])
        x = self.encode(torch.cat([keypoints0, keypoints1]), torch.cat([scores0, scores1]),
                        torch.cat([descriptors0, descriptors1]), image_size, frames)
        valid = torch.cat([valid0, valid1])
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        x = self.propagate(x, valid, batch, slots)
        if self.dtype != torch.float32:
            x = x.float()
        mdesc = torch.addmm(self.final[1], x, self.final[0]).view(2, batch, slots, -1)
        mdesc0, mdesc1 = mdesc.unbind(0)
        raw_scores = torch.bmm(mdesc0, mdesc1.transpose(1, 2))
        log_assignment = log_transport(raw_scores, self.bin_score, valid0, valid1, config["sinkhorn_iterations"])
        return FixedMatches(*extract_matches(log_assignment, config["match_threshold"]), log_assignment)

    def encode(self, keypoints: torch.Tensor, scores: torch.Tensor, descriptors: torch.Tensor,
               image_size: tuple[int, int], frames: torch.Tensor | None) -> torch.Tensor:
        """(2B*K, D) initial states: descriptors plus the encoded keypoints, with ``normalize_keypoints``'s
        float32 arithmetic (its scale computed the same way, as a number)."""
        height, width = image_size
        scale = float(np.float32(0.7) * np.float32(max(height, width)))
        columns = [(keypoints[..., 0] - width / 2) / scale, (keypoints[..., 1] - height / 2) / scale, scores]
        inputs = torch.stack(columns, dim=-1)
        if frames is not None:
            inputs = torch.cat([inputs, scale_orientation_columns(frames, scale)], dim=-1)
        h = inputs.view(-1, inputs.shape[-1])
        for i, (weight, bias) in enumerate(self.encoder):
            h = torch.addmm(bias, h, weight)
            if i < len(self.encoder) - 1:
                h = torch.relu_(h)
        return h + descriptors.view(h.shape)

    def propagate(self, x: torch.Tensor, valid: torch.Tensor, batch: int, slots: int) -> torch.Tensor:
        """The attentional GNN on (2B*K, D) states of image 0's pairs then image 1's; valid (2B, K).

        An image without any valid keypoint attends to all its slots (its results are masked later)
        rather than to none, which would give NaN."""
        keys = valid | ~valid.any(dim=1, keepdim=True)
        self_mask = keys.to(self.dtype).log().view(2 * batch, 1, 1, slots)  # 0 or -inf, added to the scores
        cross_mask = self_mask.roll(batch, 0)
        heads = self.num_heads
        for layer in self.layers:
            qkv = torch.addmm(layer.qkv_bias, x, layer.qkv).view(2 * batch, slots, 3, heads, -1)
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, 2B, heads, K, D/heads)
            if layer.cross:
                q = qkv[0]
                _, k, v = qkv.roll(batch, 1).unbind(0)
            else:
                q, k, v = qkv.unbind(0)
            message = F.scaled_dot_product_attention(q, k, v, attn_mask=cross_mask if layer.cross else self_mask)
            message = message.transpose(1, 2).reshape(x.shape)
            hidden = torch.addmm(torch.addmm(layer.hidden_bias, x, layer.state), message, layer.message)
            x = torch.addmm(x, torch.relu_(hidden), layer.out)
        return x
