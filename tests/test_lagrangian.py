"""Lagrangian dynamic OT: nodal networks, RK4/Simpson, loss terms, gradients (the runs:
test_lagrangian_runs.py)."""

from __future__ import annotations

import inspect
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from ot_experiments.errors import ConfigError
from ot_experiments.methods.lagrangian import Lagrangian
from ot_experiments.methods.lagrangian_terms import (
    antithetic_batch,
    h1_regulariser,
    kinetic_energy,
    kl_weight_at,
    path_excess,
)
from ot_experiments.networks.nodal import FrozenField, NodalVelocity, NodalWeightsVelocity
from ot_experiments.ode import (
    refine_path,
    rk4_characteristics,
    rk4_path,
    rk4_stage_times,
    simpson,
    trapezoid,
)
from ot_experiments.problems.gaussian import GaussianProblem, lagrangian_h1_weight

NETS = (NodalVelocity, NodalWeightsVelocity)
TIMES = (0.0, 0.13, 0.2, 0.5, 0.61, 1.0)


def _method(problem, net_cls=NodalVelocity, **kw) -> Lagrangian:
    """A small Lagrangian method; ``auto`` options filled from the problem as the runner does."""
    defaults = inspect.signature(Lagrangian).parameters
    for key, value in problem.method_hints("lagrangian").items():
        if kw.get(key, defaults[key].default) == "auto":
            kw[key] = value
    kw.setdefault("batch_size", 64)
    kw.setdefault("h1_points", 50)
    return Lagrangian(
        problem,
        partial(net_cls, width=6),
        partial(torch.optim.Adam, lr=0.1),
        **kw,
    )


# -- networks -----------------------------------------------------------------------------
@pytest.mark.parametrize("net_cls", NETS)
@pytest.mark.parametrize("t", TIMES)
def test_closed_form_divergence_and_jacobian_match_autograd(net_cls, t):
    torch.manual_seed(0)
    d = 4
    net = net_cls(in_dim=d, width=7).double()
    x = torch.randn(9, d, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda y: net(y, t).sum(0), x).permute(1, 0, 2)
    v, div = net.velocity_and_divergence(x, t)
    torch.testing.assert_close(v, net(x, t))
    torch.testing.assert_close(net.jacobian(x, t), jac)
    torch.testing.assert_close(div, torch.diagonal(jac, dim1=1, dim2=2).sum(1))
    torch.testing.assert_close(net.jacobian_frobenius_sq(x, t), jac.square().sum((1, 2)))
    assert div.abs().max() > 1e-3  # not a trivially zero field


@pytest.mark.parametrize("net_cls", NETS)
def test_parameter_count_is_the_papers(net_cls):
    d, m, l_, h = 7, 5, 2, 20
    net = net_cls(in_dim=d, time_intervals=m, n_terms=l_, width=h)
    assert sum(p.numel() for p in net.parameters()) == l_ * (m + 1) * (2 * d * h + h + d)


def test_nodal_velocity_interpolates_the_node_nets_linearly():
    torch.manual_seed(1)
    net = NodalVelocity(in_dim=3, time_intervals=5, width=5).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    v2, v3 = net(x, 0.4), net(x, 0.6)  # nodes t_2 and t_3
    torch.testing.assert_close(net(x, 0.5), 0.5 * (v2 + v3))
    torch.testing.assert_close(net(x, 0.45), 0.75 * v2 + 0.25 * v3)
    # the weights ablation is NOT linear in t between nodes
    wnet = NodalWeightsVelocity(in_dim=3, time_intervals=5, width=5).double()
    mid = 0.5 * (wnet(x, 0.4) + wnet(x, 0.6))
    assert (wnet(x, 0.5) - mid).abs().max() > 1e-4


@pytest.mark.parametrize("net_cls", NETS)
def test_batched_layers_equal_single_layers(net_cls):
    torch.manual_seed(2)
    net = net_cls(in_dim=3, width=4).double()
    times = rk4_stage_times(8)
    field = FrozenField(net, times)
    x = torch.randn(5, 3, dtype=torch.float64)
    for t in times:
        v, div = field(x, t)
        v_ref, div_ref = net.velocity_and_divergence(x, t)
        torch.testing.assert_close(v, v_ref)
        torch.testing.assert_close(div, div_ref)


