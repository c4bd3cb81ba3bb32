"""The NCF building blocks against closed forms."""

import pytest
import torch

from ot_experiments.costs import PowerHamiltonian, QuadraticHamiltonian
from ot_experiments.methods.ncf import (
    hj_implicit_residual,
    hj_pinn_residual,
    hj_terminal_residual,
    ncf_backward_map,
    ncf_forward_map,
    time_quadratic_form,
)
from ot_experiments.metrics import energy_distance
from ot_experiments.problems import GaussianProblem


def exact_potential(problem: GaussianProblem):
    """u(x, t) = ½ xᵀ G (I + tG)⁻¹ x with G = A − I: the HJ solution whose forward map at T = 1
    is the Gaussian OT map x ↦ A x (zero means)."""
    g = problem.map_matrix - torch.eye(problem.dim, dtype=torch.float64)

    def u(x, t):
        eye = torch.eye(problem.dim, dtype=x.dtype)
        mats = g @ torch.linalg.inv(eye + t[:, :, None] * g)  # (n, d, d)
        return 0.5 * torch.einsum("ni,nij,nj->n", x, mats, x)

    return u


@pytest.fixture(scope="module")
def problem():
    return GaussianProblem(3, "ncf_benchmark", seed=0)


def test_implicit_residual_vanishes_on_exact_solution(problem):
    u = exact_potential(problem)
    x = 2 * torch.randn(200, 3, dtype=torch.float64)
    t = torch.rand(200, 1, dtype=torch.float64)
    r = hj_implicit_residual(u, x, t, QuadraticHamiltonian())
    assert r.abs().max() < 1e-10
    # and does not vanish for a wrong potential (scaled)
    r_bad = hj_implicit_residual(lambda a, s: 1.3 * u(a, s), x, t, QuadraticHamiltonian())
    assert r_bad.abs().mean() > 1e-2


def test_terminal_residual_vanishes_on_exact_solution_only(problem):
    u = exact_potential(problem)
    x = 2 * torch.randn(200, 3, dtype=torch.float64)
    t = torch.rand(200, 1, dtype=torch.float64)
    ham = QuadraticHamiltonian()
    assert hj_terminal_residual(u, x, t, 1.0, ham).abs().max() < 1e-10
    r_bad = hj_terminal_residual(lambda a, s: 1.3 * u(a, s), x, t, 1.0, ham)
    assert r_bad.abs().mean() > 1e-2
    # at t = T it is 0 for any potential (the characteristic has no time left)
    t_end = torch.ones(200, 1, dtype=torch.float64)
    assert hj_terminal_residual(lambda a, s: 1.3 * u(a, s), x, t_end, 1.0, ham).abs().max() == 0


def test_pinn_residual_vanishes_on_exact_solution(problem):
    u = exact_potential(problem)
    x = torch.randn(100, 3, dtype=torch.float64)
    t = torch.rand(100, 1, dtype=torch.float64)
    assert hj_pinn_residual(u, x, t, QuadraticHamiltonian()).abs().max() < 1e-10


def test_maps_are_the_true_maps_and_invert_each_other(problem):
    u = exact_potential(problem)
    ham = QuadraticHamiltonian()
    x = problem.sample_source(500).double()
    tx = ncf_forward_map(u, x, 1.0, ham)
    torch.testing.assert_close(tx, problem.transport_true(x))
    torch.testing.assert_close(ncf_backward_map(u, tx, 1.0, ham), x)


def test_energy_distance_equals_direct_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y = torch.randn(80, 3, generator=g, dtype=torch.float64) + 1.0
    direct = (
        2 * sum((a - b).norm() for a in x for b in y) / (60 * 80)
        - sum((a - b).norm() for a in x for b in x) / 60**2
        - sum((a - b).norm() for a in y for b in y) / 80**2
    )
    assert float(energy_distance(x, y)) == pytest.approx(float(direct), rel=1e-10)
    assert abs(float(energy_distance(x, x))) < 1e-12
    assert float(energy_distance(x, y)) > 0.1
    # y_fixed drops exactly the E‖Y − Y′‖ term
    yy = sum((a - b).norm() for a in y for b in y) / 80**2
    assert float(energy_distance(x, y, y_fixed=True)) == pytest.approx(float(direct + yy))


def test_energy_distance_gradient_is_finite_on_identical_points():
    x = torch.randn(30, 2, requires_grad=True)
    energy_distance(x, x.detach()).backward()
    assert torch.isfinite(x.grad).all()


