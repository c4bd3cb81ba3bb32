"""A pair of Gaussian mixtures with exact log densities (Q-flow density-ratio problem, T6).

P = (1/K_P) Σ_k N(a_k, A_k) and Q = (1/K_Q) Σ_k N(b_k, B_k), equal weights. The paper's
2-D setting has three components in P and two in Q; its means and covariances are not
published, so ``conf/problem/dre_mixtures.yaml`` records the ones we chose. The true log
ratio log(q/p)(x) = ln q(x) − ln p(x) is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ot_experiments.errors import ConfigError
from ot_experiments.problems.base import Problem, require_dim
from ot_experiments.problems.gaussian import mixture_log_density


def _as_params(name: str, means: Sequence, covs: Sequence, dim: int) -> tuple[Tensor, Tensor]:
    m = torch.as_tensor(means, dtype=torch.float64)
    c = torch.as_tensor(covs, dtype=torch.float64)
    if m.dim() != 2 or m.shape[1] != dim or c.shape != (m.shape[0], dim, dim):
        raise ConfigError(
            f"problem.{name}: expected K means of length d={dim} and K covariances of shape "
            f"{dim}x{dim}, got means {tuple(m.shape)} and covariances {tuple(c.shape)}"
        )
    try:
        chol = torch.linalg.cholesky(c)
    except RuntimeError as err:
        raise ConfigError(
            f"problem.{name}: every covariance must be symmetric positive definite"
        ) from err
    return m, chol


class GaussianMixturePairProblem(Problem):
    """Equal-weight Gaussian mixtures P (source) and Q (target) with exact densities.

    Parameters
    ----------
    dim : int
        Dimension d (the T6 configuration is 2-D).
    source_means, target_means : list of list of float
        Component means, shapes (K_P, d) and (K_Q, d).
    source_covs, target_covs : list of d×d lists
        Component covariances, shapes (K_P, d, d) and (K_Q, d, d).
    ratio_test_points : int
        Test points of the log-ratio metrics (half from each side).
    """

    offers = frozenset({"samples", "log_density"})

    def __init__(
        self,
        dim: int = 2,
        source_means: Sequence = ((-4.0, -2.0), (4.0, -2.0), (0.0, 4.0)),
        source_covs: Sequence = (
            ((0.3, 0.0), (0.0, 0.3)),
            ((0.3, 0.0), (0.0, 0.3)),
            ((0.3, 0.0), (0.0, 0.3)),
        ),
        target_means: Sequence = ((-1.0, 0.5), (1.0, 0.5)),
        target_covs: Sequence = (((0.5, 0.2), (0.2, 0.3)), ((0.5, -0.2), (-0.2, 0.3))),
        ratio_test_points: int = 10_000,
    ) -> None:
        self.dim = require_dim("dre_mixtures", dim)
        self.a, self.chol_a = _as_params("source_means/source_covs", source_means, source_covs, dim)
        self.b, self.chol_b = _as_params("target_means/target_covs", target_means, target_covs, dim)
        self.n_ratio_test = int(ratio_test_points)

    def _sample(self, means, chols, n, g, device) -> Tensor:
        k = torch.randint(0, means.shape[0], (n,), generator=g, device=device)
        z = torch.randn(n, self.dim, generator=g, device=device)
        m = means.to(device, torch.float32)[k]
        ch = chols.to(device, torch.float32)[k]
        return m + torch.einsum("nij,nj->ni", ch, z)

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.a, self.chol_a, n, generator, device)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.b, self.chol_b, n, generator, device)

    def log_density_source(self, x: Tensor) -> Tensor:
        return mixture_log_density(x, self.a, self.chol_a)

    def log_density_target(self, y: Tensor) -> Tensor:
        return mixture_log_density(y, self.b, self.chol_b)

    def log_ratio_true(self, x: Tensor) -> Tensor:
        """Exact log(q/p)(x) = ln q(x) − ln p(x), shape (n,)."""
        return self.log_density_target(x) - self.log_density_source(x)

    def method_hints(self, method: str) -> dict[str, object]:
        """Q-flow: train its density-ratio nets (this is the T6 problem)."""
        return {"density_ratio": True} if method == "qflow" else {}

    def ratio_test_points(self) -> Tensor:
        """Half source, half target samples (fixed seed) for the log-ratio metrics, (n, d)."""
        g = torch.Generator().manual_seed(4242)
        n = self.n_ratio_test
        return torch.cat(
            [self.sample_source(n // 2, generator=g), self.sample_target(n - n // 2, generator=g)]
        )

    def evaluate_method(self, method, x: Tensor, full: bool = True) -> dict[str, float]:
        """``mae_<name>`` = mean |estimate − log(q/p)| on ``ratio_test_points`` for every
        estimate of log(q/p) the method gives (``method.log_ratio_estimates``)."""
        pts = self.ratio_test_points()
        estimates = method.log_ratio_estimates(pts)
        if not estimates:
            return {}
        true = self.log_ratio_true(pts)
        return {f"mae_{name}": float((e - true).abs().mean()) for name, e in estimates.items()}

    def _variance(self, means: Tensor, chols: Tensor) -> float:
        """tr Cov of an equal-weight mixture = mean tr Σ_k + tr Cov of the means."""
        covs = chols @ chols.transpose(1, 2)
        within = torch.diagonal(covs, dim1=1, dim2=2).sum(1).mean()
        between = (means - means.mean(0)).square().sum(1).mean()
        return float(within + between)

    def source_variance(self) -> float:
        return self._variance(self.a, self.chol_a)

    def target_variance(self) -> float:
        return self._variance(self.b, self.chol_b)


__all__ = ["GaussianMixturePairProblem", "mixture_log_density"]
