"""Input Jacobians of maps R^d → R^d and their log-determinants, shared by the gradient
networks (``gradnets.py``) and GradNetOT's Monge-Ampère loss (``methods/gradnet.py``):

- ``weighted_outer_sum``: J = Σ_r c_r u_r u_rᵀ − rank-one terms as one matrix product on the
  upper triangle (the closed-form Jacobians of the mGradNets);
- ``logdet_psd``: log det of a symmetric PSD J from its upper triangle by a per-sample Cholesky;
- ``autograd_jacobian`` / ``map_and_jacobian``: the ``torch.func`` fallback for any network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def upper_triangle_products(u: Tensor) -> tuple[Tensor, Tensor]:
    """Rows u_r ⊗ u_r restricted to the upper triangle: U (r, d) → P (r, d(d+1)/2) with
    P[r, k] = u_r[i_k] u_r[j_k] over the pairs i_k ≤ j_k, and the flat indices i_k d + j_k."""
    d = u.shape[1]
    i, j = torch.triu_indices(d, d, device=u.device)
    return u[:, i] * u[:, j], i * d + j


def mirror_upper(jac: Tensor) -> Tensor:
    """The symmetric matrix whose upper triangle is ``jac``'s: triu(J) + triu(J, 1)ᵀ, (n, d, d)."""
    upper = jac.triu()
    return upper + upper.triu(1).transpose(1, 2)


def weighted_outer_sum(
    c: Tensor, u: Tensor, minus: list[tuple[Tensor, Tensor]] = (), upper_only: bool = False
) -> Tensor:
    """J_n = Σ_r c_{nr} u_r u_rᵀ − Σ_k a_{nk} g_{nk} g_{nk}ᵀ, shapes c (n, r), U (r, d),
    ``minus`` = [(a (n, K), g (n, K, d)), …] → (n, d, d).

    J is symmetric, so only its upper triangle is a product: ONE matrix product
    (n, r) @ (r, d(d+1)/2) with rows u_r ⊗ u_r on i ≤ j (``upper_triangle_products``), half
    the work of the full (n, r) @ (r, d²) and far less than n small (d×r)(r×d) products. The
    rank-one corrections are subtracted in place with batched (d×K)(K×d) products. With
    ``upper_only`` the strictly lower triangle is left unmirrored (it is not J's): enough for
    ``logdet_psd``, which reads the upper triangle only.
    """
    n, d = c.shape[0], u.shape[1]
    prods, flat = upper_triangle_products(u)
    jac = c.new_zeros(n, d * d).scatter_(1, flat.expand(n, -1), c @ prods).view(n, d, d)
    if not upper_only:
        jac = mirror_upper(jac)
    for a, g in minus:
        jac = jac.baddbmm_((g * a[:, :, None]).transpose(1, 2), g, alpha=-1)
    return jac


def autograd_jacobian(net: nn.Module, x: Tensor) -> Tensor:
    """Input Jacobian by ``torch.func.vmap(jacrev(net))``: (n, d) → (n, d_out, d).

    Differentiable with respect to the network parameters (usable in a loss).
    """
    from torch.func import jacrev, vmap

    return vmap(jacrev(lambda xi: net(xi[None])[0]))(x)


def map_and_jacobian(net: nn.Module, x: Tensor, upper_only: bool = False) -> tuple[Tensor, Tensor]:
    """(f(x), J_f(x)), shapes (n, d) and (n, d, d): closed form when the network has one
    (only J's upper triangle with ``upper_only``), else the ``torch.func`` fallback."""
    if hasattr(net, "forward_and_jacobian"):
        return net.forward_and_jacobian(x, upper_only=upper_only)
    return net(x), autograd_jacobian(net, x)


class _CholeskyLogdet(torch.autograd.Function):
    """(log det A, info) from A's upper triangle by ``cholesky_ex(A, upper=True)``, A = RᵀR.

    Backward: ∂ log det A / ∂A = A⁻¹ (``cholesky_inverse``), put on the upper triangle with the
    off-diagonal entries doubled, since each of them stands for A_ij and A_ji. So the gradient
    is right both for a full symmetric A and for one of which only the upper triangle is set.
    """

    @staticmethod
    def forward(ctx, jac: Tensor) -> tuple[Tensor, Tensor]:
        chol, info = torch.linalg.cholesky_ex(jac, upper=True)
        ctx.save_for_backward(chol)
        ctx.mark_non_differentiable(info)
        return 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1), info

    @staticmethod
    def backward(ctx, grad: Tensor, _info) -> Tensor:
        (chol,) = ctx.saved_tensors
        inv = torch.cholesky_inverse(chol, upper=True)
        upper = 2 * inv.triu() - torch.diag_embed(torch.diagonal(inv, dim1=-2, dim2=-1))
        return grad[:, None, None] * upper


def logdet_psd(jac: Tensor) -> Tensor:
    """log det J for symmetric PSD J (n, d, d) → (n,), by a per-sample Cholesky J = RᵀR:
    log det J = 2 Σᵢ log Rᵢᵢ. Reads the upper triangle of ``jac`` only (the strictly lower
    part may be anything, e.g. ``weighted_outer_sum(..., upper_only=True)``).

    Rows whose Cholesky fails (J numerically singular or, in float32, with a tiny negative
    eigenvalue) get ``slogdet``'s log |det J| instead; they are replaced by the identity
    before the Cholesky so that no NaN reaches the backward pass.
    """
    out, info = _CholeskyLogdet.apply(jac)
    bad = info > 0
    if not bool(bad.any()):
        return out
    eye = torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)
    out = _CholeskyLogdet.apply(torch.where(bad[:, None, None], eye, jac))[0]
    rows = bad.nonzero()[:, 0]
    return out.index_put((rows,), torch.linalg.slogdet(mirror_upper(jac[rows]))[1])


def log_abs_det(jac: Tensor, psd: bool) -> Tensor:
    """log |det J|, (n, d, d) → (n,): Cholesky when J is known to be PSD, else ``slogdet``."""
    return logdet_psd(jac) if psd else torch.linalg.slogdet(jac)[1]


def is_monotone(net: nn.Module) -> bool:
    """True for networks whose Jacobian is PSD by construction (the mGradNets)."""
    return bool(getattr(net, "monotone", False))


__all__ = [
    "autograd_jacobian",
    "is_monotone",
    "log_abs_det",
    "logdet_psd",
    "map_and_jacobian",
    "mirror_upper",
    "upper_triangle_products",
    "weighted_outer_sum",
]
