"""Q-flow: velocity net, ODE integration, losses, schedule, maps and tiny end-to-end runs."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch import nn

from ot_experiments.errors import ConfigError
from ot_experiments.methods.qflow import QFlow, flow_matching_loss, refinement_loss
from ot_experiments.methods.qflow_schedule import build_schedule, refinement_pattern
from ot_experiments.metrics.distances import ot_pairing
from ot_experiments.networks.velocity import ConcatSquashVelocity, as_time_column
from ot_experiments.ode import block_times, fine_time_grid, integrate, path_energy
from ot_experiments.problems import GaussianProblem, Toy2DProblem

from .conftest import read_results, run_folders, train

# a tiny budget that goes through flow matching, both refinement directions and validation
QFAST = [
    "method=qflow",
    "trainer.max_steps=24",
    "trainer.val_check_interval=12",
    "method.refine.clf_warmup_steps=2",
    "method.refine.flow_updates=2",
    "method.refine.clf_steps_per_update=1",
    "method.refine.flow_batch=64",
    "method.fm.batch=64",
    "method.refine.clf_batch=32",
    "method.refine.pool_size=64",
    "method.ratio.steps=4",
    "method.ratio.batch=32",
    "method.ratio.kde_points=200",
    "method.eval_points=200",
    "eval_points=200",
    "mc_points=0",
    "inference_points=1000",
    "method.ratio.pool_size=64",
    "trainer.log_every_n_steps=1",
    "logger=csv",
]


@pytest.fixture
def one_thread(monkeypatch):
    """Subprocesses use one intra-op thread (the test machine's cores are shared)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


class Linear(nn.Module):
    """f(t, x) = x Aᵀ (time-independent linear velocity)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t, x):
        return x @ self.a.T


def make_qflow(problem, **kw) -> QFlow:
    from functools import partial

    torch.manual_seed(0)
    return QFlow(
        problem,
        network=partial(ConcatSquashVelocity, hidden=(32, 32)),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        **kw,
    )


# -- networks ---------------------------------------------------------------------------
def test_time_column_broadcasts_scalars_and_vectors():
    like = torch.zeros(3, 2)
    assert as_time_column(0.5, 3, like).shape == (3, 1)
    assert torch.equal(
        as_time_column(torch.tensor([1.0, 2, 3]), 3, like)[:, 0], torch.tensor([1.0, 2, 3])
    )


def test_concatsquash_velocity_shape_and_time_dependence():
    torch.manual_seed(0)
    v = ConcatSquashVelocity(3, hidden=(16, 16))
    x = torch.randn(5, 3)
    out0, out1 = v(torch.tensor(0.0), x), v(torch.tensor(1.0), x)
    assert out0.shape == (5, 3)
    assert (out0 - out1).abs().max() > 1e-3  # the time gate changes the output
    # a per-sample time column gives the same as a scalar time
    assert torch.allclose(v(torch.full((5, 1), 0.3), x), v(0.3, x), atol=1e-6)


# -- grids and integration --------------------------------------------------------------
def test_block_times_and_bad_block_length():
    assert torch.allclose(block_times(0.25), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(ConfigError, match="whole blocks"):
        block_times(0.3)


def test_fine_time_grid_contains_the_times_and_bounds_the_steps():
    ts = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    grid, idx = fine_time_grid(ts, 0.25 / 3)
    assert len(grid) == 13  # 4 blocks × 3 steps + 1
    assert torch.allclose(grid[idx], ts)
    assert (grid[1:] - grid[:-1]).max() <= 0.25 / 3 + 1e-6
    back, idx_b = fine_time_grid(ts.flip(0), 0.1)
    assert torch.allclose(back[idx_b], ts.flip(0)) and (back[1:] < back[:-1]).all()


def test_rk4_integration_of_a_linear_ode_matches_the_matrix_exponential():
    a = torch.tensor([[0.0, -1.0], [1.0, -0.2]])
    f = Linear(a)
    x = torch.randn(10, 2)
    ts = torch.linspace(0, 1, 5)
    states = integrate(f, x, ts, step=0.25 / 3)
    exact = torch.stack([x @ torch.linalg.matrix_exp(t * a).T for t in ts])
    assert states.shape == (5, 10, 2)
    assert (states - exact).abs().max() < 1e-5
    # integrating back from t = 1 to t = 0 inverts the forward map
    back = integrate(f, states[-1], ts.flip(0), step=0.25 / 3)[-1]
    assert (back - x).abs().max() < 1e-5


def test_adjoint_gives_the_same_values_and_gradients_as_backprop():
    a = torch.tensor([[0.1, -0.5], [0.4, -0.2]])
    x = torch.randn(6, 2)
    ts = torch.tensor([0.0, 0.5, 1.0])
    grads = []
    for adjoint in (False, True):
        f = Linear(a.clone())
        out = integrate(f, x, ts, step=0.1, adjoint=adjoint)
        out[-1].square().sum().backward()
        grads.append((out.detach(), f.a.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-3)


# -- losses -----------------------------------------------------------------------------
def test_flow_matching_loss_is_zero_for_the_interpolation_velocity():
    x0 = torch.randn(50, 2)
    shift = torch.tensor([1.0, -2.0])
    x1 = x0 + shift
    t = torch.rand(50)

    def v(t, x):
        return shift.expand_as(x)

    assert float(flow_matching_loss(v, x0, x1, t)) == pytest.approx(0.0, abs=1e-12)

    def w(t, x):
        return torch.zeros_like(x)

    assert float(flow_matching_loss(w, x0, x1, t)) == pytest.approx(5.0, rel=1e-6)


def test_ot_pairing_recovers_a_shuffled_small_shift():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(40, 2, generator=g) * 3
    perm = torch.randperm(40, generator=g)
    x1 = (x0 + 0.01)[perm]
    paired = ot_pairing(x0, x1)
    assert torch.allclose(paired, x0 + 0.01)


def test_path_energy_straight_and_bent_paths():
    x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)
    ts = torch.linspace(0, 1, 5)
    straight = torch.stack([x0 + t * (x1 - x0) for t in ts])
    # constant-speed straight line: Σ ‖Δ‖²/h = ‖x1 − x0‖² = 2
    assert float(path_energy(straight, ts)) == pytest.approx(2.0, rel=1e-6)
    # same end points, bent path: strictly larger (Cauchy–Schwarz)
    bent = straight.clone()
    bent[2, :, 0] += 0.5
    assert float(path_energy(bent, ts)) > 2.0 + 1.0
    # backward time grid gives the same energy
    assert float(path_energy(straight.flip(0), ts.flip(0))) == pytest.approx(2.0, rel=1e-6)


def test_refinement_loss_formula():
    states = torch.stack([torch.zeros(3, 2), torch.ones(3, 2)])
    ts = torch.tensor([0.0, 1.0])
    logits = torch.tensor([1.0, 2.0, 3.0])
    # −E r + γ/2 · 2 = −2 + 0.5 · 0.5 · 2
    assert float(refinement_loss(logits, states, ts, gamma=0.5)) == pytest.approx(-1.5)


# -- schedule ---------------------------------------------------------------------------
def test_refinement_pattern_counts_and_halving():
    pat = refinement_pattern(2, ("fwd", "bwd"), 300, 50, 4, halve=True)
    c = Counter((a.kind, a.direction, a.round) for a in pat)
    assert c[("clf", "fwd", 0)] == 300 + 50 * 4 and c[("flow", "fwd", 0)] == 50
    assert c[("clf", "bwd", 1)] == 150 + 50 * 2 and c[("flow", "bwd", 1)] == 50
    assert len(pat) == 2 * (550 + 300)
    # order: forward warm-up first, then its flow updates, then the reverse direction
    assert pat[0] == ("clf", "fwd", 0) and pat[300] == ("flow", "fwd", 0)
    assert pat[550] == ("clf", "bwd", 0)


def test_schedule_fits_the_step_budget():
    sched = build_schedule(4000, ratio_steps=500)
    kinds = Counter(a.kind for a in sched)
    assert len(sched) == 4000
    assert kinds == {"fm": 1800, "clf": 1500, "flow": 200, "ratio": 500}
    assert sched[0].kind == "fm" and sched[-1].kind == "ratio"
    # a small budget shrinks the refinement but keeps flow matching and both directions
    small = build_schedule(100)
    kinds = Counter(a.kind for a in small)
    assert len(small) == 100 and kinds["fm"] >= 25
    assert {a.direction for a in small if a.kind == "flow"} == {"fwd", "bwd"}
    assert Counter(a.kind for a in build_schedule(10, rounds=0)) == {"fm": 10}


# -- the method's maps ------------------------------------------------------------------
def test_transport_inverse_and_trajectory_agree():
    m = make_qflow(GaussianProblem(2, "ncf_benchmark", 0))
    x = torch.randn(100, 2)
    tx = m.transport(x)
    assert tx.shape == x.shape and (tx - x).abs().max() > 1e-3
    assert (m.inverse_transport(tx) - x).abs().max() < 1e-4
    traj = m.trajectory(x, torch.linspace(0, 1, 5))
    assert traj.shape == (5, 100, 2)
    assert torch.allclose(traj[0], x) and torch.allclose(traj[-1], tx, atol=1e-5)
    late = m.trajectory(x, torch.tensor([0.5, 1.0]))
    assert torch.allclose(late[0], traj[2], atol=1e-5)
    assert m.discrete_kinetic_energy(x) >= float((tx - x).square().sum(1).mean()) - 1e-6


def test_flow_matching_alone_learns_a_shift():
    """300 flow-matching steps (OT coupling) move N(0, I) to N(−4e1, I): W2² = 16 within 5 %."""
    torch.manual_seed(0)
    problem = GaussianProblem(2, "shift", 0)
    m = make_qflow(problem, fm={"coupling": "ot", "batch": 128})
    opt = torch.optim.Adam(m.velocity.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [150, 250], gamma=0.2)
    for _ in range(300):
        loss, _ = m._fm_step()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    x = problem.sample_source(1000, generator=torch.Generator().manual_seed(1))
    assert float((m.transport(x) - x).square().sum(1).mean()) == pytest.approx(16.0, rel=0.05)


def test_bad_method_options_are_one_sentence_errors():
    with pytest.raises(ConfigError, match=r"method\.fm\.coupling='sinkhorn' is not valid"):
        make_qflow(Toy2DProblem(), fm={"coupling": "sinkhorn"})
    with pytest.raises(ConfigError, match="density_ratio"):
        make_qflow(Toy2DProblem(), density_ratio="yes")
    with pytest.raises(ConfigError, match=r"method\.ratio\.ends='both' is not valid"):
        make_qflow(Toy2DProblem(), ratio={"ends": "both"})
    with pytest.raises(ConfigError, match=r"method\.fm\.min_fraction=2 must lie in \[0, 1\]"):
        make_qflow(Toy2DProblem(), fm={"min_fraction": 2})
    with pytest.raises(ConfigError, match=r"method\.refine\.gama is not an option"):
        make_qflow(Toy2DProblem(), refine={"gama": 1.0})
    with pytest.raises(ConfigError, match=r"method\.fm_batchsize is not an option of Q-flow"):
        make_qflow(Toy2DProblem(), fm_batchsize=8)


def test_flat_options_of_older_configs_land_in_their_groups():
    """Run folders made before the option groups keep their flat config; it still builds."""
    old = make_qflow(
        Toy2DProblem(),
        fm_coupling="ot",
        fm_batch=64,
        min_fm_fraction=0.5,
        refine=False,
        refine_lr=1e-4,
        pool_size=100,
        ratio_steps=7,
        ratio_ends="pushed",
        kde_points=300,
    )
    new = make_qflow(
        Toy2DProblem(),
        fm={"coupling": "ot", "batch": 64, "min_fraction": 0.5},
        refine={"enabled": False, "lr": 1e-4, "pool_size": 100},
        ratio={"steps": 7, "ends": "pushed", "kde_points": 300},
    )
    assert old.fm == new.fm and old.refine == new.refine
    assert old.fm.coupling == "ot" and old.refine.lr == 1e-4 and not old.refine.enabled
    for a, b in zip(old.state_dict().values(), new.state_dict().values()):
        assert torch.equal(a, b)
    # the grouped value wins over a flat one
    assert make_qflow(Toy2DProblem(), fm={"batch": 32}, fm_batch=64).fm.batch == 32


def _compose(*overrides: str):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose("config", overrides=["method=qflow", *overrides])


def test_problem_dependent_defaults_and_overrides():
    """Gaussians default to OT flow matching without refinement; toys keep the paper's."""
    cfg = _compose("problem=gaussian")
    assert cfg.method.fm.coupling == "ot" and cfg.method.refine.enabled is False
    assert cfg.method.refine.flow_updates == 30 and cfg.trainer.max_steps == 3000
    cfg = _compose("problem=toy2d")
    assert cfg.method.fm.coupling == "independent" and cfg.method.refine.enabled is True
    assert cfg.method.refine.gamma == 0.5
    assert cfg.method.refine.flow_updates == 150 and cfg.trainer.max_steps == 8000
    cfg = _compose("problem=toy2d", "method.refine.flow_updates=7", "trainer.max_steps=100")
    assert cfg.method.refine.flow_updates == 7 and cfg.trainer.max_steps == 100
    cfg = _compose(
        "problem=gaussian", "method.refine.enabled=true", "method.fm.coupling=independent"
    )
    assert cfg.method.fm.coupling == "independent" and cfg.method.refine.enabled is True


# -- end to end -------------------------------------------------------------------------
def test_qflow_run_on_a_toy_pair(tmp_path, one_thread):
    train(tmp_path, *QFAST, "problem=toy2d", "problem.source=moons", "problem.target=8gaussians")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "ok" and res["method"] == "qflow"
    met = res["metrics"]
    for key in ("w2_sq", "path_energy", "w2_sq_after_fm", "kl_fwd", "kl_bwd"):
        assert math.isfinite(met[key])
    assert met["path_energy"] >= met["w2_sq"] * 0.99
    for name in ("trajectories.png", "refinement.png", "maps.png"):
        assert (folder / name).stat().st_size > 10_000
    header = (folder / "metrics.csv").read_text().splitlines()[0]
    for col in ("train/fm", "train/kl_fwd", "train/transport_bwd", "train/clf_fwd"):
        assert col in header
    # the reloaded flow is invertible: S(T(x)) = x
    import ot_experiments

    run = ot_experiments.load_run(folder)
    x = run.problem.sample_source(100, generator=torch.Generator().manual_seed(0))
    assert (run.inverse_transport(run.transport(x)) - x).abs().max() < 1e-3


def test_qflow_run_on_gaussians_reports_uvp(tmp_path, one_thread):
    train(tmp_path, *QFAST, "problem=gaussian", "d=4", "method.refine.enabled=false")
    (folder,) = run_folders(tmp_path)
    met = read_results(folder)["metrics"]
    for key in ("uvp_fwd", "uvp_bwd", "w2_sq", "w2_sq_true"):
        assert math.isfinite(met[key]) and met[key] >= 0
    assert "kl_fwd" not in met and "mae_flow_ratio" not in met


def test_diverging_training_is_reported(tmp_path, one_thread):
    proc = train(tmp_path, *QFAST, "problem=toy2d", "optimizer.lr=1e30", check=False)
    assert proc.returncode != 0
    assert "diverged" in proc.stderr
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["status"] == "failed" and res["failed_step"] >= 0


def test_refinement_fixed_point_shortens_a_shift_by_one_plus_gamma():
    """Why refinement biases w2_sq: P = N(0,1), Q = N(m,1), flow x + t·a.

    With the exact frozen logit r = log q − log p₁ (p₁ = N(a,1)), the gradient of
    −E r(x + a) + γ/2 Σ_k E|Δx|²/h_k is (a − m) + γ a, so the refinement settles at
    a = m / (1 + γ), not at the OT shift m: W2² is under-estimated by 1 − 1/(1+γ)².
    """
    torch.manual_seed(0)
    m, gamma = 2.0, 0.5
    ts = block_times(0.25)
    x = torch.randn(20_000)
    a = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([a], lr=0.2)
    for _ in range(200):
        a0 = float(a)

        def r(y, a0=a0):  # classifier optimum for the current p₁, frozen
            return -0.5 * (y - m) ** 2 + 0.5 * (y - a0) ** 2

        states = (x[None] + ts[:, None] * a)[..., None]  # (K+1, n, 1)
        loss = refinement_loss(r(states[-1, :, 0]), states, ts, gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(a) == pytest.approx(m / (1 + gamma), rel=1e-3)