@pytest.mark.parametrize("net_cls", NETS)
def test_jacobian_norms_at_many_times_match_autograd(net_cls):
    """The per-node H¹ form (NodalVelocity) and the generic one equal ‖autograd ∇v‖_F²."""
    torch.manual_seed(3)
    net = net_cls(in_dim=3, time_intervals=4, width=5).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    times = torch.tensor([0.0, 0.1, 0.25, 0.3, 0.5, 0.77, 1.0], dtype=torch.float64)
    got = net.jacobian_frobenius_sq_at(x, times)
    ref = []
    for t in times.tolist():
        jac = torch.autograd.functional.jacobian(lambda y, t=t: net(y, t).sum(0), x)
        ref.append(jac.square().sum((0, 2)))
    torch.testing.assert_close(got, torch.stack(ref))
    assert got.shape == (7, 8) and got.min() > 1e-4


def test_frozen_field_gradients_equal_the_networks():
    """Unbinding the batched layers changes the autograd graph, not the gradients."""
    torch.manual_seed(4)
    net = NodalVelocity(in_dim=3, width=6).double()
    times = rk4_stage_times(6)
    x = torch.randn(10, 3, dtype=torch.float64)

    def loss(field):
        zs, ells, vs = rk4_characteristics(field, x, torch.zeros(10, dtype=x.dtype), 3, 2)
        return vs.square().sum() + ells[-1].sum() + zs[-1].sum()

    g_frozen = torch.autograd.grad(loss(FrozenField(net, times)), list(net.parameters()))
    g_net = torch.autograd.grad(loss(net.velocity_and_divergence), list(net.parameters()))
    for a, b in zip(g_frozen, g_net):
        torch.testing.assert_close(a, b)
    assert sum(float(g.abs().sum()) for g in g_net) > 1e-3


# -- integration --------------------------------------------------------------------------
def test_quadratures_are_exact_on_polynomials():
    n = 5
    t = torch.linspace(0, 1, 2 * n + 1, dtype=torch.float64)
    assert float(simpson(t**3 - 2 * t**2 + 1, n)) == pytest.approx(0.25 - 2 / 3 + 1, abs=1e-12)
    t1 = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    assert float(trapezoid(3 * t1 + 1, n)) == pytest.approx(2.5, abs=1e-12)


def test_rk4_solves_a_linear_field_and_its_log_density():
    """v(z) = A z: z(1) = exp(A) x and ℓ(1) = ℓ(0) − tr A exactly."""
    a = torch.tensor([[0.3, -1.0], [0.8, -0.2]], dtype=torch.float64)

    def field(z, t):
        return z @ a.T, torch.full((z.shape[0],), float(torch.trace(a)), dtype=z.dtype)

    x = torch.randn(10, 2, dtype=torch.float64)
    zs, ells, vs = rk4_characteristics(field, x, torch.zeros(10, dtype=torch.float64), 10, 4)
    assert zs.shape == (21, 10, 2) and ells.shape == (21, 10) and vs.shape == (21, 10, 2)
    torch.testing.assert_close(zs[-1], x @ torch.linalg.matrix_exp(a).T, atol=1e-7, rtol=0)
    torch.testing.assert_close(zs[10], x @ torch.linalg.matrix_exp(0.5 * a).T, atol=1e-7, rtol=0)
    torch.testing.assert_close(ells[-1], torch.full((10,), -0.1, dtype=torch.float64))
    torch.testing.assert_close(vs[7], zs[7] @ a.T)
    path = rk4_path(field, x, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), 0.025)
    torch.testing.assert_close(path[1], x @ torch.linalg.matrix_exp(0.3 * a).T, atol=1e-7, rtol=0)
    torch.testing.assert_close(path[0], x)


def test_kinetic_energy_and_h1_closed_forms():
    vs = torch.full((21, 8, 3), 2.0)  # ‖v‖² = 12 at every time
    w = torch.full((8,), 1 / 8)
    assert float(kinetic_energy(vs, w, 10)) == pytest.approx(12.0)
    jac = torch.ones(11, 4) * torch.linspace(0, 1, 11)[:, None]  # ∫ t dt = 1/2 per point
    assert float(h1_regulariser(jac, 10, "sum")) == pytest.approx(2.0)
    assert float(h1_regulariser(jac, 10, "mean")) == pytest.approx(0.5)


