"""The fast mGradNet-M map and Jacobian (WSoftmax moments with a hand-written backward)
against the implementation it replaced (``reference_forward_and_jacobian``, frozen here; also
the "before" of ``scripts/bench_gradnet_step.py``) and against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ot_experiments.networks.gradnets import MGradNetM
from ot_experiments.networks.jacobians import (
    autograd_jacobian,
    logdet_psd,
    weighted_outer_sum,
)
from ot_experiments.networks.softmax_moments import _SoftmaxMoments


def reference_forward_and_jacobian(
    net: MGradNetM, x: Tensor, jacobian: bool = True, upper_only: bool = False
) -> tuple[Tensor, Tensor | None]:
    """MGradNetM.forward_and_jacobian as of b4e2c6f (per-module einsums, (n, K, m) activation
    Jacobian parts, rank-one corrections), kept verbatim as the reference and the benchmark's
    "before"."""
    alpha = F.softplus(net.alpha) if net.monotone else net.alpha
    beta = F.softplus(net.beta)
    z = beta[:, None] * (torch.einsum("nd,kmd->nkm", x, net.W) + net.b)  # (n, K, m)
    f = torch.einsum("nkm,kmd->nd", alpha[:, None] * net.act(z), net.W) + net.b_out
    if not jacobian:
        return f, None
    scale = alpha * beta  # (K,)
    diag, low_rank = net.act.jacobian_parts(z)
    n, k, m = z.shape
    c = (scale[:, None] * diag).reshape(n, k * m)
    minus = [(scale * coef, torch.einsum("nkm,kmd->nkd", vec, net.W)) for coef, vec in low_rank]
    return f, weighted_outer_sum(c, net.W.reshape(k * m, -1), minus, upper_only)


# (activation, monotone, MGradNetM.moments_max_dim): WSoftmax through both of its paths
ACTS = [
    ("wsoftmax", True, 8),
    ("wsoftmax", True, 0),
    ("wsoftmax", False, 8),
    ("wsoftmax", False, 0),
    ("wtanh", True, 8),
    ("tanh", True, 8),
]
STATE_KEYS = {
    "wsoftmax": ["W", "b", "b_out", "alpha", "beta", "act.a", "act.b"],
    "wtanh": ["W", "b", "b_out", "alpha", "beta", "act.a", "act.b"],
    "tanh": ["W", "b", "b_out", "alpha", "beta"],
}


def _net(
    d: int, activation: str, monotone: bool, max_dim: int, seed: int = 0, dtype=torch.float64
) -> MGradNetM:
    """A 3 × 7 network with every parameter moved well away from its initial value."""
    torch.manual_seed(seed)
    net = MGradNetM(d, d, modules=3, width=7, activation=activation, monotone=monotone)
    net.moments_max_dim = max_dim
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    return net.to(dtype)


@pytest.mark.parametrize(("activation", "monotone", "max_dim"), ACTS)
@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("upper_only", [False, True])
def test_map_and_jacobian_equal_reference_and_autograd(
    activation, monotone, max_dim, d, upper_only
):
    net = _net(d, activation, monotone, max_dim)
    x = 2 * torch.randn(11, d, dtype=torch.float64)
    f, jac = net.forward_and_jacobian(x, upper_only=upper_only)
    f_ref, jac_ref = reference_forward_and_jacobian(net, x)
    assert torch.allclose(f, f_ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(net(x), f_ref, rtol=1e-10, atol=1e-10)
    if upper_only:  # only the upper triangle is promised
        jac, jac_ref = jac.triu(), jac_ref.triu()
    assert torch.allclose(jac, jac_ref, rtol=1e-10, atol=1e-10)
    auto = autograd_jacobian(net, x)
    assert torch.allclose(jac, auto.triu() if upper_only else auto, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("activation", "monotone", "max_dim"), ACTS)
def test_float32_matches_float64_reference(activation, monotone, max_dim):
    net = _net(2, activation, monotone, max_dim, seed=1, dtype=torch.float32)
    x = 2 * torch.randn(200, 2)
    f, jac = net.forward_and_jacobian(x)
    f_ref, jac_ref = reference_forward_and_jacobian(net.double(), x.double())
    assert f.dtype == jac.dtype == torch.float32
    scale = jac_ref.abs().amax((1, 2), keepdim=True)  # relative to each sample's |J|
    assert ((jac.double() - jac_ref).abs() / scale).max() < 1e-5
    assert ((f.double() - f_ref).abs() / f_ref.abs().amax(1, keepdim=True)).max() < 1e-5


@pytest.mark.parametrize(("activation", "monotone", "max_dim"), ACTS)
@pytest.mark.parametrize("d", [2, 5])
def test_loss_gradients_equal_reference(activation, monotone, max_dim, d):
    """∂/∂θ of a Monge–Ampère-like loss through f and the Cholesky log det (upper triangle, as
    in training) equals the reference's for every parameter (monotone nets: J is PSD)."""
    net = _net(d, activation, monotone, max_dim, seed=2)
    x = torch.randn(13, d, dtype=torch.float64)
    grads = []
    for fn in (
        net.forward_and_jacobian,
        lambda x, **kw: reference_forward_and_jacobian(net, x, **kw),
    ):
        net.zero_grad()
        f, jac = fn(x, upper_only=True)
        if monotone:
            loss = (logdet_psd(jac) + 0.5 * f.square().sum(1)).abs().mean()
        else:  # J symmetric but not PSD: a loss on its upper triangle instead
            loss = jac.triu().sin().sum() + f.square().sum()
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
    assert grads[0].keys() == grads[1].keys() == set(STATE_KEYS[activation])
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-10, atol=1e-12), name
        assert g.abs().max() > 0, name  # every parameter is reached


