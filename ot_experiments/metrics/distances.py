"""Sample-based discrepancies."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import torch
from torch import Tensor


def pairwise_distances(x: Tensor, y: Tensor) -> Tensor:
    """‖xᵢ − yⱼ‖, shape (n, m), for x (n, d), y (m, d) (batched: (B, n, m)).

    ``torch.cdist``: its gradient is 0 (not NaN) where xᵢ = yⱼ, e.g. on the diagonal of x vs x.
    """
    return torch.cdist(x, y)


def energy_distance(x: Tensor, y: Tensor, y_fixed: bool = False) -> Tensor:
    """Energy distance (MMD² with kernel k(a, b) = −‖a − b‖), V-statistic.

    ED(P, Q) = 2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖, X, X′ ~ P (n, d), Y, Y′ ~ Q (m, d).
    Returns a scalar ≥ 0 (up to round-off), 0 when the two sets are equal; batched inputs
    (B, n, d), (B, m, d) give the B distances, shape (B,), in one pass.
    ``y_fixed=True`` drops the E‖Y − Y′‖ term, a constant when y carries no gradient
    (for training losses: same gradient, one O(m²) pass less).
    """

    def mean_dist(a: Tensor, b: Tensor) -> Tensor:
        return pairwise_distances(a, b).mean((-2, -1))

    ed = 2 * mean_dist(x, y) - mean_dist(x, x)
    return ed if y_fixed else ed - mean_dist(y, y)


def _softmin(eps: float, cost: Tensor, h: Tensor) -> Tensor:
    """−ε log Σⱼ exp(hⱼ − Cᵢⱼ / ε): cost (B, n, m), h (B, m) → (B, n)."""
    return -eps * torch.logsumexp(h[:, None, :] - cost / eps, dim=2)


def sinkhorn_loss(x: Tensor, y: Tensor, eps: float, iters: int = 10) -> Tensor:
    """Debiased entropic OT S_ε(x, y) = OT_ε(x, y) − ½ OT_ε(x, x) − ½ OT_ε(y, y) as a loss.

    OT_ε is the optimal value of the entropic dual, ⟨a, f⟩ + ⟨b, g⟩, for the cost
    C = ‖xᵢ − yⱼ‖² and uniform weights a, b on x (n, d), y (m, d); batched inputs (B, n, d),
    (B, m, d) give the B values, shape (B,). S_ε ≥ 0, is 0 for equal sets, and equals ‖s‖² for
    any ε when y is x shifted by s (the shift only adds separable terms to C). The potentials
    come from log-domain Sinkhorn iterations without a graph (ε annealed from the largest cost
    down to ``eps``, then ``iters`` iterations at ``eps``); one last half-iteration with the graph
    gives the gradient of S_ε in x by the envelope theorem, Σⱼ πᵢⱼ ∇ₓC(xᵢ, yⱼ) minus the
    same for OT_ε(x, x)'s plan. y is data: no gradient flows into it.
    """
    single = x.dim() == 2
    if single:
        x, y = x[None], y[None]
    y = y.detach()
    n, m = x.shape[1], y.shape[1]
    log_a = x.new_full(x.shape[:2], -math.log(n))
    log_b = y.new_full(y.shape[:2], -math.log(m))
    cxy_x, cxx_x = torch.cdist(x, y) ** 2, torch.cdist(x, x) ** 2  # the graph runs through x
    with torch.no_grad():
        cxy, cxx, cyy = cxy_x.detach(), cxx_x.detach(), torch.cdist(y, y) ** 2
        top = max(float(cxy.max()), eps)
        steps = max(0, math.ceil(math.log2(top / eps)))
        schedule = [top * 0.5**k for k in range(steps)] + [eps] * iters
        f, p = torch.zeros_like(log_a), torch.zeros_like(log_a)  # x's potentials (vs y, vs x)
        g, q = torch.zeros_like(log_b), torch.zeros_like(log_b)  # y's potentials (vs x, vs y)
        for e in schedule:  # symmetric updates, averaged (a damped fixed point)
            f_new = _softmin(e, cxy, log_b + g / e)
            g_new = _softmin(e, cxy.transpose(1, 2), log_a + f / e)
            p = 0.5 * (p + _softmin(e, cxx, log_a + p / e))
            q = 0.5 * (q + _softmin(e, cyy, log_b + q / e))
            f, g = 0.5 * (f + f_new), 0.5 * (g + g_new)
        value = f.mean(1) + g.mean(1) - p.mean(1) - q.mean(1)
    f_x = _softmin(eps, cxy_x, log_b + g / eps)
    p_x = _softmin(eps, cxx_x, log_a + p / eps)
    surrogate = f_x.mean(1) - 0.5 * p_x.mean(1)  # gradient of OT_ε(x, y) − ½ OT_ε(x, x)
    out = value + surrogate - surrogate.detach()
    return out[0] if single else out


def l2_uvp(mapped: Tensor, true_mapped: Tensor, variance: float) -> float:
    """L2-UVP = 100 · E‖T̂(x) − T*(x)‖² / Var(ν) in percent; inputs (n, d)."""
    return float(100 * (mapped - true_mapped).square().sum(1).mean() / variance)


EMD_MAX_ITER = 10_000_000  # POT's network simplex iteration cap for every exact solve here


def uniform_ot_problem(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform weights of x (n, d) and y (m, d) and their squared-distance cost (n, m), float64.

    The one place where sample sets become a discrete OT problem: ``emd_w2_sq``,
    ``exact_plan`` and the POT baselines (``baselines.pot``) all start here.
    """
    a = np.asarray(x.detach().double().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    b = np.asarray(y.detach().double().cpu() if isinstance(y, Tensor) else y, dtype=np.float64)
    return np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), ot.dist(a, b)