def test_path_excess_of_an_accelerating_path():
    """z(t) = x + c t² (v = 2ct): E = 4/3 ‖c‖², ‖z(1) − x‖² = ‖c‖², excess ‖c‖²/3; a constant
    velocity has none."""
    c = torch.tensor([[1.0, -2.0], [0.5, 0.0]])  # ‖c‖² = 5 and 0.25
    x = torch.randn(2, 2)
    t = torch.linspace(0, 1, 21)[:, None, None]
    w = torch.full((2,), 0.5)
    energy = kinetic_energy(2 * c * t, w, 10)  # Simpson: exact for ‖v‖² quadratic in t
    assert float(path_excess(energy, x, x + c, w)) == pytest.approx((5 + 0.25) / 2 / 3, rel=1e-5)
    still = kinetic_energy(c.expand(21, -1, -1), w, 10)
    assert float(path_excess(still, x, x + c, w)) == pytest.approx(0.0, abs=1e-5)


def test_kl_weight_is_fixed_then_geometric():
    assert kl_weight_at(0, 1000, 1e3, 1e4, 0.4) == 1e3
    assert kl_weight_at(400, 1000, 1e3, 1e4, 0.4) == 1e3
    assert kl_weight_at(700, 1000, 1e3, 1e4, 0.4) == pytest.approx(1e3 * 10**0.5)
    assert kl_weight_at(1000, 1000, 1e3, 1e4, 0.4) == pytest.approx(1e4)
    assert kl_weight_at(1000, 1000, 1e3, None, 0.4) == 1e3  # no end value: the paper's fixed λ
    assert kl_weight_at(500, 0, 1e3, 1e4, 0.4) == 1e3  # outside a trainer


# -- the loss on a known solution ---------------------------------------------------------
def _constant_shift_field(method: Lagrangian, shift: torch.Tensor) -> None:
    """Set the network to v ≡ shift (W2 = 0, biases sum to the shift)."""
    net = method.net
    with torch.no_grad():
        net.w2.zero_()
        net.b2.zero_()
        net.b2[:, 0, :] = shift


