"""Gaussian pairs N(m0, Σ0) → N(m1, Σ1) with their closed-form OT solution.

Presets (``problem.preset``):

- ``ncf_benchmark`` (T1a): m0 = m1 = 0, Σ = Q diag(exp λ) Qᵀ, λᵢ ~ U(−log 2, log 2), Q from
  the QR decomposition of a d×d standard normal matrix; Σ0 and Σ1 drawn independently.
- ``shift`` (Lagrangian Test 1): N(0, I) → N(−4e1, I).
- ``scale_shift`` (Test 2): N(0, 0.3 I) → N(−4e1, I).
- ``two_axis_shift`` (Test 3): N(−4e1 − 4e2, I) → N(4e1 + 4e2, I); needs d ≥ 2.
- ``wishart`` (GradNetOT): N(m, Σ), m ~ N(0, I), Σ ~ Wishart(d + 1, I) → N(0, I).
- ``gaussian2d`` (GradNetOT Fig. 1): N((1, −1), [[1, .7], [.7, 1]]) → N(0, I); needs d = 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ot_experiments.errors import ConfigError
from ot_experiments.problems.base import Problem, require_dim


def sqrtm_psd(a: Tensor) -> Tensor:
    """Symmetric square root A^½ of a symmetric PSD matrix (d, d), via eigh."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def gaussian_ot_matrix(cov0: Tensor, cov1: Tensor) -> Tensor:
    """Matrix of the OT map between centred Gaussians.

    A = Σ0^{-½} (Σ0^{½} Σ1 Σ0^{½})^{½} Σ0^{-½}, symmetric PD, so T*(x) = m1 + A (x − m0).
    Shapes: (d, d), (d, d) → (d, d).
    """
    s0 = sqrtm_psd(cov0)
    s0_inv = torch.linalg.inv(s0)
    mid = sqrtm_psd(s0 @ cov1 @ s0)
    a = s0_inv @ mid @ s0_inv
    return 0.5 * (a + a.T)


def gaussian_w2_sq(mean0: Tensor, cov0: Tensor, mean1: Tensor, cov1: Tensor) -> float:
    """W2²(N(m0,Σ0), N(m1,Σ1)) = ‖m0 − m1‖² + tr(Σ0 + Σ1 − 2 (Σ0^{½} Σ1 Σ0^{½})^{½})."""
    s0 = sqrtm_psd(cov0)
    cross = sqrtm_psd(s0 @ cov1 @ s0)
    return float((mean0 - mean1).square().sum() + torch.trace(cov0 + cov1 - 2 * cross))


def mixture_log_density(x: Tensor, means: Tensor, chols: Tensor) -> Tensor:
    """ln (1/K) Σ_k N(x; m_k, L_k L_kᵀ); x (n, d), means (K, d), chols (K, d, d) → (n,)."""
    k, d = means.shape
    diff = (x[None, :, :] - means.to(x)[:, None, :]).transpose(1, 2)  # (K, d, n)
    z = torch.linalg.solve_triangular(chols.to(x), diff, upper=False)  # (K, d, n)
    logdet = torch.log(torch.diagonal(chols.to(x), dim1=1, dim2=2)).sum(1)  # (K,)
    comp = -0.5 * z.square().sum(1) - logdet[:, None] - 0.5 * d * math.log(2 * math.pi)
    return torch.logsumexp(comp, dim=0) - math.log(k)


def random_rotation_covariance(d: int, generator: torch.Generator) -> Tensor:
    """Σ = Q diag(exp λ) Qᵀ with λᵢ ~ U(−log 2, log 2), Q from QR of a standard normal matrix."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    lam = (torch.rand(d, generator=generator, dtype=torch.float64) * 2 - 1) * math.log(2)
    return (q * lam.exp()) @ q.T


def _preset(name: str, d: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(m0, Σ0, m1, Σ1) in float64 for a preset."""
    eye = torch.eye(d, dtype=torch.float64)
    zero = torch.zeros(d, dtype=torch.float64)
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1.0
    if name == "ncf_benchmark":
        cov0 = random_rotation_covariance(d, g)
        cov1 = random_rotation_covariance(d, g)
        return zero, cov0, zero.clone(), cov1
    if name == "shift":
        return zero, eye, -4 * e1, eye.clone()
    if name == "scale_shift":
        return zero, 0.3 * eye, -4 * e1, eye.clone()
    if name == "two_axis_shift":
        if d < 2:
            raise ConfigError(f"preset 'two_axis_shift' needs d >= 2, got d={d}")
        e12 = e1.clone()
        e12[1] = 1.0
        return -4 * e12, eye, 4 * e12, eye.clone()
    if name == "wishart":
        mean0 = torch.randn(d, generator=g, dtype=torch.float64)
        w = torch.randn(d + 1, d, generator=g, dtype=torch.float64)
        return mean0, w.T @ w, zero, eye
    if name == "gaussian2d":
        if d != 2:
            raise ConfigError(f"preset 'gaussian2d' is two-dimensional: set d=2 (got d={d})")
        cov0 = torch.tensor([[1.0, 0.7], [0.7, 1.0]], dtype=torch.float64)
        return torch.tensor([1.0, -1.0], dtype=torch.float64), cov0, zero, eye
    raise ConfigError(f"unknown Gaussian preset '{name}'; choose one of {', '.join(PRESETS)}")