def emd_w2_sq(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, max_iter: int = EMD_MAX_ITER
) -> float:
    """Exact W2² between two uniform sample sets with POT: min_π Σ πᵢⱼ ‖xᵢ − yⱼ‖²."""
    wa, wb, cost = uniform_ot_problem(x, y)
    return float(ot.emd2(wa, wb, cost, numItermax=max_iter))


def exact_plan(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    max_iter: int = EMD_MAX_ITER,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The exact OT plan π (n, m) between sample sets x (n, d), y (m, d) for the squared
    Euclidean cost (POT ``ot.emd``).

    ``weights``: the two weight vectors (each summing to 1), default uniform; for uniform
    weights and n = m the plan is a permutation scaled by 1/n.
    """
    wa, wb, cost = uniform_ot_problem(x, y)
    if weights is not None:
        wa, wb = weights
    return ot.emd(wa, wb, cost, numItermax=max_iter)


def ot_pairing(x0: Tensor, x1: Tensor, max_iter: int = 1_000_000) -> Tensor:
    """Reorder x1 (n, d) by the exact OT plan (``exact_plan``) to x0 (n, d), e.g. the pairs
    of mini-batch OT flow matching.

    With equal uniform weights the plan is a permutation: returns x1[σ] with σ optimal.
    """
    plan = exact_plan(x0, x1, max_iter=max_iter)
    return x1[torch.as_tensor(plan.argmax(1), device=x1.device)]


def sinkhorn_divergence(
    x: Tensor, y: Tensor, rel_reg: float = 0.1, max_points: int = 1000
) -> tuple[float, float]:
    """Debiased Sinkhorn divergence S_ε(x, y) = OT_ε(x, y) − ½ OT_ε(x, x) − ½ OT_ε(y, y) (POT),
    with OT_ε the transport cost ⟨π_ε, C⟩ of the entropic plan for C = ‖xᵢ − yⱼ‖² between
    uniform sample sets x (n, d), y (m, d), and ε = ``rel_reg`` · median(C).

    Unlike the plain entropic cost it is 0 for equal sets, and it tracks W2² (e.g. 9.0 for a
    shift by 3) without the bias of a single entropic plan. The first ``max_points`` of each
    set are used (overlapping sets converge slowly: ~5 s for 800 points). Returns (S_ε, ε).
    """
    a = x[:max_points].detach().double().cpu().numpy()
    b = y[:max_points].detach().double().cpu().numpy()
    reg = rel_reg * float(np.median(ot.dist(a, b)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "did not converge": 1000 iterations
        value = ot.bregman.empirical_sinkhorn_divergence(a, b, reg, numIterMax=1000, stopThr=1e-6)
    return float(value), reg


def sliced_w2(x: Tensor, y: Tensor, n_projections: int = 500, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance (not squared) between uniform sample sets x (n, d) and
    y (m, d): SW₂² = E_θ W₂²(⟨θ, x⟩, ⟨θ, y⟩) over random unit directions θ (POT), e.g.
    SW₂² = ‖s‖² / d for a shift by s."""
    a = x.detach().double().cpu().numpy()
    b = y.detach().double().cpu().numpy()
    return float(ot.sliced_wasserstein_distance(a, b, n_projections=n_projections, seed=seed))


def frechet_distance(fa: Tensor, fb: Tensor) -> float:
    """Fréchet distance (FID) between the Gaussian fits of two feature sets fa (n, k), fb (m, k).

    FID = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}, the squared
    Bures–Wasserstein distance. The square roots go through symmetric eigendecompositions with
    eigenvalues clipped at 0, so rank-deficient covariances (ReLU features, few samples) give a
    finite value.
    """
    a, b = fa.detach().double().cpu(), fb.detach().double().cpu()
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    eva, vec = torch.linalg.eigh(ca)
    root_a = (vec * eva.clamp_min(0).sqrt()) @ vec.T
    cross = torch.linalg.eigvalsh(root_a @ cb @ root_a).clamp_min(0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_term + ca.trace() + cb.trace() - 2 * cross)


__all__ = [
    "EMD_MAX_ITER",
    "emd_w2_sq",
    "exact_plan",
    "energy_distance",
    "frechet_distance",
    "l2_uvp",
    "ot_pairing",
    "pairwise_distances",
    "sinkhorn_divergence",
    "sinkhorn_loss",
    "sliced_w2",
    "uniform_ot_problem",
]