def test_power_hamiltonian():
    p = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    for q in (1.5, 2.0, 3.0):
        ham = PowerHamiltonian(q)
        (auto,) = torch.autograd.grad(ham(p).sum(), p)
        torch.testing.assert_close(ham.grad(p), auto)
        # Legendre: H(∇h(v)) + h(v) = v · ∇h(v); with ∇h(v) = ‖v‖^{q-2} v
        v = torch.randn(20, 3, dtype=torch.float64)
        dh = v.norm(dim=1, keepdim=True) ** (q - 2) * v
        torch.testing.assert_close(ham(dh) + ham.cost(v), (v * dh).sum(1))
    torch.testing.assert_close(PowerHamiltonian(2.0).grad(p), QuadraticHamiltonian().grad(p))
    with pytest.raises(ValueError):
        PowerHamiltonian(1.0)


def test_data_collocation_lies_between_the_samples_at_its_time():
    """collocation=data: x = (1 − t/T) x₀ + (t/T) y₀; with μ = δ₀ and ν = δ₁ that is x = t/T · 1;
    collocation=box draws inside the bounding box (off that line); mixed: half of each."""
    from functools import partial

    from ot_experiments.methods.ncf import NCF
    from ot_experiments.networks import MLP
    from ot_experiments.problems.base import Problem

    class Points(Problem):
        dim = 3

        def sample_source(self, n, *, generator=None, device="cpu", cls=None):
            return torch.zeros(n, 3, device=device)

        def sample_target(self, n, *, generator=None, device="cpu", cls=None):
            return torch.ones(n, 3, device=device)

    def make(collocation):
        return NCF(
            Points(),
            partial(MLP, hidden=(8,)),
            partial(torch.optim.Adam),
            horizon=2.0,
            collocation=collocation,
        )

    x, t = make("data").collocation_points(500)
    assert x.shape == (500, 3) and t.shape == (500, 1)
    assert torch.allclose(x, (t / 2.0).expand(-1, 3), atol=1e-6)
    assert 0 <= float(t.min()) and float(t.max()) <= 2.0 and float(t.std()) > 0.3
    xb, tb = make("box").collocation_points(500)
    assert float(xb.min()) >= 0.0 and float(xb.max()) <= 1.0
    off_line = (xb - (tb / 2.0).expand(-1, 3)).abs().amax(1) > 1e-3
    assert off_line.all()
    # mixed: the first half from the box, the rest on the segments
    xm, tm = make("mixed").collocation_points(501)
    assert xm.shape == (501, 3) and tm.shape == (501, 1)
    on_line = (xm - (tm / 2.0).expand(-1, 3)).abs().amax(1) < 1e-6
    assert not on_line[:250].any() and on_line[250:].all()
    with pytest.raises(Exception, match="choose box, data or mixed"):
        make("grid")


def reference_mmd_term(method) -> torch.Tensor:
    """NCF's per-class MMD as a loop over classes (the implementation before the batched one;
    the benchmark ``scripts/bench_ncf_step.py`` times it against ``NCF.mmd_term``)."""
    from ot_experiments.methods.ncf import ncf_backward_map, ncf_forward_map

    groups = method.problem.classes if method.conditional else (None,)
    n = method.n_mmd // len(groups) if method.conditional else method.n_mmd
    total = torch.zeros(())
    for k in groups:
        x = method.problem.sample_source(n, cls=k)
        y = method.problem.sample_target(n, cls=k)
        tx = ncf_forward_map(method.potential, x, method.horizon, method.ham, True)
        sy = ncf_backward_map(method.potential, y, method.horizon, method.ham, True)
        total = total + energy_distance(tx, y, y_fixed=True) + energy_distance(sy, x, y_fixed=True)
    return total


@pytest.mark.parametrize("conditional", [True, False])
def test_batched_class_mmd_equals_the_per_class_loop(conditional):
    """Loss and gradient of the stacked per-class MMD equal the loop's (same random draws)."""
    from functools import partial

    from ot_experiments.methods.ncf import NCF
    from ot_experiments.networks import MLP
    from ot_experiments.problems.toy2d import ClassMixtureProblem

    torch.manual_seed(0)
    method = NCF(
        ClassMixtureProblem(),
        partial(MLP, hidden=(16, 16)),
        partial(torch.optim.Adam),
        n_mmd=120,
        conditional=conditional,
    )
    values, grads = [], []
    for fn in (reference_mmd_term, NCF.mmd_term):
        torch.manual_seed(1)
        method.zero_grad()
        loss = fn(method)
        loss.backward()
        values.append(loss.detach())
        grads.append(
            torch.cat([p.grad.flatten() for p in method.parameters() if p.grad is not None])
        )
    assert float(values[0]) > 0.01
    torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_batched_energy_distance_is_the_per_pair_distance():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 40, 2, generator=g), torch.randn(3, 50, 2, generator=g)
    batched = energy_distance(x, y)
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, torch.stack([energy_distance(a, b) for a, b in zip(x, y)]))


