"""The CUDA implementation of ``superglue_ros::log_transport``: every Sinkhorn iteration in one Triton launch.

One program per pair loops over the iterations; each half-iteration sweeps
the (N+1, M+1) couplings in tiles with an online logsumexp and writes its
potentials to a small scratch buffer, and a block barrier separates the row
and column sweeps (every thread reads potentials other threads wrote). The
dustbin row and column and the masses of the valid keypoints are formed on the
fly, so the couplings matrix is never materialised. The arithmetic is the
reference's log-domain iterations; only the order of the additions inside a
logsumexp differs. Importable without a GPU: with ``TRITON_INTERPRET=1`` set
before the import, Triton's interpreter runs the same kernel on CPU tensors
(that is how the tests check it).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _couplings(scores_ptr, bin_score, rows, cols, N, M):
    """The (rows, cols) tile of the dustbin-augmented couplings, -inf outside the (N+1, M+1) matrix."""
    real = (rows[:, None] < N) & (cols[None, :] < M)
    tile = tl.load(scores_ptr + rows[:, None] * M + cols[None, :], mask=real, other=0.0)
    tile = tl.where(real, tile, bin_score)
    inside = (rows[:, None] <= N) & (cols[None, :] <= M)
    return tl.where(inside, tile, float("-inf"))


@triton.jit
def _online_lse(run_max, run_sum, z, AXIS: tl.constexpr):
    """One tile's step of a streaming logsumexp along AXIS (all -inf stays -inf, as in torch)."""
    new_max = tl.maximum(run_max, tl.max(z, AXIS))
    safe = tl.where(new_max == float("-inf"), 0.0, new_max)
    if AXIS == 1:
        shifted = z - safe[:, None]
    else:
        shifted = z - safe[None, :]
    return new_max, run_sum * tl.exp(run_max - safe) + tl.sum(tl.exp(shifted), AXIS)


@triton.jit
def _finish_lse(run_max, run_sum):
    return tl.log(run_sum) + tl.where(run_max == float("-inf"), 0.0, run_max)


@triton.jit
def _log_masses(valid_ptr, index, length, log_total, other_count):
    """log_marginals: -log_total for a valid keypoint, -inf for padding, log(other side's count) - log_total
    for the dustbin at ``length``."""
    valid = tl.load(valid_ptr + index, mask=index < length, other=0) != 0
    return tl.where(index < length, tl.where(valid, -log_total, float("-inf")), tl.log(other_count) - log_total)


@triton.jit
def _count(valid_ptr, length, BLOCK: tl.constexpr):
    total = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, length, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        total += tl.load(valid_ptr + offsets, mask=offsets < length, other=0).to(tl.float32)
    return tl.sum(total, 0)


@triton.jit
def _log_transport_kernel(scores_ptr, bin_ptr, valid0_ptr, valid1_ptr, out_ptr, u_ptr, v_ptr, N, M, iterations,
                          BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    pair = tl.program_id(0).to(tl.int64)
    scores_ptr += pair * N * M
    out_ptr += pair * (N + 1) * (M + 1)
    valid0_ptr += pair * N
    valid1_ptr += pair * M
    u_ptr += pair * (N + 1)
    v_ptr += pair * (M + 1)
    bin_score = tl.load(bin_ptr)
    n = _count(valid0_ptr, N, BLOCK_R)
    m = _count(valid1_ptr, M, BLOCK_C)
    log_total = tl.log(n + m)
    for c0 in range(0, M + 1, BLOCK_C):  # zero potentials, -inf for massless columns (see log_domain_sinkhorn)
        cols = c0 + tl.arange(0, BLOCK_C)
        log_nu = _log_masses(valid1_ptr, cols, M, log_total, n)
        tl.store(v_ptr + cols, tl.where(log_nu == float("-inf"), float("-inf"), 0.0), mask=cols <= M)
    tl.debug_barrier()
    for _ in range(iterations):
        for r0 in range(0, N + 1, BLOCK_R):  # u = log_mu - logsumexp(couplings + v, over columns)
            rows = r0 + tl.arange(0, BLOCK_R)
            run_max = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
            run_sum = tl.zeros([BLOCK_R], dtype=tl.float32)
            for c0 in range(0, M + 1, BLOCK_C):
                cols = c0 + tl.arange(0, BLOCK_C)
                v = tl.load(v_ptr + cols, mask=cols <= M, other=float("-inf"))
                z = _couplings(scores_ptr, bin_score, rows, cols, N, M) + v[None, :]
                run_max, run_sum = _online_lse(run_max, run_sum, z, 1)
            log_mu = _log_masses(valid0_ptr, rows, N, log_total, m)
            tl.store(u_ptr + rows, log_mu - _finish_lse(run_max, run_sum), mask=rows <= N)
        tl.debug_barrier()
        for c0 in range(0, M + 1, BLOCK_C):  # v = log_nu - logsumexp(couplings + u, over rows)
            cols = c0 + tl.arange(0, BLOCK_C)
            run_max = tl.full([BLOCK_C], float("-inf"), dtype=tl.float32)
            run_sum = tl.zeros([BLOCK_C], dtype=tl.float32)
            for r0 in range(0, N + 1, BLOCK_R):
                rows = r0 + tl.arange(0, BLOCK_R)
                u = tl.load(u_ptr + rows, mask=rows <= N, other=float("-inf"))
                z = _couplings(scores_ptr, bin_score, rows, cols, N, M) + u[:, None]
                run_max, run_sum = _online_lse(run_max, run_sum, z, 0)
            log_nu = _log_masses(valid1_ptr, cols, M, log_total, n)
            tl.store(v_ptr + cols, log_nu - _finish_lse(run_max, run_sum), mask=cols <= M)
        tl.debug_barrier()
    for r0 in range(0, N + 1, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        u = tl.load(u_ptr + rows, mask=rows <= N, other=0.0)
        for c0 in range(0, M + 1, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            v = tl.load(v_ptr + cols, mask=cols <= M, other=0.0)
            plan = _couplings(scores_ptr, bin_score, rows, cols, N, M) + u[:, None] + v[None, :] + log_total
            inside = (rows[:, None] <= N) & (cols[None, :] <= M)
            tl.store(out_ptr + rows[:, None] * (M + 1) + cols[None, :], plan, mask=inside)


def triton_log_transport(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor,
                         valid1: torch.Tensor, iterations: int, block_rows: int = 32,
                         block_cols: int = 128) -> torch.Tensor:
    """``log_transport`` (see :mod:`.sinkhorn_op`) in one kernel launch; tensors on one device
    (CPU tensors only under ``TRITON_INTERPRET=1``)."""
    scores = scores.contiguous()
    b, n, m = scores.shape
    out = scores.new_empty((b, n + 1, m + 1))
    potentials_u = scores.new_empty((b, n + 1))
    potentials_v = scores.new_empty((b, m + 1))
    _log_transport_kernel[(b,)](scores, bin_score, valid0.contiguous(), valid1.contiguous(), out,
                                potentials_u, potentials_v, n, m, iterations,
                                BLOCK_R=block_rows, BLOCK_C=block_cols, num_warps=8)
    return out
