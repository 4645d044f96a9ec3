"""The CUDA implementation of ``superglue_ros::log_transport``: Sinkhorn without per-iteration Python.

Each half-iteration sweeps the (N+1, M+1) couplings in tiles with an online
logsumexp and writes its potentials to a small scratch buffer. The dustbin
row and column and the masses of the valid keypoints are formed on the fly, so
the couplings matrix is never materialised. The arithmetic is the
reference's log-domain iterations; only the order of the additions inside a
logsumexp differs. Two layouts share those sweeps:

- "fused": one program per pair runs every iteration in one launch, with a
  block barrier between the row and column sweeps. One launch, but one
  streaming multiprocessor per pair.
- "tiled": one launch per half-iteration, a program per block of rows (or
  columns) of every pair, so the whole GPU sweeps; 2 + 2 * iterations
  launches, which only pay off replayed from a CUDA graph.

Which is faster depends on the GPU (a robot's few multiprocessors or a data
centre's many) and on the batch, so :func:`layout_for` times both, each
replayed from a graph, once per shape and device. Importable without a GPU:
with ``TRITON_INTERPRET=1`` set before the import, Triton's interpreter runs
the same kernels on CPU tensors (that is how the tests check them).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from .sinkhorn_op import LAYOUT_TIMINGS

LOG = logging.getLogger(__name__)
LAYOUTS = ("fused", "tiled")


@triton.jit
def _couplings(scores_ptr, stride_r, stride_c, bin_score, rows, cols, N, M):
    """The (rows, cols) tile of the dustbin-augmented (N+1, M+1) couplings, -inf outside them; the strides
    give the transposed matrix as well (the column sweep is the row sweep of the transpose)."""
    real = (rows[:, None] < N) & (cols[None, :] < M)
    tile = tl.load(scores_ptr + rows[:, None] * stride_r + cols[None, :] * stride_c, mask=real, other=0.0)
    tile = tl.where(real, tile, bin_score)
    inside = (rows[:, None] <= N) & (cols[None, :] <= M)
    return tl.where(inside, tile, float("-inf"))


@triton.jit
def _online_lse(run_max, run_sum, z):
    """One tile's step of a streaming logsumexp along its rows (all -inf stays -inf, as in torch)."""
    new_max = tl.maximum(run_max, tl.max(z, 1))
    safe = tl.where(new_max == float("-inf"), 0.0, new_max)
    return new_max, run_sum * tl.exp(run_max - safe) + tl.sum(tl.exp(z - safe[:, None]), 1)


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
def _pair(scores_ptr, valid0_ptr, valid1_ptr, u_ptr, v_ptr, N, M, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's pair: its pointers, and the valid counts n, m and log(n + m) its masses come from."""
    pair = tl.program_id(0).to(tl.int64)
    valid0_ptr += pair * N
    valid1_ptr += pair * M
    n = _count(valid0_ptr, N, BLOCK_R)
    m = _count(valid1_ptr, M, BLOCK_C)
    return (pair, scores_ptr + pair * N * M, valid0_ptr, valid1_ptr, u_ptr + pair * (N + 1), v_ptr + pair * (M + 1),
            n, m, tl.log(n + m))


@triton.jit
def _start_columns(valid1_ptr, v_ptr, c0, M, log_total, n, BLOCK_C: tl.constexpr):
    """Zero column potentials, -inf for massless columns (see log_domain_sinkhorn)."""
    cols = c0 + tl.arange(0, BLOCK_C)
    log_nu = _log_masses(valid1_ptr, cols, M, log_total, n)
    tl.store(v_ptr + cols, tl.where(log_nu == float("-inf"), float("-inf"), 0.0), mask=cols <= M)


@triton.jit
def _sweep(scores_ptr, stride_r, stride_c, bin_score, valid_ptr, out_ptr, other_ptr, r0, N, M, log_total,
           other_count, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = log_mu - logsumexp(couplings + other, over columns) for the rows from r0: the row potentials u
    from v, or, called on the transpose (N and M, strides and blocks swapped), the column potentials v from u."""
    rows = r0 + tl.arange(0, BLOCK_R)
    run_max = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(0, M + 1, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        other = tl.load(other_ptr + cols, mask=cols <= M, other=float("-inf"))
        z = _couplings(scores_ptr, stride_r, stride_c, bin_score, rows, cols, N, M) + other[None, :]
        run_max, run_sum = _online_lse(run_max, run_sum, z)
    log_mu = _log_masses(valid_ptr, rows, N, log_total, other_count)
    tl.store(out_ptr + rows, log_mu - _finish_lse(run_max, run_sum), mask=rows <= N)


@triton.jit
def _sweep_rows(scores_ptr, bin_score, valid0_ptr, u_ptr, v_ptr, r0, N, M, log_total, m,
                BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    _sweep(scores_ptr, M, 1, bin_score, valid0_ptr, u_ptr, v_ptr, r0, N, M, log_total, m, BLOCK_R, BLOCK_C)


@triton.jit
def _sweep_columns(scores_ptr, bin_score, valid1_ptr, u_ptr, v_ptr, c0, N, M, log_total, n,
                   BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    _sweep(scores_ptr, 1, M, bin_score, valid1_ptr, v_ptr, u_ptr, c0, M, N, log_total, n, BLOCK_C, BLOCK_R)


@triton.jit
def _write_plan(scores_ptr, bin_score, out_ptr, u_ptr, v_ptr, r0, N, M, log_total,
                BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """couplings + u + v, rescaled to the total mass, for the rows from r0."""
    rows = r0 + tl.arange(0, BLOCK_R)
    u = tl.load(u_ptr + rows, mask=rows <= N, other=0.0)
    for c0 in range(0, M + 1, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        v = tl.load(v_ptr + cols, mask=cols <= M, other=0.0)
        plan = _couplings(scores_ptr, M, 1, bin_score, rows, cols, N, M) + u[:, None] + v[None, :] + log_total
        inside = (rows[:, None] <= N) & (cols[None, :] <= M)
        tl.store(out_ptr + rows[:, None] * (M + 1) + cols[None, :], plan, mask=inside)


@triton.jit
def _fused_kernel(scores_ptr, bin_ptr, valid0_ptr, valid1_ptr, out_ptr, u_ptr, v_ptr, N, M, iterations,
                  BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Every iteration of one pair; block barriers order the sweeps (threads read each other's potentials)."""
    pair, scores_ptr, valid0_ptr, valid1_ptr, u_ptr, v_ptr, n, m, log_total = _pair(
        scores_ptr, valid0_ptr, valid1_ptr, u_ptr, v_ptr, N, M, BLOCK_R, BLOCK_C)
    bin_score = tl.load(bin_ptr)
    for c0 in range(0, M + 1, BLOCK_C):
        _start_columns(valid1_ptr, v_ptr, c0, M, log_total, n, BLOCK_C)
    tl.debug_barrier()
    for _ in range(iterations):
        for r0 in range(0, N + 1, BLOCK_R):
            _sweep_rows(scores_ptr, bin_score, valid0_ptr, u_ptr, v_ptr, r0, N, M, log_total, m, BLOCK_R, BLOCK_C)
        tl.debug_barrier()
        for c0 in range(0, M + 1, BLOCK_C):
            _sweep_columns(scores_ptr, bin_score, valid1_ptr, u_ptr, v_ptr, c0, N, M, log_total, n,
                           BLOCK_R, BLOCK_C)
        tl.debug_barrier()
    for r0 in range(0, N + 1, BLOCK_R):
        _write_plan(scores_ptr, bin_score, out_ptr + pair * (N + 1) * (M + 1), u_ptr, v_ptr, r0, N, M, log_total,
                    BLOCK_R, BLOCK_C)


@triton.jit
def _tiled_kernel(scores_ptr, bin_ptr, valid0_ptr, valid1_ptr, out_ptr, u_ptr, v_ptr, N, M,
                  STAGE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """One stage for one block of one pair (program ids: pair, block): 0 starts the column potentials,
    1 sweeps rows, 2 sweeps columns, 3 writes the plan. The launches order the stages."""
    pair, scores_ptr, valid0_ptr, valid1_ptr, u_ptr, v_ptr, n, m, log_total = _pair(
        scores_ptr, valid0_ptr, valid1_ptr, u_ptr, v_ptr, N, M, BLOCK_R, BLOCK_C)
    block = tl.program_id(1)
    if STAGE == 0:
        _start_columns(valid1_ptr, v_ptr, block * BLOCK_C, M, log_total, n, BLOCK_C)
    elif STAGE == 1:
        _sweep_rows(scores_ptr, tl.load(bin_ptr), valid0_ptr, u_ptr, v_ptr, block * BLOCK_R, N, M, log_total, m,
                    BLOCK_R, BLOCK_C)
    elif STAGE == 2:
        _sweep_columns(scores_ptr, tl.load(bin_ptr), valid1_ptr, u_ptr, v_ptr, block * BLOCK_C, N, M, log_total,
                       n, BLOCK_R, BLOCK_C)
    else:
        _write_plan(scores_ptr, tl.load(bin_ptr), out_ptr + pair * (N + 1) * (M + 1), u_ptr, v_ptr,
                    block * BLOCK_R, N, M, log_total, BLOCK_R, BLOCK_C)


def triton_log_transport(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor,
                         valid1: torch.Tensor, iterations: int, block_rows: int = 32,
                         block_cols: int = 128, layout: str = "fused") -> torch.Tensor:
    """``log_transport`` (see :mod:`.sinkhorn_op`) in one kernel launch ("fused") or one per half-iteration
    ("tiled"); tensors on one device (CPU tensors only under ``TRITON_INTERPRET=1``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    scores = scores.contiguous()
    b, n, m = scores.shape
    out = scores.new_empty((b, n + 1, m + 1))
    arguments = (scores, bin_score, valid0.contiguous(), valid1.contiguous(), out, scores.new_empty((b, n + 1)),
                 scores.new_empty((b, m + 1)), n, m)
    blocks = {"BLOCK_R": block_rows, "BLOCK_C": block_cols}
    if layout == "fused":
        _fused_kernel[(b,)](*arguments, iterations, **blocks, num_warps=8)
        return out
    row_blocks, col_blocks = triton.cdiv(n + 1, block_rows), triton.cdiv(m + 1, block_cols)
    _tiled_kernel[(b, col_blocks)](*arguments, STAGE=0, **blocks, num_warps=4)
    for _ in range(iterations):
        _tiled_kernel[(b, row_blocks)](*arguments, STAGE=1, **blocks, num_warps=4)
        _tiled_kernel[(b, col_blocks)](*arguments, STAGE=2, **blocks, num_warps=4)
    _tiled_kernel[(b, row_blocks)](*arguments, STAGE=3, **blocks, num_warps=4)
    return out


def layout_for(scores: torch.Tensor, bin_score: torch.Tensor, valid0: torch.Tensor, valid1: torch.Tensor,
               iterations: int) -> str:
    """The layout a call should use: "fused" when it runs eagerly (one launch from Python), the faster one
    by :data:`LAYOUT_TIMINGS` while a CUDA graph is being captured. The timing happens at the first eager call of
    a shape (a capture's warm-up), since timing synchronises with the host and a capture may not."""
    key = (str(scores.device), tuple(scores.shape), iterations)
    if torch.cuda.is_current_stream_capturing():
        timings = LAYOUT_TIMINGS.get(key)
        return min(timings, key=timings.get) if timings else "fused"
    if key not in LAYOUT_TIMINGS:
        LAYOUT_TIMINGS[key] = time_layouts(lambda layout: triton_log_transport(
            scores, bin_score, valid0, valid1, iterations, layout=layout))
        LOG.info("log_transport %s: ms per graph replay %s", key, LAYOUT_TIMINGS[key] or "not timed (see above)")
    return "fused"


def time_layouts(run: Callable[[str], torch.Tensor], replays: int = 5) -> dict[str, float]:
    """Milliseconds per replay of each layout captured as a CUDA graph (what the fixed path pays), or {}
    when a capture fails (the caller then keeps "fused")."""
    timings = {}
    try:
        for layout in LAYOUTS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                run(layout)  # compiles the kernels outside the capture
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run(layout)
            graph.replay()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(replays):
                graph.replay()
            end.record()
            end.synchronize()
            timings[layout] = start.elapsed_time(end) / replays
    except Exception as error:  # noqa: BLE001 -- Triton's compile and resource errors are not RuntimeErrors
        LOG.warning("could not time the Sinkhorn kernel layouts, using the fused one: %s", error)
        return {}
    return timings