def test_quadratic_term_adds_half_z_p_z_to_the_potential():
    """Zero P leaves the potential unchanged; P = S adds ½ zᵀSz, z = [x, t] (gradient in x: the
    x-rows of S z for symmetric S)."""
    from functools import partial

    from ot_experiments.methods.ncf import NCF, half_quadratic_form
    from ot_experiments.networks import MLP

    def build(quadratic_term):
        torch.manual_seed(0)
        problem = GaussianProblem(2, "ncf_benchmark", seed=0)
        net = partial(MLP, hidden=(8, 8))
        return NCF(problem, net, partial(torch.optim.Adam), quadratic_term=quadratic_term)

    plain, quad = build(False), build(True)
    x = torch.randn(6, 2, requires_grad=True)
    t = torch.rand(6, 1)
    assert torch.equal(plain.potential(x, t), quad.potential(x, t))
    s = torch.tensor([[2.0, 0.5, 0.1], [0.5, -1.0, 0.0], [0.1, 0.0, 0.3]])
    with torch.no_grad():
        quad.quad.copy_(s)
    diff = quad.potential(x, t) - plain.potential(x, t)
    z = torch.cat([x, t], 1)
    torch.testing.assert_close(diff, 0.5 * torch.einsum("ni,ij,nj->n", z, s, z))
    torch.testing.assert_close(half_quadratic_form(z, s), diff)
    (grad,) = torch.autograd.grad(diff.sum(), x)
    torch.testing.assert_close(grad, (z @ s)[:, :2])


def test_net_weight_decay_shrinks_the_network_and_leaves_p():
    """With ``net_weight_decay`` = w, one AdamW step at zero gradient scales every network weight
    by (1 − lr·w) and leaves the quadratic form P as it was; w = 0 hands the optimizer one group."""
    from functools import partial

    from ot_experiments.methods.ncf import NCF
    from ot_experiments.networks import MLP

    problem = GaussianProblem(2, "ncf_benchmark", seed=0)
    net = partial(MLP, hidden=(8, 8))
    plain = NCF(problem, net, partial(torch.optim.Adam), quadratic_term=True)
    assert len(plain.configure_optimizers().param_groups) == 1
    method = NCF(
        problem, net, partial(torch.optim.AdamW, lr=0.1), quadratic_term=True, net_weight_decay=0.5
    )
    opt = method.configure_optimizers()
    with torch.no_grad():
        method.quad.fill_(1.0)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    for p in method.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in method.named_parameters():
        factor = 1.0 if n == "quad" else 1 - 0.1 * 0.5
        torch.testing.assert_close(p.detach(), before[n] * factor)


def test_quadratic_lr_scale_moves_p_that_many_times_faster():
    """Adam's first step moves each parameter by its group's lr (m̂/√v̂ = 1 for a constant
    gradient): P, at ``quadratic_lr_scale`` = 3, by 3 × lr; the network by lr."""
    from functools import partial

    from ot_experiments.methods.ncf import NCF
    from ot_experiments.networks import MLP

    problem = GaussianProblem(2, "ncf_benchmark", seed=0)
    net = partial(MLP, hidden=(8, 8))
    method = NCF(
        problem, net, partial(torch.optim.Adam, lr=0.01), quadratic_term=True, quadratic_lr_scale=3
    )
    opt = method.configure_optimizers()
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    for p in method.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for n, p in method.named_parameters():
        step = 0.03 if n == "quad" else 0.01
        torch.testing.assert_close(p.detach(), before[n] - step)