def test_loss_is_the_exact_cost_on_the_exact_solution():
    """Test 1: v ≡ −4e1 is optimal: E = W2² = 16, KL = 0, R = 0."""
    problem = GaussianProblem(3, preset="shift")
    method = _method(problem)
    _constant_shift_field(method, torch.tensor([-4.0, 0.0, 0.0]))
    torch.manual_seed(0)
    loss, logs = method.training_loss(0)
    assert float(logs["energy"]) == pytest.approx(16.0, rel=1e-5)
    assert abs(float(logs["kl"])) < 1e-4
    assert float(logs["h1"]) == pytest.approx(0.0, abs=1e-8)
    assert float(loss) == pytest.approx(16.0, rel=1e-4)
    x = problem.sample_source(500)
    assert method.transport_cost(x) == pytest.approx(16.0, rel=1e-5)
    torch.testing.assert_close(method.transport(x), problem.transport_true(x), atol=1e-4, rtol=0)
    metrics = method.extra_metrics(x, problem)
    assert abs(metrics["kl"]) < 1e-4 and metrics["map_cost"] == pytest.approx(16.0, rel=1e-4)
    traj = method.trajectory(x, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(traj[1], x + torch.tensor([-2.0, 0.0, 0.0]), atol=1e-4, rtol=0)


def test_straightening_term_vanishes_on_the_exact_solution():
    """κ·(E − M) adds nothing on straight constant-speed paths (v ≡ −4e1 on Test 1)."""
    method = _method(GaussianProblem(3, preset="shift"), straightness_weight=10.0)
    _constant_shift_field(method, torch.tensor([-4.0, 0.0, 0.0]))
    torch.manual_seed(0)
    loss, logs = method.training_loss(0)
    assert float(logs["path_excess"]) == pytest.approx(0.0, abs=1e-3)
    assert float(loss) == pytest.approx(16.0, rel=1e-4)


def test_reported_kl_weight_is_the_one_in_force():
    """``kl_weight`` in the metrics follows the late λ rise: the start value, then the end."""
    problem = GaussianProblem(2, preset="shift")
    method = _method(problem, kl_weight=1e3, kl_weight_end=1e4, kl_ramp_from=0.5)
    x = problem.sample_source(64)
    assert method.extra_metrics(x, problem)["kl_weight"] == 1e3  # outside a trainer
    for step, expected in [(40, 1e3), (75, 1e3 * 10**0.5), (100, 1e4)]:
        method._trainer = SimpleNamespace(global_step=step, max_steps=100)
        assert method.extra_metrics(x, problem)["kl_weight"] == pytest.approx(expected)


def test_a_wrong_field_pays_a_kl_penalty():
    problem = GaussianProblem(2, preset="shift")
    method = _method(problem)
    _constant_shift_field(method, torch.tensor([-2.0, 0.0]))
    torch.manual_seed(0)
    _, logs = method.training_loss(0)
    # KL(N(−2e1, I) ‖ N(−4e1, I)) = ‖2e1‖² / 2 = 2 (Monte-Carlo, 64 samples)
    assert float(logs["kl"]) == pytest.approx(2.0, abs=0.5)
    assert float(logs["energy"]) == pytest.approx(4.0, rel=1e-5)


def test_antithetic_batches_make_the_kl_of_a_shift_exact():
    """With pairs x, 2c − x the batch mean is c, so for a constant shift s between unit
    Gaussians the Monte-Carlo KL is exactly ‖s − Δ‖² / 2 (its x·(s − Δ) term cancels)."""
    half = torch.randn(5, 3)
    pairs = antithetic_batch(half, torch.tensor([1.0, -2.0, 0.5]))
    assert pairs.shape == (10, 3)
    assert torch.allclose(pairs.mean(0), torch.tensor([1.0, -2.0, 0.5]), atol=1e-6)
    problem = GaussianProblem(2, preset="two_axis_shift")
    assert torch.equal(problem.source_centre, torch.tensor([-4.0, -4.0]))
    method = _method(problem, antithetic=True)
    _constant_shift_field(method, torch.tensor([6.0, 8.0]))  # Δ = (8, 8): KL = (4 + 0) / 2
    torch.manual_seed(0)
    _, logs = method.training_loss(0)
    assert float(logs["kl"]) == pytest.approx(2.0, abs=1e-4)
    assert float(logs["energy"]) == pytest.approx(100.0, rel=1e-5)


def test_importance_sampling_estimates_the_same_energy():
    problem = GaussianProblem(2, preset="shift")
    method = _method(problem, importance="uniform", importance_box=6.0, batch_size=20_000)
    _constant_shift_field(method, torch.tensor([-4.0, 0.0]))
    torch.manual_seed(0)
    _, logs = method.training_loss(0)
    assert float(logs["energy"]) == pytest.approx(16.0, rel=0.05)
    assert abs(float(logs["kl"])) < 1e-3


def test_adjoint_gradient_matches_backprop():
    torch.manual_seed(3)
    problem = GaussianProblem(2, preset="scale_shift")
    grads = {}
    for gradient in ("backprop", "adjoint"):
        torch.manual_seed(3)
        method = _method(problem, gradient=gradient, h1_weight=0.0, n_intervals=4, n_substeps=2)
        torch.manual_seed(4)
        loss, _ = method.training_loss(0)
        loss.backward()
        grads[gradient] = torch.cat([p.grad.flatten() for p in method.parameters()])
    b, a = grads["backprop"], grads["adjoint"]
    assert b.norm() > 1e-2
    assert float((a - b).norm() / b.norm()) < 2e-2


def test_reference_alpha_table():
    assert lagrangian_h1_weight("shift", 2) == 1.0 and lagrangian_h1_weight("shift", 50) == 0.1
    assert lagrangian_h1_weight("scale_shift", 10) == 1.0
    assert lagrangian_h1_weight("two_axis_shift", 20) == 5.0
    assert lagrangian_h1_weight("two_axis_shift", 50) == 20.0
    problem = GaussianProblem(50, preset="two_axis_shift")
    assert problem.method_hints("lagrangian") == {"h1_weight": 20.0}
    assert problem.method_hints("ncf") == {}
    method = _method(problem)
    assert (method.kl_weight, method.h1_weight, method.obstacle_weight) == (1000.0, 20.0, 0.0)
    # without the problem's hints, auto falls back to λ = 1000, α = 1, λ_P = 0
    plain = Lagrangian(problem, partial(NodalVelocity, width=4), partial(torch.optim.Adam))
    assert (plain.kl_weight, plain.h1_weight, plain.obstacle_weight) == (1000.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"gradient": "magic"}, "choose backprop or adjoint"),
        ({"n_substeps": 3}, "even n_substeps"),
        ({"importance": "gauss"}, "choose none or uniform"),
        ({"obstacle_weight": 5.0}, "no cost along paths"),
        ({"obstacle_refine": 0}, "need an integer >= 1"),
        ({"obstacle_ramp_start": 0.0}, "a start factor in"),
        ({"straightness_weight": -1.0}, "need κ >= 0"),
        ({"kl_ramp_from": 1.0}, "a ramp start in"),
        ({"kl_weight_end": 0.0}, "need a positive λ"),
        ({"antithetic": True, "importance": "uniform"}, "needs x ~ ρ0"),
    ],
)
def test_bad_settings_raise_one_sentence(kw, message):
    with pytest.raises(ConfigError, match=message):
        _method(GaussianProblem(2, preset="shift"), **kw)


