"""Density-ratio estimation (DRE) along a flow, and the two baselines of the Q-flow paper.

Q-flow-ratio net (telescoping DRE): a network r(x, t) is trained on the samples pushed
along the flow's time grid 0 = t_0 < … < t_K = 1 (distributions p_0 = p, …, p_K ≈ q).
For interval k, ℓ_k(x) = ∫_{t_{k−1}}^{t_k} r(x, s) ds (3/8-rule quadrature) and

    L = Σ_k E_{p_{k−1}} softplus(ℓ_k) + E_{p_k} softplus(−ℓ_k),

whose minimiser is ℓ_k = log p_k − log p_{k−1}; hence log(q/p)(x) ≈ Σ_k ℓ_k(x) = ∫₀¹ r(x,t) dt.

Baselines: "1 ratio", one classifier c between P and Q with the same logistic loss
(c* = log q − log p), and KDE, log q̂(x) − log p̂(x) with Gaussian kernels of bandwidth
0.1 × median pairwise distance.

``FlowRatioEstimator`` trains the flow-ratio net and the 1-ratio classifier on a flow's pushed
samples and reports the three estimates; Q-flow holds one (``method.density_ratio``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ot_experiments.errors import ConfigError
from ot_experiments.metrics.distances import pairwise_distances

if TYPE_CHECKING:
    from ot_experiments.problems.base import Problem

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


# -- the estimator Q-flow trains at the end ---------------------------------------------
@dataclasses.dataclass(frozen=True)
class RatioSettings:
    """Density-ratio estimation along the flow (``method.ratio``).

    Attributes
    ----------
    steps, lr, batch : int, float, int
        Adam steps and learning rate of the ratio nets, samples per grid time and step.
    lr_final : float
        The lr decays exponentially to ``lr_final`` × ``lr`` over the steps (1: constant).
    times : int
        Grid times t_0 = 0 < … < t_K = 1 (equally spaced).
    pool_size : int
        Source samples pushed once along the grid times (a small pool over-fits: with 1,024
        the test MAE grew during training).
    ends : {"real", "pushed"}
        Samples of the chain's end points: ``real`` uses fresh P and Q samples at t = 0 and
        t = 1, so the telescoped sum targets log(q/p) even where T#P ≠ Q; ``pushed`` uses the
        pushed pool at every time (its last set estimates T#P, not Q).
    kde_points, kde_factor : int, float
        Samples per side and bandwidth factor of the KDE baseline.
    """

    steps: int = 1000
    lr: float = 1e-3
    lr_final: float = 1.0
    batch: int = 500
    times: int = 10
    pool_size: int = 20_000
    ends: str = "real"
    kde_points: int = 5000
    kde_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.ends not in ("real", "pushed"):
            raise ConfigError(
                f"method.ratio.ends={self.ends!r} is not valid; choose real or pushed"
            )
        for f in dataclasses.fields(self):
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            object.__setattr__(self, f.name, kind(getattr(self, f.name)))


class FlowRatioEstimator:
    """log(q/p) by the Q-flow-ratio net r(x, t) along a flow, with the two baselines.

    The networks are owned (registered) by the method; the estimator holds its training
    state: the pushed pool, whether it was trained, the steps taken (lr decay) and the KDE
    samples.

    Parameters
    ----------
    ratio_net : nn.Module
        r(x, t), called as ``ratio_net(x (n, d), t)`` with t a scalar or a column (n, 1).
    one_ratio : nn.Module
        The "1 ratio" classifier c(x), (n, d) → (n, 1).
    settings : RatioSettings
        Sizes, learning rates and the end points of the chain.
    """

    def __init__(self, ratio_net: nn.Module, one_ratio: nn.Module, settings: RatioSettings):
        self.ratio_net, self.one_ratio, self.settings = ratio_net, one_ratio, settings
        self.pool: Tensor | None = None  # (times, pool_size, d), pushed once
        self.trained = False
        self.step_count = 0
        self._kde: dict | None = None

    def grid(self) -> Tensor:
        """The grid times (K+1,), on the CPU."""
        return torch.linspace(0.0, 1.0, self.settings.times)

    def parameters(self) -> list[Tensor]:
        """The parameters of both networks (one optimizer serves them)."""
        return [*self.ratio_net.parameters(), *self.one_ratio.parameters()]

    def step_loss(
        self, draw: Callable[[str, int], Tensor], push: Callable[[Tensor, Tensor], Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Telescoping loss of the ratio net plus the 1-ratio logistic loss, and their parts.

        Parameters
        ----------
        draw : callable
            ``draw(side, n)``: n samples of ``"source"`` or ``"target"`` on the device.
        push : callable
            ``push(x (n, d), ts (m,))``: states (m, n, d) of the flow, without gradients.
        """
        s = self.settings
        ts = self.grid()
        if self.pool is None:
            self.pool = push(draw("source", max(s.pool_size, s.batch)), ts)
        pool = self.pool
        idx = torch.randint(0, pool.shape[1], (len(ts), s.batch), device=pool.device)
        batch = torch.stack([pool[k, idx[k]] for k in range(len(ts))])
        if s.ends == "real":  # exact end points: the chain telescopes to log(q/p)
            batch[0] = draw("source", s.batch)
            batch[-1] = draw("target", s.batch)
        lr_loss = flow_ratio_loss(self.ratio_net, batch, ts)
        p, q = draw("source", s.batch), draw("target", s.batch)
        one = logistic_ratio_loss(self.one_ratio(p)[:, 0], self.one_ratio(q)[:, 0])
        self.trained = True
        return lr_loss + one, {"flow_ratio": lr_loss.detach(), "one_ratio": one.detach()}

    def decay_lr(self, opt: torch.optim.Optimizer, n_steps: int) -> None:
        """lr_i = lr · lr_final^(i / n_steps) at the i-th call (``n_steps`` ratio steps)."""
        frac = min(1.0, self.step_count / max(1, n_steps))
        for group in opt.param_groups:
            group["lr"] = self.settings.lr * self.settings.lr_final**frac
        self.step_count += 1

    def kde_reference(self, problem: Problem) -> dict:
        """The KDE's P and Q samples (fixed seed) and bandwidth ``h``, made once."""
        if self._kde is None:
            n, g = self.settings.kde_points, torch.Generator().manual_seed(777)
            p = problem.sample_source(n, generator=g)
            q = problem.sample_target(n, generator=g)
            self._kde = {"p": p, "q": q, "h": median_bandwidth(p, q, self.settings.kde_factor)}
        return self._kde

    @torch.no_grad()
    def log_ratio_estimates(
        self, x: Tensor, problem: Problem, device: torch.device | str
    ) -> dict[str, Tensor]:
        """log(q/p)(x) by the flow-ratio net, the 1-ratio classifier and KDE, each (n,) on the
        CPU; {} before training."""
        if not self.trained:
            return {}
        z = x.to(device)
        kde = self.kde_reference(problem)
        return {
            "flow_ratio": flow_log_ratio(self.ratio_net, z, self.grid()).cpu(),
            "one_ratio": self.one_ratio(z)[:, 0].cpu(),
            "kde": kde_log_ratio(x.cpu(), kde["p"], kde["q"], kde["h"]),
        }


class OnEstimator:
    """A method attribute kept on the method's ``FlowRatioEstimator`` (its ``dre``; the
    ``default`` without one), so that it keeps the name checkpoints carry it by (Q-flow's
    ``resume_attributes``: ``_ratio_pool = OnEstimator("pool", None)``).

    Parameters
    ----------
    name : str
        The estimator's attribute.
    default : object
        The value read when the method has no estimator (setting it then does nothing).
    """

    def __init__(self, name: str, default: Any) -> None:
        self.name, self.default = name, default

    def __get__(self, method, owner=None):
        if method is None:
            return self
        dre = method.__dict__.get("dre")
        return self.default if dre is None else getattr(dre, self.name)

    def __set__(self, method, value) -> None:
        dre = method.__dict__.get("dre")
        if dre is not None:
            setattr(dre, self.name, value)


__all__ = [
    "FlowRatioEstimator",
    "OnEstimator",
    "RatioSettings",
    "flow_log_ratio",
    "flow_ratio_loss",
    "interval_integral",
    "kde_log_density",
    "kde_log_ratio",
    "logistic_ratio_loss",
    "mean_absolute_error",
    "median_bandwidth",
]
