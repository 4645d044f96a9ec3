"""Differentiable partial assignment: log-domain Sinkhorn with a dustbin row and column.

Every real keypoint carries unit mass; the dustbin of image 0 absorbs up to M
units and the dustbin of image 1 up to N, so that any keypoint may stay
unmatched. Everything is divided by N + M to form proper distributions and
the plan is multiplied back afterwards, so entries are on the scale of a
per-keypoint assignment probability (in log space).

Padding for batches of pairs with different keypoint counts is handled with
masks: padded rows/columns get zero mass (log-mass -inf) and therefore take
no part in the normalisation of real rows and columns.
"""
from __future__ import annotations

import torch


def augment_with_dustbins(scores: torch.Tensor, bin_score: torch.Tensor) -> torch.Tensor:
    """(B, N, M) scores -> (B, N+1, M+1) couplings with a constant dustbin score."""
    b, n, m = scores.shape
    bins_col = bin_score.expand(b, n, 1)
    bins_row = bin_score.expand(b, 1, m + 1)
    return torch.cat([torch.cat([scores, bins_col], dim=2), bins_row], dim=1)


def log_marginals(mask0: torch.Tensor, mask1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-masses of rows and columns for (B, N) / (B, M) validity masks.

    Returns (log_mu (B, N+1), log_nu (B, M+1), log_total (B,)) where
    log_total = log(n_b + m_b) is the normalisation that is undone at the end.
    Each pair needs at least one keypoint on one side (n_b + m_b > 0).
    """
    n = mask0.sum(1).to(torch.float32)
    m = mask1.sum(1).to(torch.float32)
    log_total = torch.log(n + m)
    real_mu = (-log_total[:, None]).expand(mask0.shape).masked_fill(~mask0, float("-inf"))
    real_nu = (-log_total[:, None]).expand(mask1.shape).masked_fill(~mask1, float("-inf"))
    log_mu = torch.cat([real_mu, (torch.log(m) - log_total)[:, None]], dim=1)
    log_nu = torch.cat([real_nu, (torch.log(n) - log_total)[:, None]], dim=1)
    return log_mu, log_nu, log_total


# Above this spread of coupling values exp() could underflow a whole column in
# float64, so such (unusual) inputs take the slower log-domain iterations; up
# to MAX_FLOAT32_SPREAD (float32's exp reaches 1e-38 at -87) the kernel is kept
# in float32, which halves the memory traffic of every iteration.
# The float32 log-domain iterations that finish the scaling iterations settle
# on the reference's float32 fixed point (2 sufficed on the golden sets).
MAX_EXP_DOMAIN_SPREAD = 600.0
MAX_FLOAT32_SPREAD = 80.0
TOLERANCE_CHECK_EVERY = 10
FINAL_LOG_DOMAIN_ITERATIONS = 3


def sinkhorn(couplings: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor,
             iterations: int, tolerance: float = 0.0) -> torch.Tensor:
    """Log plan (B, R, C) of the Sinkhorn iterations for couplings (B, R, C) and log-masses.

    The iterations are those of the log-domain algorithm (row, then column
    normalisation, from zero potentials), evaluated as matrix-vector products on
    exp(couplings) (float32, or float64 for a wide spread of scores): the same
    iterates, four to six times cheaper than two logsumexp passes per
    iteration. The last few iterations run in float32
    log-domain arithmetic as the reference does, so that near-ties (flat plans
    from untrained weights differ in the last bit) resolve the same way.
    ``tolerance`` > 0 stops early once no row marginal is off by more than it
    (checked every few iterations).
    """
    spread = spread_of(couplings)
    if spread > MAX_EXP_DOMAIN_SPREAD:
        return log_domain_sinkhorn(couplings, log_mu, log_nu, iterations)
    dtype = torch.float32 if spread <= MAX_FLOAT32_SPREAD else torch.float64
    return scaling_sinkhorn(couplings, log_mu, log_nu, iterations, tolerance, dtype)


def spread_of(couplings: torch.Tensor) -> float:
    """Largest minus smallest finite coupling: how far exp() must reach without underflowing."""
    finite = couplings.detach()[torch.isfinite(couplings.detach())]
    return float(finite.max() - finite.min()) if finite.numel() else 0.0


def scaling_sinkhorn(couplings: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor,
                     iterations: int, tolerance: float = 0.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sinkhorn on scaling vectors a, b with exp(u) = a, exp(v) = b (see :func:`sinkhorn`)."""
    c = couplings.to(dtype)
    shift = c.amax(dim=2, keepdim=True).clamp_min(torch.finfo(dtype).min)
    kernel = torch.exp(c - shift)
    mu, nu = log_mu.to(dtype).exp(), log_nu.to(dtype).exp()
    a = torch.ones_like(mu)
    b = (nu > 0).to(dtype)  # see log_domain_sinkhorn: massless columns start at zero
    final = min(FINAL_LOG_DOMAIN_ITERATIONS, iterations)
    for i in range(iterations - final):
        a = mu / torch.bmm(kernel, b[..., None])[..., 0]
        b = nu / torch.bmm(a[:, None, :], kernel)[:, 0]
        if tolerance > 0 and (i + 1) % TOLERANCE_CHECK_EVERY == 0 and i + 1 < iterations:
            row_error = (a * torch.bmm(kernel, b[..., None])[..., 0] - mu).abs().amax()
            if float(row_error) < tolerance:
                break
    return log_domain_sinkhorn(couplings, log_mu, log_nu, final, b.log().to(couplings.dtype))


def log_domain_sinkhorn(couplings: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor,
                        iterations: int, v: torch.Tensor | None = None) -> torch.Tensor:
    """Alternate row and column log-normalisation, starting from column potentials v.

    The default start is the reference's zero potentials, except -inf for massless (padded) columns: with 0
    there, the first row update would count padding that an unpadded pair does not have, and the iterations
    would end measurably elsewhere (6e-4 after 100 on the golden pair padded by 76 slots).
    """
    u = torch.zeros_like(log_mu)
    if v is None:
        v = torch.zeros_like(log_nu).masked_fill(log_nu == float("-inf"), float("-inf"))
    for _ in range(iterations):
        u = log_mu - torch.logsumexp(couplings + v[:, None, :], dim=2)
        v = log_nu - torch.logsumexp(couplings + u[:, :, None], dim=1)
    return couplings + u[:, :, None] + v[:, None, :]


def log_optimal_transport(scores: torch.Tensor, bin_score: torch.Tensor, iterations: int,
                          mask0: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                          tolerance: float = 0.0) -> torch.Tensor:
    """(B, N, M) similarity -> (B, N+1, M+1) log assignment including dustbins.

    Computed in float32 whatever the input precision: the potentials lose the
    small differences that decide matches in half precision.
    """
    b, n, m = scores.shape
    scores = scores.float()
    if n + m == 0:  # nothing to assign: only the dustbin-to-dustbin entry, with all (no) mass
        return scores.new_zeros((b, 1, 1))
    if mask0 is None:
        mask0 = torch.ones((b, n), dtype=torch.bool, device=scores.device)
    if mask1 is None:
        mask1 = torch.ones((b, m), dtype=torch.bool, device=scores.device)
    with torch.autocast(scores.device.type, enabled=False):
        couplings = augment_with_dustbins(scores, bin_score.float())
        log_mu, log_nu, log_total = log_marginals(mask0, mask1)
        plan = sinkhorn(couplings, log_mu, log_nu, iterations, tolerance)
        return plan + log_total[:, None, None]


def fixed_path_transport(scores: torch.Tensor, bin_score: torch.Tensor, iterations: int,
                         variant: str = "scaling") -> torch.Tensor:
    """:func:`log_optimal_transport` of unpadded pairs along one fixed path, for exported graphs,
    which cannot hold its data-dependent choice of iterations.

    "scaling" is the float64 scaling path (the one every input whose coupling
    spread is below ``MAX_EXP_DOMAIN_SPREAD`` may take); "log-domain" is the
    reference's float32 iterations, for runtimes without float64. A caller
    redoes the rare pairs that :func:`needs_log_domain` flags.
    """
    couplings = augment_with_dustbins(scores, bin_score)
    b, n, m = scores.shape
    ones = torch.ones_like(scores[:, :, 0], dtype=torch.bool), torch.ones_like(scores[:, 0, :], dtype=torch.bool)
    log_mu, log_nu, log_total = log_marginals(*ones)
    if variant == "scaling":
        plan = scaling_sinkhorn(couplings, log_mu, log_nu, iterations)
    elif variant == "log-domain":
        plan = log_domain_sinkhorn(couplings, log_mu, log_nu, iterations)
    else:
        raise ValueError(f"variant must be 'scaling' or 'log-domain', got {variant!r}")
    return plan + log_total[:, None, None]


def needs_log_domain(scores: torch.Tensor, bin_score: torch.Tensor) -> bool:
    """Whether the scores are too spread out for the scaling iterations of :func:`fixed_path_transport`."""
    return spread_of(augment_with_dustbins(scores, bin_score)) > MAX_EXP_DOMAIN_SPREAD


def extract_matches(log_assignment: torch.Tensor, threshold: float,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual best assignments above ``threshold`` from a (B, N+1, M+1) log plan.

    Returns matches0 (B, N), matches1 (B, M) (-1 = unmatched) and their scores.
    A mutual match keeps its confidence even when it is below the threshold,
    as in the reference; only the match index is withheld.
    """
    plan = log_assignment[:, :-1, :-1]
    b, n, m = plan.shape
    if n == 0 or m == 0:
        return (plan.new_full((b, n), -1, dtype=torch.long), plan.new_full((b, m), -1, dtype=torch.long),
                plan.new_zeros((b, n)), plan.new_zeros((b, m)))
    best0, idx0 = plan.max(dim=2)
    _, idx1 = plan.max(dim=1)
    mutual0 = torch.arange(n, device=plan.device)[None] == idx1.gather(1, idx0)
    mutual1 = torch.arange(m, device=plan.device)[None] == idx0.gather(1, idx1)
    zero = plan.new_zeros(())
    scores0 = torch.where(mutual0, best0.exp(), zero)
    scores1 = torch.where(mutual1, scores0.gather(1, idx1), zero)
    valid0 = mutual0 & (scores0 > threshold)
    valid1 = mutual1 & valid0.gather(1, idx1)
    matches0 = torch.where(valid0, idx0, idx0.new_full((), -1))
    matches1 = torch.where(valid1, idx1, idx1.new_full((), -1))
    return matches0, matches1, scores0, scores1
