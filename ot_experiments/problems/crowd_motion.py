"""Crowd motion (Lagrangian paper, sections 2.6 and 3.3; docs/problems.md): Gaussian crowds
ρ0 = N(m0, σ0² I) → ρ1 = N(m1, σ0² I) in d ≥ 2 dimensions that must avoid an obstacle
Q(x) reading the first two coordinates only.

Cases (``problem.case``; covariances are VARIANCES, as in the paper):

- test4: λ_FP 500, λ_KL 10, (−3,0) → (3,0), Σ = 0.3 I, Q = N(x; 0, diag(0.5, 1)).
- test5: λ_FP 500, λ_KL 10, (−4,0) → (4,0), Σ = 0.3 I,
  Q = ½N(x; (0,−2), diag(0.1,1)) + ½N(x; (0,2), diag(0.1,1)).
- maze1: λ_FP 5e4, λ_KL 100, (−4,−4) → (4,4), Σ = 0.3 I,
  Q = 1[−3 ≤ x1 < 10, −1 ≤ x2 < 1]·(0.1 x1 + 0.4).
- maze2: λ_FP 5000, λ_KL 100, (0,−4) → (0,4), Σ = 0.3 I,
  Q = 1[−10 ≤ x1 < 2, −1 ≤ x2 < 1]·(−0.1 x1 + 0.3).
- maze3: λ_FP 5000, λ_KL 100, (0,−4) → (0,4), Σ = I,
  Q = (1[−10 ≤ x1 < −0.5, |x2| < 1] + 1[0.5 ≤ x1 < 10, |x2| < 1])·0.1|x1|.
- maze4: λ_FP 5, λ_KL 100, (−3,−3) → (3,3), Σ = 0.3 I,
  Q = (1[−10 ≤ x1 < −1, −0.5 ≤ x2 < 1.5] + 1[1 ≤ x1 < 10, −1.5 ≤ x2 < 0.5])·0.1·10^m·|x1|.

maze4's factor 10^m, m = min(⌊step/100⌋, 6), is a continuation in the training step; the
final (m = 6) obstacle is used whenever no step is given (evaluation, figures).

``blur`` > 0 replaces each rectangle indicator by its convolution with an isotropic Gaussian
of standard deviation ``blur`` (a product of erf windows, so it is exact and smooth); the
weight factor (e.g. 0.1 x1 + 0.4) is applied pointwise. ``blur = 0`` is the plain indicator.

The obstacle core (for the metric ``obstacle_fraction``): Q ≥ ½ max Q for the Gaussian
obstacles (test4, test5: the half-maximum ellipses), the unblurred rectangles for the mazes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ot_experiments.errors import ConfigError
from ot_experiments.problems.base import Problem, require_dim


# -- obstacle functions of the first two coordinates --------------------------------------
def gaussian_density_2d(x: Tensor, mean: tuple[float, float], var: tuple[float, float]) -> Tensor:
    """N(x; m, diag(v)) of the first two coordinates of x (n, d) → (n,)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)
    v = torch.tensor(var, dtype=x.dtype, device=x.device)
    q = ((x[:, :2] - m).square() / v).sum(1)
    return torch.exp(-0.5 * q) / (2 * math.pi * math.sqrt(var[0] * var[1]))


def interval_window(u: Tensor, low: float, high: float, blur: float) -> Tensor:
    """1[low ≤ u < high] (n,), or for blur b > 0 its convolution with N(0, b²):

    ½[erf((high − u)/(√2 b)) − erf((low − u)/(√2 b))].
    """
    if blur <= 0:
        return ((u >= low) & (u < high)).to(u.dtype)
    s = math.sqrt(2) * blur
    return 0.5 * (torch.erf((high - u) / s) - torch.erf((low - u) / s))


@dataclass(frozen=True)
class Rect:
    """Rectangle [x1lo, x1hi) × [x2lo, x2hi) with weight a·x1 + b (``absolute``: a·|x1|)."""

    x1: tuple[float, float]
    x2: tuple[float, float]
    slope: float
    offset: float = 0.0
    absolute: bool = False

    def weight(self, x1: Tensor) -> Tensor:
        return self.slope * (x1.abs() if self.absolute else x1) + self.offset

    def window(self, x: Tensor, blur: float) -> Tensor:
        return interval_window(x[:, 0], *self.x1, blur) * interval_window(x[:, 1], *self.x2, blur)


