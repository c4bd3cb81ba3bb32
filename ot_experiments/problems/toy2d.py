"""Two-dimensional toy distributions, and a class-labelled pair of Gaussian mixtures.

Sample-only shapes (``problem=toy2d problem.source=... problem.target=...``):
``gaussian`` (standard normal), ``8gaussians``, ``moons``, ``checkerboard``, ``spirals``,
``rings``. ``problem=toy2d_classes`` is a labelled mixture pair whose class-k source component
must go to the class-k target component (the NCF paper's Fig. 3 setting).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ot_experiments.errors import ConfigError
from ot_experiments.problems.base import Problem
from ot_experiments.problems.gaussian import mixture_log_density


def _randn(n, g, device):
    return torch.randn(n, 2, generator=g, device=device)


def _rand(n, g, device, k=2):
    return torch.rand(n, k, generator=g, device=device)


def sample_gaussian(n: int, g=None, device="cpu") -> Tensor:
    """Standard normal N(0, I₂)."""
    return _randn(n, g, device)


def sample_8gaussians(n: int, g=None, device="cpu") -> Tensor:
    """Eight Gaussians (std 0.2) with centres on the circle of radius 2."""
    k = torch.randint(0, 8, (n,), generator=g, device=device)
    ang = k.float() * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([ang.cos(), ang.sin()], dim=1)
    return centres + 0.2 * _randn(n, g, device)


def sample_moons(n: int, g=None, device="cpu") -> Tensor:
    """Two interleaving half circles (noise 0.05), centred and scaled by 1.5."""
    u = _rand(n, g, device)
    t = math.pi * u[:, 0]
    upper = u[:, 1] < 0.5
    x = torch.where(upper, t.cos(), 1 - t.cos())
    y = torch.where(upper, t.sin(), 0.5 - t.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
    return pts + 0.05 * _randn(n, g, device)


def sample_checkerboard(n: int, g=None, device="cpu") -> Tensor:
    """Uniform on the dark squares of a 4×4 checkerboard on [−2, 2]²."""
    u = _rand(n, g, device, 3)
    x1 = u[:, 0] * 4 - 2
    x2 = u[:, 1] - (u[:, 2] < 0.5).float() * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1)


def sample_spirals(n: int, g=None, device="cpu") -> Tensor:
    """Two interleaved spirals, scaled to roughly [−3.5, 3.5]²."""
    u = _rand(n, g, device, 4)
    r = u[:, 0].sqrt() * 3 * math.pi
    sign = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
    pts = torch.stack([-r.cos() * r, r.sin() * r], dim=1) * sign[:, None]
    return (pts + (u[:, 2:] - 0.5) * 0.5) / 3


def sample_rings(n: int, g=None, device="cpu") -> Tensor:
    """Three concentric rings of radii 1, 2, 3 (noise 0.08)."""
    u = _rand(n, g, device, 2)
    radius = torch.floor(u[:, 0] * 3) + 1
    ang = u[:, 1] * 2 * math.pi
    pts = radius[:, None] * torch.stack([ang.cos(), ang.sin()], dim=1)
    return pts + 0.08 * _randn(n, g, device)


SHAPES = {
    "gaussian": sample_gaussian,
    "8gaussians": sample_8gaussians,
    "moons": sample_moons,
    "checkerboard": sample_checkerboard,
    "spirals": sample_spirals,
    "rings": sample_rings,
}


def _require_2d(name: str, dim: object) -> None:
    if dim != 2:
        raise ConfigError(f"problem '{name}' is two-dimensional: set d=2 (got d={dim!r})")


class Toy2DProblem(Problem):
    """Sample-only 2-D pair ``source`` → ``target`` (names from ``SHAPES``)."""

    offers = frozenset({"samples"})

    def __init__(self, dim: int = 2, source: str = "gaussian", target: str = "8gaussians"):
        _require_2d("toy2d", dim)
        for role, name in (("source", source), ("target", target)):
            if name not in SHAPES:
                raise ConfigError(
                    f"problem.{role}={name!r} is not a toy shape; choose one of {', '.join(SHAPES)}"
                )
        self.dim = 2
        self.source, self.target = source, target

    @property
    def label(self) -> str:
        """The shape pair, e.g. "gaussian>8gaussians"."""
        return f"{self.source}>{self.target}"

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return SHAPES[self.source](n, generator, device)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return SHAPES[self.target](n, generator, device)


class ClassMixtureProblem(Problem):
    """Labelled pair of 2-D Gaussian mixtures with equal weights and isotropic components.

    Source class k: N(a_k, s² I); target class k: N(b_k, s² I). With the default centres the
    target order is reversed (a_k at the top goes to b_k at the bottom), so unconditional OT
    (which maps straight across) and class-conditional OT disagree.
    """

    offers = frozenset({"samples", "labels", "log_density"})

    def __init__(
        self,
        dim: int = 2,
        source_means: tuple = ((-3.0, -2.0), (-3.0, 0.0), (-3.0, 2.0)),
        target_means: tuple = ((3.0, 2.0), (3.0, 0.0), (3.0, -2.0)),
        std: float = 0.3,
    ) -> None:
        _require_2d("toy2d_classes", dim)
        if len(source_means) != len(target_means):
            raise ConfigError(
                "problem.source_means and problem.target_means must list the same number "
                f"of classes (got {len(source_means)} and {len(target_means)})"
            )
        self.dim = 2
        self.a = torch.tensor(source_means, dtype=torch.float32)
        self.b = torch.tensor(target_means, dtype=torch.float32)
        self.std = float(std)
        self.classes = tuple(range(len(source_means)))

    def _sample(self, means, n, g, device, cls):
        if cls is None:
            k = torch.randint(0, len(means), (n,), generator=g, device=device)
        else:
            k = torch.full((n,), int(cls), device=device)
        return means.to(device)[k] + self.std * _randn(n, g, device)

    def sample_source(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.a, n, generator, device, cls)

    def sample_target(self, n, *, generator=None, device="cpu", cls=None) -> Tensor:
        return self._sample(self.b, n, generator, device, cls)

    def _log_density(self, x: Tensor, means: Tensor) -> Tensor:
        """ln (1/K) Σ_k N(x; m_k, s² I)."""
        chols = self.std * torch.eye(2).expand(len(means), 2, 2)
        return mixture_log_density(x, means, chols)

    def log_density_source(self, x: Tensor) -> Tensor:
        return self._log_density(x, self.a)

    def log_density_target(self, y: Tensor) -> Tensor:
        return self._log_density(y, self.b)
