"""Hamiltonians H = h* of translation-invariant costs c(x, y) = h(y − x).

Each object gives H(p), ∇H(p) (shapes (n, d) → (n,) and (n, d)) and the cost h(v).
"""

from __future__ import annotations

from torch import Tensor


class QuadraticHamiltonian:
    """h(v) = ½‖v‖², H(p) = ½‖p‖², ∇H(p) = p."""

    def cost(self, v: Tensor) -> Tensor:
        return 0.5 * v.square().sum(-1)

    def __call__(self, p: Tensor) -> Tensor:
        return 0.5 * p.square().sum(-1)

    def grad(self, p: Tensor) -> Tensor:
        return p


class PowerHamiltonian:
    """h(v) = ‖v‖^q / q, H(p) = ‖p‖^{q'} / q', ∇H(p) = ‖p‖^{q'−2} p, 1/q + 1/q' = 1.

    Parameters
    ----------
    q : float
        Cost exponent, q > 1 (q = 2 is the quadratic case).
    eps : float
        Floor on ‖p‖ so that ∇H stays finite when q' < 2.
    """

    def __init__(self, q: float = 2.0, eps: float = 1e-8) -> None:
        if q <= 1:
            raise ValueError(f"the cost exponent q must be > 1, got {q}")
        self.q = float(q)
        self.q_dual = self.q / (self.q - 1)
        self.eps = eps

    def _norm(self, p: Tensor) -> Tensor:
        return p.square().sum(-1).clamp_min(self.eps**2).sqrt()

    def cost(self, v: Tensor) -> Tensor:
        return self._norm(v) ** self.q / self.q

    def __call__(self, p: Tensor) -> Tensor:
        return self._norm(p) ** self.q_dual / self.q_dual

    def grad(self, p: Tensor) -> Tensor:
        return self._norm(p)[..., None] ** (self.q_dual - 2) * p


__all__ = ["PowerHamiltonian", "QuadraticHamiltonian"]