@dataclass(frozen=True)
class Case:
    mean0: tuple[float, float]
    mean1: tuple[float, float]
    var: float
    lambda_fp: float
    lambda_kl: float
    gaussians: tuple[tuple[float, tuple[float, float], tuple[float, float]], ...] = ()
    rects: tuple[Rect, ...] = ()
    continuation: bool = False  # maze4: Q·10^m, m = min(⌊step/100⌋, 6)


CASES: dict[str, Case] = {
    "test4": Case((-3, 0), (3, 0), 0.3, 500, 10, gaussians=((1.0, (0, 0), (0.5, 1)),)),
    "test5": Case(
        (-4, 0),
        (4, 0),
        0.3,
        500,
        10,
        gaussians=((0.5, (0, -2), (0.1, 1)), (0.5, (0, 2), (0.1, 1))),
    ),
    "maze1": Case((-4, -4), (4, 4), 0.3, 5e4, 100, rects=(Rect((-3, 10), (-1, 1), 0.1, 0.4),)),
    "maze2": Case((0, -4), (0, 4), 0.3, 5000, 100, rects=(Rect((-10, 2), (-1, 1), -0.1, 0.3),)),
    "maze3": Case(
        (0, -4),
        (0, 4),
        1.0,
        5000,
        100,
        rects=(
            Rect((-10, -0.5), (-1, 1), 0.1, absolute=True),
            Rect((0.5, 10), (-1, 1), 0.1, absolute=True),
        ),
    ),
    "maze4": Case(
        (-3, -3),
        (3, 3),
        0.3,
        5,
        100,
        rects=(
            Rect((-10, -1), (-0.5, 1.5), 0.1, absolute=True),
            Rect((1, 10), (-1.5, 0.5), 0.1, absolute=True),
        ),
        continuation=True,
    ),
}