PRESETS = ("ncf_benchmark", "shift", "scale_shift", "two_axis_shift", "wishart", "gaussian2d")


# The Lagrangian paper's Tests 1-3 and the H¹ weight α its authors used for each
LAGRANGIAN_TESTS = ("shift", "scale_shift", "two_axis_shift")


def lagrangian_h1_weight(preset: str, d: int) -> float:
    """α of the Lagrangian method on Tests 1–3: Tests 1–2 (shift, scale_shift) α = 1 for
    d ≤ 10, 0.1 above; Test 3 (two_axis_shift) α = 5 for d ≤ 20, 20 above."""
    if preset == "two_axis_shift":
        return 5.0 if d <= 20 else 20.0
    return 1.0 if d <= 10 else 0.1


class GaussianProblem(Problem):
    """A pair of Gaussians with the exact OT map and cost.

    Parameters
    ----------
    dim : int
        Dimension d.
    preset : str
        One of ``PRESETS``.
    seed : int
        Problem seed: the same (preset, d, seed) always gives the same pair.
    """

    offers = frozenset({"samples", "log_density", "ground_truth", "symmetric_source"})

    def __init__(self, dim: int, preset: str = "ncf_benchmark", seed: int = 0) -> None:
        self.dim = require_dim("gaussian", dim)
        self.preset = preset
        g = torch.Generator().manual_seed(int(seed))
        m0, c0, m1, c1 = _preset(preset, self.dim, g)
        self.mean0, self.cov0, self.mean1, self.cov1 = m0, c0, m1, c1
        self.chol0 = torch.linalg.cholesky(c0)
        self.chol1 = torch.linalg.cholesky(c1)
        self.map_matrix = gaussian_ot_matrix(c0, c1)
        self.map_matrix_inv = torch.linalg.inv(self.map_matrix)
        self._w2_sq = gaussian_w2_sq(m0, c0, m1, c1)

    @property
    def label(self) -> str:
        """The preset (a table cell: T1a's ncf_benchmark, T1c's Tests 1–3, ...)."""
        return self.preset

    def method_hints(self, method: str) -> dict[str, object]:
        """Lagrangian Tests 1–3: the authors' H¹ weight α per test and d (T1b/T1c)."""
        if method == "lagrangian" and self.preset in LAGRANGIAN_TESTS:
            return {"h1_weight": lagrangian_h1_weight(self.preset, self.dim)}
        return {}

    # samples --------------------------------------------------------------------------
    def _sample(self, mean, chol, n, generator, device) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, device=device)
        return mean.to(device, z.dtype) + z @ chol.to(device, z.dtype).T

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.mean0, self.chol0, n, generator, device)

    @property
    def source_centre(self) -> Tensor:
        """The source mean m0 (float32): a Gaussian is symmetric about its mean."""
        return self.mean0.float()

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.mean1, self.chol1, n, generator, device)

    # densities ------------------------------------------------------------------------
    def log_density_source(self, x: Tensor) -> Tensor:
        return mixture_log_density(x, self.mean0[None], self.chol0[None])

    def log_density_target(self, y: Tensor) -> Tensor:
        return mixture_log_density(y, self.mean1[None], self.chol1[None])

    # ground truth ---------------------------------------------------------------------
    def transport_true(self, x: Tensor) -> Tensor:
        """T*(x) = m1 + A (x − m0)."""
        a = self.map_matrix.to(x.device, x.dtype)
        return self.mean1.to(x.device, x.dtype) + (x - self.mean0.to(x.device, x.dtype)) @ a

    def inverse_transport_true(self, y: Tensor) -> Tensor:
        """(T*)⁻¹(y) = m0 + A⁻¹ (y − m1)."""
        a_inv = self.map_matrix_inv.to(y.device, y.dtype)
        return self.mean0.to(y.device, y.dtype) + (y - self.mean1.to(y.device, y.dtype)) @ a_inv

    @property
    def w2_sq_true(self) -> float:
        return self._w2_sq

    def source_variance(self) -> float:
        return float(torch.trace(self.cov0))

    def target_variance(self) -> float:
        return float(torch.trace(self.cov1))
