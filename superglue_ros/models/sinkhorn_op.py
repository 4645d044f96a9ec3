"""Optimal transport of padded, masked pairs as one dispatched operation: ``superglue_ros::log_transport``.

The exact path runs Sinkhorn as a Python loop of several tensor operations
per iteration and picks its arithmetic after reading the data (a host
synchronisation). Here the whole transport -- dustbins, marginals from the
validity masks, a fixed number of log-domain iterations from zero potentials,
the final rescaling -- is one operator: on the CPU it runs the reference's
log-domain iterations in torch; on CUDA Triton kernels run the iterations
without Python in between (the torch loop where Triton is missing). Either
way no value is read back to the host, so a CUDA graph can hold it.
"""
from __future__ import annotations

import torch

from .optimal_transport import augment_with_dustbins, log_domain_sinkhorn, log_marginals

# CUDA only: (device, shape, iterations) -> milliseconds per graph replay of each Triton layout, filled by
# sinkhorn_triton.layout_for the first time a shape runs ({} when the timing failed); benchmarks report it.
LAYOUT_TIMINGS: dict[tuple[str, tuple[int, ...], int], dict[str, float]] = {}


@torch.library.custom_op("superglue_ros::log_transport", mutates_args=())
def log_transport(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor, valid1: torch.Tensor,
                  iterations: int) -> torch.Tensor:
    """(B, N, M) float32 scores -> (B, N+1, M+1) log assignment with dustbins, of the (B, N) / (B, M) valid
    keypoints (padded rows and columns come out -inf). Each pair needs a valid keypoint on at least one side
    (a pair with none has nothing to normalise by and comes out NaN)."""
    return torch_log_transport(scores, bin_score, valid0, valid1, iterations)


def torch_log_transport(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor,
                        valid1: torch.Tensor, iterations: int) -> torch.Tensor:
    """The reference's log-domain iterations in torch (the CPU implementation and the CUDA fallback)."""
    couplings = augment_with_dustbins(scores, bin_score)
    log_mu, log_nu, log_total = log_marginals(valid0, valid1)
    return log_domain_sinkhorn(couplings, log_mu, log_nu, iterations) + log_total[:, None, None]


@log_transport.register_fake
def _(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor, valid1: torch.Tensor,
      iterations: int) -> torch.Tensor:
    b, n, m = scores.shape
    return scores.new_empty((b, n + 1, m + 1))


@log_transport.register_kernel("cuda")
def _(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor, valid1: torch.Tensor,
      iterations: int) -> torch.Tensor:
    try:
        from .sinkhorn_triton import layout_for, triton_log_transport
    except ImportError:  # no Triton in this installation
        return torch_log_transport(scores, bin_score, valid0, valid1, iterations)
    with torch.cuda.device(scores.device):  # Triton launches on the current device, the tensors' may be cuda:N
        layout = layout_for(scores, bin_score, valid0, valid1, iterations)
        return triton_log_transport(scores, bin_score, valid0, valid1, iterations, layout=layout)