def continuation_factor(step: int | None, every: int = 100, top: int = 6) -> float:
    """10^m with m = min(⌊step/every⌋, top); the final 10^top when ``step`` is None."""
    m = top if step is None else min(int(step) // every, top)
    return 10.0**m


WALL_RAMP_STEPS = 300  # continuation of λ_FP (method hint) for the maze walls of maze1-3
CORE_REFINE = 8  # points per path step for obstacle_fraction


class CrowdMotionProblem(Problem):
    """Gaussian crowds with an obstacle cost Q (see the module docstring for the cases).

    Parameters
    ----------
    dim : int
        Dimension d ≥ 2; the means are padded with zeros, Q reads (x1, x2).
    case : str
        test4, test5, maze1, maze2, maze3 or maze4.
    blur : float
        Gaussian blur (standard deviation) of the maze rectangles; 0 = plain indicator.
    lambda_fp, lambda_kl : float, optional
        Obstacle weight λ_FP and KL weight λ_KL; None = the case's paper value. They reach
        the ``lagrangian`` method's ``auto`` weights through ``method_hints``.
    """

    offers = frozenset({"samples", "log_density", "path_cost"})

    def __init__(
        self,
        dim: int,
        case: str = "test4",
        blur: float = 0.0,
        lambda_fp: float | None = None,
        lambda_kl: float | None = None,
    ) -> None:
        self.dim = require_dim("crowd_motion", dim, minimum=2)
        if case not in CASES:
            raise ConfigError(
                f"unknown crowd-motion case '{case}'; choose one of {', '.join(CASES)}"
            )
        if blur < 0:
            raise ConfigError(f"problem.blur={blur} is not valid: the blur width must be >= 0")
        self.case_name, self.case, self.blur = case, CASES[case], float(blur)
        self.lambda_fp = float(self.case.lambda_fp if lambda_fp is None else lambda_fp)
        self.lambda_kl = float(self.case.lambda_kl if lambda_kl is None else lambda_kl)
        self.mean0 = torch.zeros(self.dim, dtype=torch.float64)
        self.mean1 = torch.zeros(self.dim, dtype=torch.float64)
        self.mean0[:2] = torch.tensor(self.case.mean0, dtype=torch.float64)
        self.mean1[:2] = torch.tensor(self.case.mean1, dtype=torch.float64)
        self.std = math.sqrt(self.case.var)
        self._q_max = self._gaussian_max() if self.case.gaussians else None

    # samples and densities ----------------------------------------------------------------
    def _sample(self, mean: Tensor, n, generator, device) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, device=device)
        return mean.to(device, z.dtype) + self.std * z

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.mean0, n, generator, device)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.mean1, n, generator, device)

    def _log_density(self, x: Tensor, mean: Tensor) -> Tensor:
        """ln N(x; m, σ² I) = −‖x − m‖²/(2σ²) − (d/2) ln(2π σ²)."""
        var = self.case.var
        sq = (x - mean.to(x.device, x.dtype)).square().sum(1)
        return -0.5 * sq / var - 0.5 * self.dim * math.log(2 * math.pi * var)

    def log_density_source(self, x: Tensor) -> Tensor:
        return self._log_density(x, self.mean0)

    def log_density_target(self, y: Tensor) -> Tensor:
        return self._log_density(y, self.mean1)

    def source_variance(self) -> float:
        return self.dim * self.case.var

    def target_variance(self) -> float:
        return self.dim * self.case.var

    @property
    def label(self) -> str:
        """The case, e.g. "maze1" (a T2 cell)."""
        return self.case_name

    def method_hints(self, method: str) -> dict[str, object]:
        """Lagrangian: λ_KL, λ_FP, no H¹ term, and a 300-step continuation of λ_FP for the
        maze walls of maze1–maze3 (without it maze1 tunnels; maze4 has its own)."""
        if method != "lagrangian":
            return {}
        walls = bool(self.case.rects) and not self.case.continuation
        return {
            "kl_weight": self.lambda_kl,
            "obstacle_weight": self.lambda_fp,
            "h1_weight": 0.0,
            "obstacle_ramp_steps": WALL_RAMP_STEPS if walls else 0,
        }

    # the obstacle -------------------------------------------------------------------------
    def path_cost(self, x: Tensor, step: int | None = None) -> Tensor:
        """Q(x) (n,) of the first two coordinates; maze4 scales it by 10^m(step)."""
        q = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for w, m, v in self.case.gaussians:
            q = q + w * gaussian_density_2d(x, m, v)
        for r in self.case.rects:
            q = q + r.window(x, self.blur) * r.weight(x[:, 0])
        if self.case.continuation:
            q = q * continuation_factor(step)
        return q

    def _gaussian_max(self) -> float:
        g = torch.linspace(-6, 6, 601, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        return float(self.path_cost(grid).max())

    def in_obstacle_core(self, x: Tensor) -> Tensor:
        """Boolean (n,): Q(x) ≥ ½ max Q (Gaussian obstacles) or inside a maze rectangle."""
        if self.case.gaussians:
            return self.path_cost(x) >= 0.5 * self._q_max
        inside = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for r in self.case.rects:
            inside |= r.window(x, 0.0) > 0
        return inside

    def plot_box(self) -> tuple[float, float, float, float]:
        """(x1lo, x1hi, x2lo, x2hi) of the figures."""
        return (-6.0, 6.0, -6.0, 6.0)

    def evaluate_method(self, method, x: Tensor, full: bool = True) -> dict[str, float]:
        """``obstacle_cost`` = ∫₀¹ mean Q(z(t)) dt (Simpson over the method's ``paths``) and
        ``obstacle_fraction``: the share of path points inside the obstacle core, with every
        path step refined to ``CORE_REFINE`` points on straight segments so that a jump
        across a thin wall is counted."""
        from ot_experiments.ode import path_integral, refine_path

        path = method.paths(x).to(x.device, x.dtype)  # (k, n, d), k odd
        k, n, d = path.shape
        w = torch.full((n,), 1.0 / n, dtype=path.dtype, device=path.device)
        out = {"obstacle_cost": float(path_integral(self.path_cost, path, w))}
        fine = refine_path(path, CORE_REFINE)
        inside = self.in_obstacle_core(fine.reshape(-1, d))
        out["obstacle_fraction"] = float(inside.float().mean())
        return out


__all__ = [
    "CASES",
    "CrowdMotionProblem",
    "continuation_factor",
    "gaussian_density_2d",
    "interval_window",
]
