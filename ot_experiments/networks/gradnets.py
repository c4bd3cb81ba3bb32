"""Gradient networks (Chaudhari, Pranav, Moura, "Gradient Networks"): maps R^d → R^d whose
input Jacobian is symmetric, and for the monotone variants (mGradNets) symmetric PSD for every
input and every parameter value — so the map is the gradient of a (convex) potential.

Every network here returns its input Jacobian in closed form, J = Σ_k W_kᵀ D_k W_k:

- ``MGradNetC`` (cascade, one shared W ∈ R^{m×d}, L layers)::

      z_1     = β̃_1 ⊙ (W x + b_1)
      z_{l+1} = β̃_{l+1} ⊙ (W x + b_{l+1}) + α̃_l ⊙ σ_l(z_l)
      f(x)    = Wᵀ [α̃_L ⊙ σ_L(z_L)] + b_out,       J = Wᵀ diag(α̃_L σ_L'(z_L) v_L) W,
      v_1 = β̃_1,  v_{l+1} = β̃_{l+1} + α̃_l σ_l'(z_l) v_l   (dz_l/dx = diag(v_l) W);

- ``MGradNetM`` (K modules with their own W_k ∈ R^{m×d}, b_k, scalars α_k, β_k)::

      f(x) = Σ_k α̃_k W_kᵀ σ_k(β̃_k (W_k x + b_k)) + b,   J = Σ_k α̃_k β̃_k W_kᵀ Jσ_k(z_k) W_k.

(WSoftmax at small d: from softmax means and second moments of W_k's rows, softmax_moments.py.)
Monotone nets use α̃ = softplus(α), β̃ = softplus(β); the unconstrained GradNets use α̃ = α
(and β̃ = β for the cascade), which keeps J symmetric but not PSD. Activations are monotone:
``Tanh``, ``WTanh`` (elementwise) and ``WSoftmax`` (vector-valued, Jacobian = diagonal minus
two rank-one terms). ``input_jacobian`` falls back to ``torch.func`` (vmap of jacrev) for any
other network, e.g. the unconstrained MLP baseline.

The Jacobian helpers they share (the upper-triangle product, the Cholesky log det, the
``torch.func`` fallback) are in ``jacobians.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ot_experiments.errors import ConfigError
from ot_experiments.networks.jacobians import upper_triangle_products, weighted_outer_sum
from ot_experiments.networks.softmax_moments import softmax_moments, symmetric_index

# -- activations --------------------------------------------------------------------------


class Tanh(nn.Module):
    """σ(z) = tanh z elementwise; σ'(z) = 1 − tanh² z."""

    elementwise = True

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z)

    def jacobian_parts(self, z: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Jσ(z) = diag(1 − tanh² z); no low-rank part."""
        return 1 - torch.tanh(z).square(), []


class WTanh(nn.Module):
    """σ(z) = sp(a) ⊙ tanh z + sp(b) ⊙ (z − tanh z), elementwise and monotone.

    σ'(z) = sp(a) (1 − tanh² z) + sp(b) tanh² z ≥ 0. ``shape`` is the shape of a and b
    (broadcast against the trailing dimensions of z), initialised U(0, 1).
    """

    elementwise = True

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.rand(shape))
        self.b = nn.Parameter(torch.rand(shape))

    def forward(self, z: Tensor) -> Tensor:
        t = torch.tanh(z)
        return F.softplus(self.a) * t + F.softplus(self.b) * (z - t)

    def jacobian_parts(self, z: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Jσ(z) = diag(sp(a)(1 − tanh² z) + sp(b) tanh² z); no low-rank part."""
        t2 = torch.tanh(z).square()
        return F.softplus(self.a) * (1 - t2) + F.softplus(self.b) * t2, []


class WSoftmax(nn.Module):
    """σ(z) = sp(a) softmax(z) − sp(b) softmin(z) over the last axis (monotone).

    softmax = ∇ logsumexp(z) and −softmin(z) = ∇ logsumexp(−z), so with s = softmax(z),
    t = softmax(−z): Jσ(z) = sp(a)(diag s − s sᵀ) + sp(b)(diag t − t tᵀ), PSD.
    ``shape`` is the shape of the scalars a, b (e.g. (K, 1) for K modules), initialised 0.5
    as in the authors' code.
    """

    elementwise = False

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.full(shape, 0.5))
        self.b = nn.Parameter(torch.full(shape, 0.5))

    def forward(self, z: Tensor) -> Tensor:
        return F.softplus(self.a) * torch.softmax(z, -1) - F.softplus(self.b) * torch.softmax(
            -z, -1
        )

    def jacobian_parts(self, z: Tensor) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Jσ(z) = diag(sp(a) s + sp(b) t) − sp(a) s sᵀ − sp(b) t tᵀ, as (diag, [(coef, vec)])."""
        s, t = torch.softmax(z, -1), torch.softmax(-z, -1)
        ca, cb = F.softplus(self.a), F.softplus(self.b)
        diag = ca * s + cb * t
        ones = torch.ones_like(z)
        return diag, [((ca * ones)[..., 0], s), ((cb * ones)[..., 0], t)]


ACTIVATIONS = {"tanh": Tanh, "wtanh": WTanh, "wsoftmax": WSoftmax}


def _activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"network.activation={name!r} is not a gradient-network activation; "
            f"choose one of {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def _check_dims(in_dim: int, out_dim: int | None) -> int:
    if out_dim is not None and out_dim != in_dim:
        raise ConfigError(
            f"a gradient network maps R^d to R^d, so out_dim must equal in_dim ({in_dim}), "
            f"got out_dim={out_dim}"
        )
    return int(in_dim)


def _xavier(*shape: int) -> Tensor:
    w = torch.empty(*shape)
    for k in range(w.shape[0]) if w.dim() == 3 else [None]:
        nn.init.xavier_uniform_(w if k is None else w[k])
    return w


# -- networks -----------------------------------------------------------------------------


class MGradNetC(nn.Module):
    """Cascaded (m)GradNet: L layers of width m sharing one W ∈ R^{m×d} (module docstring).

    Parameters
    ----------
    in_dim, out_dim : int
        d (out_dim must equal in_dim or be None).
    layers : int
        L.
    width : int
        m. J has rank ≤ m, so m ≥ d is needed for a non-singular Jacobian.
    activation : {"wtanh", "tanh"}
        Elementwise monotone σ_l (one set of WTanh parameters per layer).
    monotone : bool
        True: softplus on α, β (mGradNet-C, J PSD); False: GradNet-C (J symmetric).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        layers: int = 4,
        width: int = 32,
        activation: str = "wtanh",
        monotone: bool = True,
    ) -> None:
        super().__init__()
        d = _check_dims(in_dim, out_dim)
        act = _activation(activation)
        if not act.elementwise:
            raise ConfigError(
                f"network.activation={activation!r} is not elementwise; the cascaded GradNet "
                "needs tanh or wtanh (use mgradnet_m for wsoftmax)"
            )
        if layers < 1 or width < 1:
            raise ConfigError(
                f"network.layers and network.width must be >= 1 (got {layers}, {width})"
            )
        self.monotone = bool(monotone)
        self.W = nn.Parameter(_xavier(width, d))
        self.b = nn.Parameter(torch.zeros(layers, width))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.alpha = nn.Parameter(torch.rand(layers, width))
        self.beta = nn.Parameter(torch.rand(layers, width))
        self.act = nn.ModuleList([act((width,)) for _ in range(layers)])

    def _pos(self, p: Tensor) -> Tensor:
        return F.softplus(p) if self.monotone else p

    def forward_and_jacobian(
        self, x: Tensor, jacobian: bool = True, upper_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """f(x) (n, d) and J(x) = Wᵀ diag(D) W (n, d, d) (None when ``jacobian`` is False;
        only its upper triangle with ``upper_only``, see ``weighted_outer_sum``)."""
        alpha, beta = self._pos(self.alpha), self._pos(self.beta)
        u = x @ self.W.T
        z = beta[0] * (u + self.b[0])
        v = beta[0].expand_as(z)
        for layer in range(1, len(self.act)):
            prev = self.act[layer - 1]
            if jacobian:
                v = beta[layer] + alpha[layer - 1] * prev.jacobian_parts(z)[0] * v
            z = beta[layer] * (u + self.b[layer]) + alpha[layer - 1] * prev(z)
        last = self.act[-1]
        f = (alpha[-1] * last(z)) @ self.W + self.b_out
        if not jacobian:
            return f, None
        diag = alpha[-1] * last.jacobian_parts(z)[0] * v  # (n, m)
        return f, weighted_outer_sum(diag, self.W, upper_only=upper_only)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_and_jacobian(x, jacobian=False)[0]

    def jacobian(self, x: Tensor) -> Tensor:
        """Closed-form input Jacobian, (n, d) → (n, d, d)."""
        return self.forward_and_jacobian(x)[1]


class MGradNetM(nn.Module):
    """Modular (m)GradNet: K modules of width m, f = Σ_k α̃_k W_kᵀ σ(β̃_k(W_k x + b_k)) + b.

    Parameters
    ----------
    in_dim, out_dim : int
        d (out_dim must equal in_dim or be None).
    modules : int
        K.
    width : int
        m (hidden width of each module).
    activation : {"wsoftmax", "wtanh", "tanh"}
        σ_k, with its own parameters per module.
    monotone : bool
        True: α̃ = softplus(α) (mGradNet-M, J PSD); False: α̃ = α (GradNet-M, J symmetric).
    """

    moments_max_dim = 8  # WSoftmax up to this d: ``_moments_map``, above: the dense formula

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None = None,
        modules: int = 4,
        width: int = 32,
        activation: str = "wsoftmax",
        monotone: bool = True,
    ) -> None:
        super().__init__()
        d = _check_dims(in_dim, out_dim)
        act = _activation(activation)
        if modules < 1 or width < 1:
            raise ConfigError(
                f"network.modules and network.width must be >= 1 (got {modules}, {width})"
            )
        self.monotone = bool(monotone)
        self.W = nn.Parameter(_xavier(modules, width, d))
        self.b = nn.Parameter(torch.zeros(modules, width))
        self.b_out = nn.Parameter(torch.zeros(d))
        self.alpha = nn.Parameter(torch.rand(modules))
        self.beta = nn.Parameter(torch.rand(modules))
        self.act = act((modules, width) if act.elementwise else (modules, 1))

    def forward_and_jacobian(
        self, x: Tensor, jacobian: bool = True, upper_only: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """f(x) (n, d) and J(x) = Σ_k α̃_k β̃_k W_kᵀ Jσ(z_k) W_k (n, d, d) (None: no ``jacobian``).

        WSoftmax at d ≤ ``moments_max_dim``: ``_moments_map`` (J full and symmetric), else
        the dense formula: z = β̃ (x Wᵀ + b) (n, K, m) from one product, J =
        ``weighted_outer_sum`` of Jσ's (n, K·m) diagonal minus WSoftmax's rank-one terms (only
        J's upper triangle with ``upper_only``). Its passes over (n, K, m) tensors dominate at
        small d (32 × 128, d = 2: 6× slower); the moments cost ∝ d³ and lose beyond d ≈ 8–10.
        """
        alpha = F.softplus(self.alpha) if self.monotone else self.alpha
        beta = F.softplus(self.beta)
        (k, m, d), w = self.W.shape, self.W.reshape(-1, self.W.shape[-1])
        if isinstance(self.act, WSoftmax) and d <= self.moments_max_dim:
            return self._moments_map(x, alpha, beta, jacobian)
        z = beta[:, None] * ((x @ w.T).view(-1, k, m) + self.b)  # (n, K, m)
        f = (alpha[:, None] * self.act(z)).flatten(1) @ w + self.b_out
        if not jacobian:
            return f, None
        scale = alpha * beta  # (K,)
        diag, low_rank = self.act.jacobian_parts(z)
        minus = [(scale * a, torch.einsum("nkm,kmd->nkd", g, self.W)) for a, g in low_rank]
        return f, weighted_outer_sum((scale[:, None] * diag).flatten(1), w, minus, upper_only)

    def _moments_map(
        self, x: Tensor, alpha: Tensor, beta: Tensor, jacobian: bool
    ) -> tuple[Tensor, Tensor | None]:
        """WSoftmax σ = c⁺ softmax − c⁻ softmin, c± = sp(a_k), sp(b_k), from the moments of
        S± = softmax(±z_k) (``softmax_moments``, hand-written backward): the means
        g± = W_kᵀ S± (d,) and second moments P± = Σ_r S±_r w_r w_rᵀ (rows w_r of W_k)::

            f = Σ_k α̃_k (c⁺_k g⁺ − c⁻_k g⁻) + b,
            J = Σ_k α̃_k β̃_k (c⁺_k (P⁺ − g⁺g⁺ᵀ) + c⁻_k (P⁻ − g⁻g⁻ᵀ)),

        as W_kᵀ (diag S − S Sᵀ) W_k is the covariance of the rows of W_k under S. Basis A_k =
        [W_k | w_r ⊗ w_r (i ≤ j)] (K, m, d + d(d+1)/2); then only (2K, n, ·) tensors remain.
        """
        (k, m, d), n = self.W.shape, x.shape[0]
        basis = self.W
        if jacobian:
            prods = upper_triangle_products(self.W.reshape(k * m, d))[0].view(k, m, -1)
            basis = torch.cat([self.W, prods], -1)
        wz, bz = beta[:, None, None] * self.W, beta[:, None] * self.b  # z = W_z x + b_z
        mom = softmax_moments(x, wz, bz, basis, hand_backward=jacobian).view(2 * k, n, -1)
        c = F.softplus(torch.stack([self.act.a, self.act.b], 1).view(2 * k))  # c±, (2K,)
        a2, ab2 = alpha.repeat_interleave(2), (alpha * beta).repeat_interleave(2)
        coef = torch.stack([a2 * c * c.new_tensor([1.0, -1.0]).repeat(k), ab2 * c])  # f's, J's
        lin = (coef[: 1 + jacobian] @ mom.view(2 * k, -1)).view(-1, n, mom.shape[-1])
        f = lin[0, :, :d] + self.b_out
        if not jacobian:
            return f, None
        g = mom[..., :d]
        outer = torch.einsum("b,bni,bnj->nij", coef[1], g, g)
        return f, lin[1, :, d:][:, symmetric_index(d, x.device)].view(n, d, d) - outer

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_and_jacobian(x, jacobian=False)[0]

    def jacobian(self, x: Tensor) -> Tensor:
        """Closed-form input Jacobian, (n, d) → (n, d, d)."""
        return self.forward_and_jacobian(x)[1]


__all__ = [
    "ACTIVATIONS",
    "MGradNetC",
    "MGradNetM",
    "Tanh",
    "WSoftmax",
    "WTanh",
]