def test_batched_h1_term_equals_per_time_closed_form():
    problem = GaussianProblem(3, preset="shift")
    method = _method(problem, n_intervals=4)
    torch.manual_seed(5)
    r = method.h1_term()
    torch.manual_seed(5)
    y = (torch.rand(method.h1_points, 3) * 2 - 1) * method.h1_box
    jac = torch.stack([method.net.jacobian_frobenius_sq(y, t) for t in (0, 0.25, 0.5, 0.75, 1)])
    assert float(r) == pytest.approx(float(h1_regulariser(jac, 4)), rel=1e-5)


def test_obstacle_quadratures_agree_on_a_smooth_path():
    from ot_experiments.problems.crowd_motion import CrowdMotionProblem

    problem = CrowdMotionProblem(2, "test4")
    method = _method(problem)
    _constant_shift_field(method, torch.tensor([6.0, 0.0]))  # straight through the obstacle
    x = problem.sample_source(200, generator=torch.Generator().manual_seed(0))
    zs, _, _, z_fine = method._integrate(x)
    w = torch.full((200,), 1 / 200)
    fine = float(method.obstacle_integral(z_fine, w, None))
    coarse = float(method.obstacle_integral(zs, w, None))
    # exact: ∫₀¹ Q(x + 6 t e1) dt for the unit-variance-in-x2 Gaussian obstacle, averaged
    t = torch.linspace(0, 1, 4001)
    q = problem.path_cost(
        (x[None] + 6 * t[:, None, None] * torch.tensor([1.0, 0.0])).reshape(-1, 2)
    )
    exact = float(torch.trapezoid(q.reshape(4001, 200).mean(1), t))
    assert fine == pytest.approx(exact, rel=1e-4)
    assert coarse == pytest.approx(exact, rel=1e-2)
    owned = problem.evaluate_method(method, x)
    assert owned["obstacle_fraction"] > 0.05
    assert owned["obstacle_cost"] == pytest.approx(fine, rel=1e-6)  # the problem's = the loss's


def test_refined_path_sees_a_jump_across_a_wall():
    from ot_experiments.problems.crowd_motion import CrowdMotionProblem

    # one step from below the maze1 wall (x2 ∈ [−1, 1)) to above it
    path = torch.tensor([[[0.0, -3.0]], [[0.0, 3.0]]])
    fine = refine_path(path, 8)
    assert fine.shape == (9, 1, 2)
    torch.testing.assert_close(fine[4, 0], torch.tensor([0.0, 0.0]))
    core = CrowdMotionProblem(2, "maze1").in_obstacle_core(fine[:, 0])
    assert not CrowdMotionProblem(2, "maze1").in_obstacle_core(path[:, 0]).any()
    assert int(core.sum()) == 3  # x2 = −0.75, 0, 0.75


def test_obstacle_ramp_factor_is_geometric():
    from ot_experiments.methods.lagrangian_terms import obstacle_ramp_factor

    assert obstacle_ramp_factor(0, 0, 1e-3) == 1.0
    assert obstacle_ramp_factor(0, 300, 1e-3) == pytest.approx(1e-3)
    assert obstacle_ramp_factor(100, 300, 1e-3) == pytest.approx(1e-2)
    assert obstacle_ramp_factor(150, 300, 1e-4) == pytest.approx(1e-2)
    assert obstacle_ramp_factor(300, 300, 1e-3) == 1.0
    assert obstacle_ramp_factor(5000, 300, 1e-3) == 1.0


def test_auto_obstacle_ramp_only_for_maze_walls():
    from ot_experiments.problems.crowd_motion import CrowdMotionProblem

    def ramp(problem):
        return _method(problem, obstacle_ramp_steps="auto").obstacle_ramp_steps

    assert ramp(CrowdMotionProblem(2, "maze1")) == 300
    assert ramp(CrowdMotionProblem(2, "maze3")) == 300
    assert ramp(CrowdMotionProblem(2, "test4")) == 0  # Gaussian obstacles: none
    assert ramp(CrowdMotionProblem(2, "maze4")) == 0  # has its own 10^m continuation
    assert ramp(GaussianProblem(2, preset="shift")) == 0
