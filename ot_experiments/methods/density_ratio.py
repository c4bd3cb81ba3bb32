"""Density-ratio estimation (DRE) along a flow, and the two baselines of the Q-flow paper.

Q-flow-ratio net (telescoping DRE): a network r(x, t) is trained on the samples pushed
along the flow's time grid 0 = t_0 < … < t_K = 1 (distributions p_0 = p, …, p_K ≈ q).
For interval k, ℓ_k(x) = ∫_{t_{k−1}}^{t_k} r(x, s) ds (3/8-rule quadrature) and

    L = Σ_k E_{p_{k−1}} softplus(ℓ_k) + E_{p_k} softplus(−ℓ_k),

whose minimiser is ℓ_k = log p_k − log p_{k−1}; hence log(q/p)(x) ≈ Σ_k ℓ_k(x) = ∫₀¹ r(x,t) dt.

Baselines: "1 ratio", one classifier c between P and Q with the same logistic loss
(c* = log q − log p), and KDE, log q̂(x) − log p̂(x) with Gaussian kernels of bandwidth
0.1 × median pairwise distance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ot_experiments.metrics.distances import pairwise_distances

# r(x, t): x (n, d), t scalar → (n,)
TimeRatio = Callable[[Tensor, Tensor | float], Tensor]

# nodes and weights of Simpson's 3/8 rule on [0, 1]
_NODES_38 = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
_WEIGHTS_38 = (1.0 / 8.0, 3.0 / 8.0, 3.0 / 8.0, 1.0 / 8.0)


def logistic_ratio_loss(logit_p: Tensor, logit_q: Tensor) -> Tensor:
    """E_P softplus(r) + E_Q softplus(−r); logits (n,), (m,) → scalar.

    Minimised pointwise by r* = log(q/p), so a logit trained with it estimates the log ratio.
    """
    return F.softplus(logit_p).mean() + F.softplus(-logit_q).mean()


def interval_integral(r: TimeRatio, x: Tensor, t0: float, t1: float) -> Tensor:
    """ℓ(x) = ∫_{t0}^{t1} r(x, s) ds by Simpson's 3/8 rule; x (n, d) → (n,).

    (h/8) [r(x,t0) + 3 r(x,t0+h/3) + 3 r(x,t0+2h/3) + r(x,t1)],  h = t1 − t0. Exact for
    polynomials of degree ≤ 3 in s.
    """
    h = t1 - t0
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for node, w in zip(_NODES_38, _WEIGHTS_38):
        out = out + w * r(x, t0 + node * h)
    return h * out


def flow_ratio_loss(r: TimeRatio, samples: Tensor, ts: Tensor) -> Tensor:
    """Σ_k E_{p_{k−1}} softplus(ℓ_k) + E_{p_k} softplus(−ℓ_k).

    ``samples`` (K+1, n, d): samples of p_k at the grid times ``ts`` (K+1,). All 8K quadrature
    evaluations go through ``r`` in one batch (r must accept a per-sample time column).
    """
    k1, n, d = samples.shape
    ts = ts.to(samples)
    h = ts[1:] - ts[:-1]  # (K,)
    nodes = torch.tensor(_NODES_38, dtype=samples.dtype, device=samples.device)
    weights = torch.tensor(_WEIGHTS_38, dtype=samples.dtype, device=samples.device)
    # x: (K, 2 sides, 4 nodes, n, d); t: (K, 2, 4, n)
    x = torch.stack([samples[:-1], samples[1:]], dim=1)[:, :, None].expand(-1, -1, 4, -1, -1)
    t = (ts[:-1, None] + h[:, None] * nodes[None])[:, None, :, None].expand(-1, 2, -1, n)
    vals = r(x.reshape(-1, d), t.reshape(-1, 1)).reshape(k1 - 1, 2, 4, n)
    ell = h[:, None, None] * (weights[None, None, :, None] * vals).sum(2)  # (K, 2, n)
    total = F.softplus(ell[:, 0]).mean(-1) + F.softplus(-ell[:, 1]).mean(-1)
    return total.sum()


def flow_log_ratio(r: TimeRatio, x: Tensor, ts: Tensor) -> Tensor:
    """log(q/p)(x) ≈ Σ_k ℓ_k(x) = ∫₀¹ r(x, t) dt on the grid ``ts``; x (n, d) → (n,)."""
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for k in range(1, len(ts)):
        out = out + interval_integral(r, x, float(ts[k - 1]), float(ts[k]))
    return out


def median_bandwidth(x: Tensor, y: Tensor, factor: float = 0.1, max_points: int = 2000) -> float:
    """factor × median pairwise distance of the pooled samples (at most ``max_points``)."""
    pts = torch.cat([x, y])[:max_points]
    dist = pairwise_distances(pts, pts)
    iu = torch.triu_indices(len(pts), len(pts), offset=1)
    return factor * float(dist[iu[0], iu[1]].median())


def kde_log_density(x: Tensor, samples: Tensor, bandwidth: float) -> Tensor:
    """Gaussian KDE ln p̂(x) = logsumexp_j −‖x − s_j‖²/(2h²) − ln m − (d/2) ln(2π h²).

    x (n, d), samples (m, d) → (n,).
    """
    m, d = samples.shape
    sq = pairwise_distances(x, samples).square()
    return (
        torch.logsumexp(-0.5 * sq / bandwidth**2, dim=1)
        - math.log(m)
        - 0.5 * d * math.log(2 * math.pi * bandwidth**2)
    )


def kde_log_ratio(x: Tensor, p_samples: Tensor, q_samples: Tensor, bandwidth: float) -> Tensor:
    """KDE estimate of log(q/p)(x), (n,); chunked over x to bound memory."""
    return torch.cat(
        [
            kde_log_density(c, q_samples, bandwidth) - kde_log_density(c, p_samples, bandwidth)
            for c in x.split(2048)
        ]
    )


def mean_absolute_error(est: Tensor, true: Tensor) -> float:
    """MAE = mean |est − true|."""
    return float((est - true).abs().mean())


# -- figures ----------------------------------------------------------------------------
def _grid(low: Tensor, high: Tensor, n: int = 120) -> tuple[Tensor, Tensor, Tensor]:
    xs = torch.linspace(float(low[0]), float(high[0]), n)
    ys = torch.linspace(float(low[1]), float(high[1]), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def plot_dre(method, problem, out) -> list:
    """True vs estimated log(q/p) heatmaps and the flow's intermediate distributions.

    ``log_ratio_heatmaps.png``: true, Q-flow-ratio, 1 ratio, KDE on a shared colour scale
    (MAE on the test points in the titles). ``flow_intermediate.png``: top, samples pushed
    to the grid times; bottom, the per-interval estimates ℓ_k (paper Fig. 3).
    """
    from pathlib import Path

    import matplotlib.pyplot as plt

    out = Path(out)
    low, high = problem.bounding_box()
    pad = 0.1 * (high - low)
    gx, gy, pts = _grid(low - pad, high + pad)
    true = problem.log_ratio_true(pts)
    est = method.log_ratio_estimates(pts)
    test = problem.ratio_test_points()
    test_true = problem.log_ratio_true(test)
    test_est = method.log_ratio_estimates(test)
    vmin, vmax = float(test_true.min()), float(test_true.max())
    panels = [("true log(q/p)", true, None)]
    names = {"flow_ratio": "Q-flow-ratio", "one_ratio": "1 ratio", "kde": "KDE"}
    for key, name in names.items():
        panels.append((name, est[key], mean_absolute_error(test_est[key], test_true)))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    for ax, (name, val, mae) in zip(axes, panels):
        im = ax.pcolormesh(
            gx, gy, val.reshape(gx.shape), vmin=vmin, vmax=vmax, cmap="coolwarm", shading="auto"
        )
        ax.set_title(name if mae is None else f"{name}, MAE {mae:.3f}")
        ax.set_aspect("equal")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.85)
    heat = out / "log_ratio_heatmaps.png"
    fig.savefig(heat, dpi=100)
    plt.close(fig)

    ts = torch.linspace(0.0, 1.0, method.ratio_times)
    g = torch.Generator().manual_seed(11)
    traj = method.trajectory(problem.sample_source(2000, generator=g), ts).cpu()
    k = len(ts)
    fig, axes = plt.subplots(2, k, figsize=(2.2 * k, 4.6), squeeze=False)
    gx2, gy2, pts2 = _grid(low - pad, high + pad, 80)
    with torch.no_grad():
        z = pts2.to(method.device)
        ells = [
            interval_integral(method.ratio_net, z, float(ts[i - 1]), float(ts[i])).cpu()
            for i in range(1, k)
        ]
    lim = max(float(e.abs().quantile(0.99)) for e in ells) if ells else 1.0
    for i in range(k):
        ax = axes[0, i]
        ax.scatter(*traj[i].T, s=1, alpha=0.4)
        ax.set_title(f"t = {float(ts[i]):.2f}", fontsize=8)
        ax.set_xlim(float(low[0] - pad[0]), float(high[0] + pad[0]))
        ax.set_ylim(float(low[1] - pad[1]), float(high[1] + pad[1]))
        ax = axes[1, i]
        if i == 0:
            ax.axis("off")
            continue
        ax.pcolormesh(
            gx2,
            gy2,
            ells[i - 1].reshape(gx2.shape),
            cmap="coolwarm",
            vmin=-lim,
            vmax=lim,
            shading="auto",
        )
        ax.set_title(f"ℓ_{i} ≈ log p_{i}/p_{i - 1}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    inter = out / "flow_intermediate.png"
    fig.savefig(inter, dpi=100)
    plt.close(fig)
    return [heat, inter]


__all__ = [
    "flow_log_ratio",
    "flow_ratio_loss",
    "interval_integral",
    "kde_log_density",
    "kde_log_ratio",
    "logistic_ratio_loss",
    "mean_absolute_error",
    "median_bandwidth",
    "plot_dre",
]
