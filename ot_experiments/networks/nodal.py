"""Nodal-basis velocity fields v(x, t) for Lagrangian dynamic OT (docs/methods/lagrangian.md).

Both networks reduce, at a fixed time t, to ONE two-layer tanh layer

    v(x, t) = W2(t) tanh(W1(t) x + b1(t)) + b2(t),   W1 (K, d), b1 (K,), W2 (d, K), b2 (d,),

so that velocity, divergence, Jacobian and the squared Frobenius norm of the Jacobian all have
closed forms (``tanh_layer_*`` below) and no d autograd passes are needed.

- ``NodalVelocity`` (the paper's v, section 2.5): v(x, t) = Σᵢ φᵢ(t) vᵢ(x) with the hat basis
  φᵢ on tᵢ = i/M, each vᵢ a sum of L two-layer tanh nets of width H. At any t only two nodes
  are active, so the effective layer is the concatenation of those two nodes' units
  (K = 2LH) with the output weights scaled by φᵢ(t).
- ``NodalWeightsVelocity`` (the ablation v*, Fig. 2.3): the weights themselves are
  hat-interpolated in t, W(t) = Σᵢ φᵢ(t) Wᵢ (K = LH).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

Layer = tuple[Tensor, Tensor, Tensor, Tensor]  # (W1 (K, d), b1 (K,), W2 (d, K), b2 (d,))


# -- closed forms for one tanh layer -------------------------------------------------------
def tanh_layer_velocity(x: Tensor, layer: Layer) -> Tensor:
    """v(x) = W2 tanh(W1 x + b1) + b2; x (n, d) → (n, d)."""
    w1, b1, w2, b2 = layer
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def tanh_layer_velocity_and_divergence(x: Tensor, layer: Layer) -> tuple[Tensor, Tensor]:
    """v(x) (n, d) and ∇·v(x) (n,) in closed form.

    ∇·v(x) = Σₖ (1 − tanh²(aₖ)) cₖ,  a = W1 x + b1,  cₖ = W2[:, k] · W1[k, :].
    """
    w1, b1, w2, b2 = layer
    h = torch.tanh(x @ w1.T + b1)  # (n, K)
    c = (w2.T * w1).sum(1)  # (K,)
    return h @ w2.T + b2, (1 - h.square()) @ c


def tanh_layer_jacobian(x: Tensor, layer: Layer) -> Tensor:
    """∇v(x) = W2 diag(1 − tanh²(a)) W1, shape (n, d, d) with [i, j] = ∂vᵢ/∂xⱼ."""
    w1, b1, w2, _ = layer
    s = 1 - torch.tanh(x @ w1.T + b1).square()  # (n, K)
    return torch.einsum("ik,nk,kj->nij", w2, s, w1)


def tanh_layer_jacobian_frobenius_sq(x: Tensor, layer: Layer) -> Tensor:
    """‖∇v(x)‖_F² (n,) without forming the (d, d) Jacobians.

    ‖W2 diag(s) W1‖_F² = sᵀ G s,  G = (W2ᵀ W2) ∘ (W1 W1ᵀ) (K, K),  s = 1 − tanh²(W1 x + b1);
    the cost per point is O(K²), independent of d.
    """
    w1, b1, w2, _ = layer
    s = 1 - torch.tanh(x @ w1.T + b1).square()  # (n, K)
    gram = (w2.T @ w2) * (w1 @ w1.T)
    return ((s @ gram) * s).sum(1)


def hat_weights(t: float | Tensor, time_intervals: int) -> tuple[int, Tensor | float]:
    """Active node i and weight s of the hat basis on tᵢ = i/M at time t ∈ [0, 1].

    v(·, t) = (1 − s) vᵢ + s vᵢ₊₁ with i = min(⌊tM⌋, M − 1), s = tM − i.
    """
    tm = t * time_intervals
    i = min(max(int(math.floor(float(tm))), 0), time_intervals - 1)
    return i, tm - i


def _uniform(shape: tuple[int, ...], bound: float) -> nn.Parameter:
    return nn.Parameter((torch.rand(shape) * 2 - 1) * bound)


class _TanhNodes(nn.Module):
    """M + 1 nodes, each a sum of L two-layer tanh nets of width H (stacked to width LH).

    A sum of L nets of width H equals one net of width LH whose output bias is the sum of
    the L biases; the L biases are kept apart so that the parameter count is the paper's
    L(M+1)(2dH + H + d). Initialisation: PyTorch's ``nn.Linear`` default, U(±1/√fan_in).
    """

    def __init__(
        self, in_dim: int, out_dim: int | None, time_intervals: int, n_terms: int, width: int
    ):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        if out_dim != in_dim:
            raise ValueError(f"a velocity field maps R^d to R^d: out_dim={out_dim} != d={in_dim}")
        self.dim, self.time_intervals, self.n_terms, self.width = (
            in_dim,
            time_intervals,
            n_terms,
            width,
        )
        k, nodes = n_terms * width, time_intervals + 1
        self.w1 = _uniform((nodes, k, in_dim), 1 / math.sqrt(in_dim))
        self.b1 = _uniform((nodes, k), 1 / math.sqrt(in_dim))
        self.w2 = _uniform((nodes, in_dim, k), 1 / math.sqrt(width))
        self.b2 = _uniform((nodes, n_terms, in_dim), 1 / math.sqrt(width))

    def layer(self, t: float | Tensor) -> Layer:
        """The effective tanh layer (W1, b1, W2, b2) at time t."""
        w1, b1, w2, b2 = self.layers(torch.tensor([float(t)]))
        return w1[0], b1[0], w2[0], b2[0]

    def layers(self, times: Tensor) -> Layer:
        """Effective layers at S times at once: W1 (S, K, d), b1 (S, K), W2 (S, d, K), b2 (S, d)."""
        raise NotImplementedError

    def _hat(self, times: Tensor) -> tuple[Tensor, Tensor]:
        """Node indices i (S,) and weights s (S,) of ``hat_weights`` for many times."""
        tm = times.to(self.w1.device, self.w1.dtype) * self.time_intervals
        i = tm.floor().long().clamp(0, self.time_intervals - 1)
        return i, tm - i

    # v, ∇·v, ∇v at one time t for all points --------------------------------------------
    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        """v(x, t): x (n, d), scalar t → (n, d)."""
        return tanh_layer_velocity(x, self.layer(t))

    def velocity_and_divergence(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """(v(x, t) (n, d), ∇·v(x, t) (n,)) in closed form."""
        return tanh_layer_velocity_and_divergence(x, self.layer(t))

    def jacobian(self, x: Tensor, t: float | Tensor) -> Tensor:
        """∇ₓv(x, t), (n, d, d)."""
        return tanh_layer_jacobian(x, self.layer(t))

    def jacobian_frobenius_sq(self, x: Tensor, t: float | Tensor) -> Tensor:
        """‖∇ₓv(x, t)‖_F², (n,)."""
        return tanh_layer_jacobian_frobenius_sq(x, self.layer(t))

    def jacobian_frobenius_sq_at(self, x: Tensor, times: Tensor) -> Tensor:
        """‖∇ₓv(x, t)‖_F² at S times for the same n points x (n, d) → (S, n).

        Generic form: the S effective layers (K units each), sᵀ G s per time and point with
        s = 1 − tanh²(W1 x + b1) and G = (W2ᵀ W2) ∘ (W1 W1ᵀ) (``tanh_layer_jacobian_frobenius_sq``).
        """
        w1, b1, w2, _ = self.layers(times)
        a = torch.baddbmm(b1[:, None, :], x.expand(len(w1), -1, -1), w1.mT)
        s = 1 - torch.tanh(a).square()  # (S, n, K)
        gram = (w2.mT @ w2) * (w1 @ w1.mT)  # (S, K, K)
        return ((s @ gram) * s).sum(-1)


class NodalVelocity(_TanhNodes):
    """v(x, t) = Σᵢ φᵢ(t) vᵢ(x), hat functions φᵢ on tᵢ = i/M (the paper's network).

    Parameters
    ----------
    in_dim : int
        Dimension d.
    out_dim : int, optional
        Must equal d (accepted so that the method can call every network alike).
    time_intervals : int
        M (M + 1 nodes; reference M = 5).
    n_terms : int
        L, two-layer nets summed per node (reference 2).
    width : int
        H, hidden width of each net (reference 20 for Gaussians, 5 for crowd motion).
    """

    def __init__(
        self, in_dim, out_dim=None, time_intervals: int = 5, n_terms: int = 2, width: int = 20
    ):
        super().__init__(in_dim, out_dim, time_intervals, n_terms, width)

    def layers(self, times):
        i, s = self._hat(times)
        b2 = self.b2.sum(1)
        w1 = torch.cat([self.w1[i], self.w1[i + 1]], 1)
        b1 = torch.cat([self.b1[i], self.b1[i + 1]], 1)
        sw = s[:, None, None]
        w2 = torch.cat([(1 - sw) * self.w2[i], sw * self.w2[i + 1]], 2)
        b2 = (1 - s[:, None]) * b2[i] + s[:, None] * b2[i + 1]
        return w1, b1, w2, b2

    def jacobian_frobenius_sq_at(self, x: Tensor, times: Tensor) -> Tensor:
        """‖∇ₓv(x, t)‖_F² at S times for the same n points x (n, d) → (S, n), per node.

        With Jᵢ = W2ᵢ diag(sᵢ) W1ᵢ the Jacobian of node net i (sᵢ = 1 − tanh²(W1ᵢ x + b1ᵢ),
        width LH) and t between nodes i, i+1 with hat weight σ:

            ‖∇v(x, t)‖_F² = (1−σ)² Aᵢ + 2σ(1−σ) Cᵢ + σ² Aᵢ₊₁,
            Aᵢ = sᵢᵀ Gᵢᵢ sᵢ,  Cᵢ = sᵢᵀ Gᵢ,ᵢ₊₁ sᵢ₊₁,  Gᵢⱼ = (W2ᵢᵀ W2ⱼ) ∘ (W1ᵢ W1ⱼᵀ).

        tanh runs once per node (M + 1) instead of once per time on both nodes (2S), and
        each quadratic form has width LH instead of 2LH: about 4× fewer operations than
        the generic form for the reference S = 2M + 1.
        """
        m = self.time_intervals
        a = torch.baddbmm(self.b1[:, None, :], x.expand(m + 1, -1, -1), self.w1.mT)
        s = 1 - torch.tanh(a).square()  # (M+1, n, LH)
        g_same = (self.w2.mT @ self.w2) * (self.w1 @ self.w1.mT)  # (M+1, LH, LH)
        g_next = (self.w2[:-1].mT @ self.w2[1:]) * (self.w1[:-1] @ self.w1[1:].mT)  # (M, ...)
        diag = ((s @ g_same) * s).sum(-1)  # A (M+1, n)
        cross = ((s[:-1] @ g_next) * s[1:]).sum(-1)  # C (M, n)
        i, sig = self._hat(times)
        sig = sig[:, None]
        return (1 - sig) ** 2 * diag[i] + 2 * sig * (1 - sig) * cross[i] + sig**2 * diag[i + 1]


class NodalWeightsVelocity(_TanhNodes):
    """v*(x, t) = W2(t) tanh(W1(t) x + b1(t)) + b2(t), each weight Σᵢ φᵢ(t) Wᵢ (ablation).

    Same parameters and sizes as ``NodalVelocity``.
    """

    def __init__(
        self, in_dim, out_dim=None, time_intervals: int = 5, n_terms: int = 2, width: int = 20
    ):
        super().__init__(in_dim, out_dim, time_intervals, n_terms, width)

    def layers(self, times):
        i, s = self._hat(times)

        def lerp(p: Tensor) -> Tensor:
            sw = s.reshape(-1, *([1] * (p.dim() - 1)))
            return (1 - sw) * p[i] + sw * p[i + 1]

        return lerp(self.w1), lerp(self.b1), lerp(self.w2), lerp(self.b2.sum(1))


class FrozenField:
    """(z, t) ↦ (v(z, t), ∇·v(z, t)) with the network's layers at known times batched.

    ``net.layers(times)`` builds every effective layer in a few tensor operations, so each
    RK4 stage costs only two matrix products and a tanh. Times not in ``times`` fall back to
    ``net.layer(t)``.
    """

    def __init__(self, net: nn.Module, times: list[float]) -> None:
        self.net = net
        self.index = {round(t, 12): j for j, t in enumerate(times)}
        w1, b1, w2, b2 = net.layers(torch.tensor(times))
        c = (w2.transpose(1, 2) * w1).sum(-1)  # (S, K): W2[:, k]·W1[k, :]
        # unbind once: indexing the stacked tensors at every stage would make autograd build
        # a zero (S, K, d) gradient per stage (SelectBackward), a cost growing with S·d
        self.w1t = w1.transpose(1, 2).unbind(0)  # S × (d, K)
        self.w2t = w2.transpose(1, 2).unbind(0)  # S × (K, d)
        self.b1, self.b2 = b1.unbind(0), b2.unbind(0)
        self.c, self.c_sum = c.unbind(0), c.sum(-1).unbind(0)

    def __call__(self, z: Tensor, t: float) -> tuple[Tensor, Tensor]:
        j = self.index.get(round(float(t), 12))
        if j is None:
            return self.net.velocity_and_divergence(z, t)
        h = torch.tanh(torch.addmm(self.b1[j], z, self.w1t[j]))
        v = torch.addmm(self.b2[j], h, self.w2t[j])
        return v, self.c_sum[j] - (h * h) @ self.c[j]


__all__ = [
    "FrozenField",
    "NodalVelocity",
    "NodalWeightsVelocity",
    "hat_weights",
    "tanh_layer_jacobian",
    "tanh_layer_jacobian_frobenius_sq",
    "tanh_layer_velocity",
    "tanh_layer_velocity_and_divergence",
]