@pytest.mark.parametrize("activation", ["wsoftmax", "wtanh", "tanh"])
def test_state_dict_keys_and_shapes_unchanged(activation):
    net = MGradNetM(2, 2, modules=32, width=128, activation=activation)
    want = {"W": (32, 128, 2), "b": (32, 128), "b_out": (2,), "alpha": (32,), "beta": (32,)}
    if activation != "tanh":
        per = (32, 1) if activation == "wsoftmax" else (32, 128)
        want.update({"act.a": per, "act.b": per})
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == want


def test_softmax_moments_backward_passes_gradcheck():
    torch.manual_seed(4)
    k, m, d, q, n = 2, 4, 2, 5, 3
    args = (
        torch.randn(n, d, dtype=torch.float64, requires_grad=True),
        torch.randn(k, m, d, dtype=torch.float64, requires_grad=True),
        torch.randn(k, m, dtype=torch.float64, requires_grad=True),
        torch.randn(k, m, q, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(_SoftmaxMoments.apply, args)


def test_softmax_moments_are_the_softmax_weighted_sums():
    torch.manual_seed(5)
    x, w, b, basis = (
        torch.randn(6, 3),
        torch.randn(2, 5, 3),
        torch.randn(2, 5),
        torch.randn(2, 5, 4),
    )
    got = _SoftmaxMoments.apply(x, w, b, basis)  # (K, 2, n, q)
    z = torch.einsum("nd,kmd->knm", x, w) + b[:, None, :]
    want = torch.stack(
        [torch.einsum("knm,kmq->knq", torch.softmax(s * z, -1), basis) for s in (1, -1)], 1
    )
    assert got.shape == (2, 2, 6, 4) and torch.allclose(got, want, atol=1e-6)


def _graph_names(t: Tensor) -> set[str]:
    """Type names of all autograd nodes behind ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            todo.extend(nxt for nxt, _ in fn.next_functions)
    return {type(fn).__name__ for fn in seen}


@pytest.mark.parametrize(("d", "moments"), [(2, True), (8, True), (9, False)])
def test_wsoftmax_takes_the_moments_path_up_to_moments_max_dim(d, moments):
    net = MGradNetM(d, d)
    jac = net.forward_and_jacobian(torch.randn(3, d))[1]
    assert ("_SoftmaxMomentsBackward" in _graph_names(jac)) == moments
    assert net.forward(torch.randn(3, d)).grad_fn is not None
