"""Moments of the module softmaxes of an mGradNet-M with the WSoftmax activation, with a
hand-written backward: the low-dimensional fast path of ``gradnets.MGradNetM``.

For K modules of width m, z_k = W_k x + b_k (W_k ∈ R^{m×d}) and a basis A_k ∈ R^{m×q}::

    M[k, 0] = softmax(z_k)ᵀ A_k,    M[k, 1] = softmax(−z_k)ᵀ A_k      (softmax over the m units)

for a batch x (n, d): M (K, 2, n, q). With A_k = [W_k | w_r ⊗ w_r (i ≤ j)] these are the
softmax means and second moments of the rows w_r of W_k, from which the map and its Jacobian
follow (``MGradNetM._moments_map``). Kept apart from ``gradnets.py`` for its length.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def symmetric_index(d: int, device: torch.device | None = None) -> Tensor:
    """(d²,) positions into the pairs i ≤ j of ``torch.triu_indices(d, d)`` of the flat
    entries (i, j) of a d × d matrix, (j, i) sharing (i, j)'s: ``P[:, index].view(n, d, d)``
    rebuilds the symmetric matrices from their upper triangles P (n, d(d+1)/2)."""
    i, j = torch.triu_indices(d, d, device=device)
    index = torch.zeros(d, d, dtype=torch.long, device=device)
    index[i, j] = torch.arange(len(i), device=device)
    index[j, i] = index[i, j]
    return index.flatten()


def _moments(x: Tensor, w: Tensor, b: Tensor, basis: Tensor) -> tuple[Tensor, ...]:
    """``softmax_moments`` by plain torch ops. Returns M (K, 2, n, q) and, for the backward,
    S = softmax(±z) (2K, n, m), x₁ = [x, 1] (n, d+1), W₂ = ±[W | b] (2K, m, d+1) and A per
    softmax (2K, m, q).

    z and −z of all K modules come from ONE batched product x₁ W₂ᵀ, contiguous as (2K, n, m)
    so that the softmax runs along contiguous rows and A's product is one bmm.
    """
    (k, m, d), q = w.shape, basis.shape[-1]
    x1 = torch.cat([x, x.new_ones(len(x), 1)], 1)
    w1 = torch.cat([w, b[..., None]], -1)  # z_k = x₁ [W_k | b_k]ᵀ
    w2 = torch.stack([w1, -w1], 1).view(2 * k, m, d + 1)
    soft = torch.softmax(torch.matmul(x1, w2.mT), -1)
    basis2 = basis[:, None].expand(k, 2, m, q).reshape(2 * k, m, q)
    return torch.bmm(soft, basis2).view(k, 2, -1, q), soft, x1, w2, basis2


class _SoftmaxMoments(torch.autograd.Function):
    """``softmax_moments`` with a backward by hand that keeps S = softmax(±z) (2K, n, m) and
    nothing else of that size (autograd would keep z, S and the softmax's backward buffers).

    With G = ∂L/∂M (2K, n, q) and r = Σ_q G ⊙ M (= ⟨S, G Aᵀ⟩ row by row, the softmax's
    normalisation term)::

        ∂L/∂z = S ⊙ (G̃ Ãᵀ),   G̃ = [G, −r] (2K, n, q+1),   Ã = [A, 1] (2K, m, q+1),
        ∂L/∂W₂[r, e] = Σ_n ∂L/∂z[n, r] x₁[n, e] = Σ_c Ã[r, c] T[r, c, e],
        T = Sᵀ (G̃ ⊗ x₁)  (2K, m, (q+1)(d+1)),        ∂L/∂A = T[:, :, :q, d]  (x₁'s 1),

    so ONE product reads S and no (2K, n, m) gradient is formed (cheap while (q+1)(d+1) is
    small, i.e. small d). ∂L/∂x, when asked for, goes through ∂L/∂z.
    """

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor, basis: Tensor) -> Tensor:
        out, soft, x1, w2, basis2 = _moments(x, w, b, basis)
        ctx.save_for_backward(out, soft, x1, w2, basis2)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        out, soft, x1, w2, basis2 = ctx.saved_tensors
        (k2, n, m), q, e = soft.shape, basis2.shape[-1] + 1, x1.shape[1]
        r = (grad * out).sum(-1, keepdim=True)
        g1 = torch.cat([grad, -r], -1).view(k2, n, q)  # G̃
        a1 = torch.cat([basis2, basis2.new_ones(k2, m, 1)], -1)  # Ã
        t = torch.bmm(soft.mT, (g1[..., None] * x1[:, None]).view(k2, n, q * e))
        t = t.view(k2, m, q, e)
        dw2 = torch.einsum("bmc,bmce->bme", a1, t).view(k2 // 2, 2, m, e)
        dw1 = dw2[:, 0] - dw2[:, 1]  # W₂ = ±W₁
        dbasis = t[:, :, : q - 1, -1].reshape(k2 // 2, 2, m, q - 1).sum(1)
        dx = None
        if ctx.needs_input_grad[0]:
            dz = torch.bmm(g1, a1.mT).mul_(soft)
            dx = torch.bmm(dz, w2[..., :-1]).sum(0)
        return dx, dw1[..., :-1], dw1[..., -1], dbasis


def softmax_moments(
    x: Tensor, w: Tensor, b: Tensor, basis: Tensor, hand_backward: bool = True
) -> Tensor:
    """M[k, 0] = softmax(z_k)ᵀ A_k and M[k, 1] = softmax(−z_k)ᵀ A_k, z_k = W_k x + b_k.

    Parameters
    ----------
    x : Tensor
        (n, d).
    w, b : Tensor
        W (K, m, d) and b (K, m).
    basis : Tensor
        A (K, m, q).
    hand_backward : bool
        True: ``_SoftmaxMoments`` (differentiable once; not under ``torch.func`` transforms).
        False: plain autograd (e.g. for ``autograd_jacobian``'s vmap of jacrev).

    Returns
    -------
    Tensor
        M (K, 2, n, q).
    """
    if hand_backward:
        return _SoftmaxMoments.apply(x, w, b, basis)
    return _moments(x, w, b, basis)[0]


__all__ = ["softmax_moments", "symmetric_index"]
