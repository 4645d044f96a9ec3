"""SuperGlue's building blocks: point-wise MLPs and the attentional graph neural network.

Parameter names mirror the official state dicts (``kenc.encoder.N``,
``gnn.layers.N.attn.proj.K``, ``gnn.layers.N.mlp.K``). The 1x1 convolutions
are stored as ``Conv1d`` for that reason but evaluated as matrix products on
(B, N, C) rows, and both images go through every layer in a single call:
projections, normalisation and MLPs act on each keypoint independently, so
only attention needs to know which image a keypoint belongs to.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def pointwise_mlp(channels: Sequence[int]) -> nn.Sequential:
    """Conv1d(k=1) layers with BatchNorm + ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(1, len(channels)):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1, bias=True))
        if i < len(channels) - 1:
            layers += [nn.BatchNorm1d(channels[i]), nn.ReLU()]
    nn.init.constant_(layers[-1].bias, 0.0)
    return nn.Sequential(*layers)


def linear(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply a kernel-1 Conv1d to (B, L, C_in) rows."""
    return F.linear(x, conv.weight[..., 0], conv.bias)


def batch_norm_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm1d as (scale, shift), so it can fold into a neighbouring layer."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def batch_norm_rows(x: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """BatchNorm1d over the last axis of (B, L, C); eval mode folds into one affine map."""
    if bn.training:
        return bn(x.transpose(1, 2)).transpose(1, 2)
    scale, shift = batch_norm_affine(bn)
    return x * scale + shift


def run_rows(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for layer in mlp:
        if isinstance(layer, nn.Conv1d):
            x = linear(x, layer)
        elif isinstance(layer, nn.BatchNorm1d):
            x = batch_norm_rows(x, layer)
        else:
            x = layer(x)
    return x


def head_major(dim: int, num_heads: int) -> torch.Tensor:
    """Channel permutation from the official dim-major layout (channel = d * heads + h)
    to head-major (h * dim/heads + d), where each head's channels are contiguous."""
    return torch.arange(dim).view(dim // num_heads, num_heads).t().reshape(-1)


class MultiHeadedAttention(nn.Module):
    """Scaled dot-product attention whose heads interleave channels: channel = d * heads + h.

    The parameters keep the official layout; ``projection`` permutes the
    projection rows to head-major order, so every head is a strided view that
    the fused attention kernel reads in place (no per-head copies).
    """

    def __init__(self, num_heads: int, dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.merge = nn.Conv1d(dim, dim, kernel_size=1)
        self.proj = nn.ModuleList([nn.Conv1d(dim, dim, kernel_size=1) for _ in range(3)])

    def projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias giving head-major query, key and value in one matrix product."""
        order = head_major(self.merge.weight.shape[0], self.num_heads).to(self.merge.weight.device)
        weight = torch.cat([p.weight[order, :, 0] for p in self.proj])
        bias = torch.cat([p.bias[order] for p in self.proj])
        return weight, bias

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_mask: torch.Tensor | None) -> torch.Tensor:
        """Head-major (B, N, D) queries against (B, M, D) keys/values -> head-major (B, N, D)
        messages before the merge projection."""
        mask = None if key_mask is None else key_mask[:, None, None, :]
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            out = bf16_attention(q, k, v, mask)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).flatten(2)


def bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   mask: torch.Tensor | None) -> torch.Tensor:
    """Attention as two bf16 matrix products, for fast mode on CPU.

    The fused CPU kernel computes in float32 whatever the input type, while
    bf16 matrix products reach the CPU's bf16 units, several times faster
    (``superglue-ros bench --precision bf16`` measures it), and matches agree
    with exact mode as often as with the fused kernel. Not for fp16: CPUs
    without fp16 matrix units run it far slower than the fused kernel.
    """
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class LayerWeights(NamedTuple):
    """The matrices one GNN layer multiplies by, derived from its official parameters."""

    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor


class AttentionalPropagation(nn.Module):
    """One message-passing layer: attention message, then an MLP on [state, message]."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = MultiHeadedAttention(num_heads, dim)
        self.mlp = pointwise_mlp([2 * dim, 2 * dim, dim])
        self._cache: tuple[tuple, LayerWeights] | None = None

    def weights(self) -> LayerWeights:
        """Derived weights, kept between calls while no gradient is recorded.

        The key holds every parameter's storage and version counter, so
        ``load_state_dict``, an optimiser step, ``.to()`` or a switch to
        training invalidate it; with gradients on they are always recomputed.
        """
        if torch.is_grad_enabled():
            return self._derive()
        key = (self.mlp[1].training, *((p.data_ptr(), p._version) for p in self.parameters()),
               *((b.data_ptr(), b._version) for b in self.buffers()))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._derive())
        return self._cache[1]

    def _derive(self) -> LayerWeights:
        """The MLP's first layer, acting on [state, head-major attention output], absorbs the
        merge projection (linear, and feeding only this layer: one matrix product fewer per
        layer) and, in eval mode, the BatchNorm that follows. Same function; float32
        rounding differs at ~1e-7."""
        conv, bn, merge = self.mlp[0], self.mlp[1], self.attn.merge
        dim = merge.weight.shape[0]
        order = head_major(dim, self.attn.num_heads).to(conv.weight.device)
        w_state, w_message = conv.weight[..., 0].split(dim, dim=1)
        weight = torch.cat([w_state, w_message @ merge.weight[:, order, 0]], dim=1)
        bias = conv.bias + w_message @ merge.bias
        if not bn.training:
            scale, shift = batch_norm_affine(bn)
            weight, bias = weight * scale[:, None], bias * scale + shift
        return LayerWeights(*self.attn.projection(), weight, bias)

    def update(self, x: torch.Tensor, message: torch.Tensor, weights: LayerWeights) -> torch.Tensor:
        """New state from the (B, L, D) state and head-major attention output."""
        hidden = F.linear(torch.cat([x, message], dim=-1), weights.hidden_weight, weights.hidden_bias)
        if self.mlp[1].training:
            hidden = self.mlp[1](hidden.transpose(1, 2)).transpose(1, 2)
        return x + linear(torch.relu(hidden), self.mlp[3])


class AttentionalGNN(nn.Module):
    def __init__(self, dim: int, kinds: Sequence[str], num_heads: int) -> None:
        super().__init__()
        self.kinds = list(kinds)
        self.layers = nn.ModuleList([AttentionalPropagation(dim, num_heads) for _ in kinds])

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor,
                mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update (B, N, D) and (B, M, D) descriptors; both read the pre-layer state."""
        n = desc0.shape[1]
        x = torch.cat([desc0, desc1], dim=1)
        for layer, kind in zip(self.layers, self.kinds):
            weights = layer.weights()
            q, k, v = F.linear(x, weights.qkv_weight, weights.qkv_bias).chunk(3, dim=-1)
            (q0, q1), (k0, k1), (v0, v1) = (t.split([n, t.shape[1] - n], dim=1) for t in (q, k, v))
            if kind == "cross":
                k0, k1, v0, v1, mask_src0, mask_src1 = k1, k0, v1, v0, mask1, mask0
            else:
                mask_src0, mask_src1 = mask0, mask1
            message = torch.cat([layer.attn.attend(q0, k0, v0, mask_src0),
                                 layer.attn.attend(q1, k1, v1, mask_src1)], dim=1)
            x = layer.update(x, message, weights)
        return x[:, :n], x[:, n:]