def test_time_quadratic_form_sums_to_the_exact_hj_solution():
    """½ xᵀSx + ½ Σₖ tᵏ xᵀPₖx with Pₖ = (−1)ᵏ Sᵏ⁺¹ is the Taylor series of the HJ solution
    u = ½ xᵀS(I + tS)⁻¹x (H = ½|p|²); with ‖S‖ ≤ 0.5 and K = 14 it matches to ~0.5¹⁵."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    s = q @ torch.diag(torch.tensor([-0.5, 0.2, 0.4], dtype=torch.float64)) @ q.T
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    t = torch.rand(50, 1, generator=g, dtype=torch.float64)
    p = torch.stack([(-1) ** k * torch.linalg.matrix_power(s, k + 1) for k in range(1, 15)])
    series = 0.5 * ((x @ s) * x).sum(1) + time_quadratic_form(x, t, p)
    exact = torch.stack(
        [
            0.5 * xi @ s @ torch.linalg.inv(torch.eye(3, dtype=x.dtype) + ti * s) @ xi
            for xi, ti in zip(x, t)
        ]
    )
    torch.testing.assert_close(series, exact, atol=1e-4 * float(x.square().sum(1).max()), rtol=0)
    assert not torch.allclose(series, 0.5 * ((x @ s) * x).sum(1), atol=1e-2)  # t matters
    # one term: ½ t xᵀP₁x
    torch.testing.assert_close(
        time_quadratic_form(x, t, s[None]), 0.5 * t[:, 0] * ((x @ s) * x).sum(1)
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quadratic_time_degree": 2}, "shapes the quadratic term: set method.quadratic_term=true"),
        ({"quadratic_lr_scale": 10.0}, "method.quadratic_lr_scale shapes the quadratic term"),
        ({"quadratic_term": True, "quadratic_time_degree": -1}, "use an integer >= 0"),
        ({"quadratic_term": True, "quadratic_lr_scale": 0.0}, "use a number > 0"),
        ({"net_weight_decay": -0.1}, "method.net_weight_decay=-0.1 is not valid"),
    ],
)
def test_quadratic_options_are_refused_in_one_sentence(options, message):
    from functools import partial

    from ot_experiments.errors import ConfigError
    from ot_experiments.methods.ncf import NCF
    from ot_experiments.networks import MLP

    problem = GaussianProblem(2, "ncf_benchmark", seed=0)
    with pytest.raises(ConfigError, match=message):
        NCF(problem, partial(MLP, hidden=(8,)), partial(torch.optim.Adam), **options)


def test_sinkhorn_matching_is_the_divergence_of_the_pushed_samples():
    """``matching="sinkhorn"``: L_MMD is S_ε(T#μ, ν) + S_ε(S#ν, μ) on the same draws; a bad
    choice is one sentence."""
    from functools import partial

    from ot_experiments.errors import ConfigError
    from ot_experiments.methods.ncf import NCF, ncf_backward_map, ncf_forward_map
    from ot_experiments.metrics.distances import sinkhorn_loss
    from ot_experiments.networks import MLP
    from ot_experiments.problems.toy2d import ClassMixtureProblem

    torch.manual_seed(0)
    make = partial(NCF, ClassMixtureProblem(), partial(MLP, hidden=(16, 16)), torch.optim.Adam)
    method = make(n_mmd=100, conditional=False, matching="sinkhorn", sinkhorn_eps=0.5)
    torch.manual_seed(1)
    loss = method.mmd_term()
    torch.manual_seed(1)
    x, y = method.problem.sample_source(100), method.problem.sample_target(100)
    tx = ncf_forward_map(method.potential, x, 1.0, method.ham, True)
    sy = ncf_backward_map(method.potential, y, 1.0, method.ham, True)
    expected = sinkhorn_loss(tx, y, 0.5) + sinkhorn_loss(sy, x, 0.5)
    assert float(expected) > 0.01
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    for bad in ({"matching": "wasserstein"}, {"matching": "sinkhorn", "sinkhorn_eps": 0.0}):
        with pytest.raises(ConfigError, match="choose energy or sinkhorn, and an eps > 0"):
            make(**bad)


def test_polish_matches_the_last_steps_by_the_sinkhorn_divergence():
    """``polish_steps=N``: the last N of ``trainer.max_steps`` steps use S_ε on
    ``polish_points`` samples a side, the steps before the energy distance; bad values and a
    run without a step budget are one sentence."""
    from functools import partial
    from types import SimpleNamespace

    from ot_experiments.errors import ConfigError
    from ot_experiments.methods.ncf import NCF
    from ot_experiments.networks import MLP

    problem = GaussianProblem(2, "ncf_benchmark", seed=0)
    make = partial(NCF, problem, partial(MLP, hidden=(16,)), torch.optim.Adam, hj_loss="none")
    method = make(n_mmd=100, polish_steps=3, polish_points=50, sinkhorn_eps=0.5)
    method._trainer = SimpleNamespace(max_steps=10)
    assert [method.polishing(s) for s in range(10)] == [False] * 7 + [True] * 3
    losses = {}
    for step, matching, n in ((6, None, None), (7, "sinkhorn", 50)):
        torch.manual_seed(1)
        loss, _ = method.training_loss(step)
        torch.manual_seed(1)
        torch.testing.assert_close(loss, method.mmd_term(matching, n))
        losses[step] = float(loss)
    assert losses[6] != pytest.approx(losses[7], rel=0.01)
    method._trainer = SimpleNamespace(max_steps=-1)
    with pytest.raises(ConfigError, match="needs a step budget"):
        method.training_loss(0)
    for bad in ({"polish_steps": -1}, {"polish_points": 1}):
        with pytest.raises(ConfigError, match="polish_steps >= 0 and polish_points >= 2"):
            make(**bad)
