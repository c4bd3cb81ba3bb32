import math

import numpy as np
import ot
import pytest
import torch

from ot_experiments.errors import ConfigError
from ot_experiments.problems import ClassMixtureProblem, GaussianProblem, Toy2DProblem
from ot_experiments.problems.gaussian import PRESETS
from ot_experiments.problems.toy2d import SHAPES


@pytest.mark.parametrize("preset", PRESETS)
def test_gaussian_map_and_cost_match_pot(preset):
    d = 2 if preset == "gaussian2d" else 5
    p = GaussianProblem(d, preset=preset, seed=3)
    a, b = ot.gaussian.bures_wasserstein_mapping(
        p.mean0.numpy(), p.mean1.numpy(), p.cov0.numpy(), p.cov1.numpy()
    )
    x = torch.randn(50, d, dtype=torch.float64)
    np.testing.assert_allclose(p.transport_true(x).numpy(), x.numpy() @ a + b, atol=1e-8)
    w = ot.gaussian.bures_wasserstein_distance(
        p.mean0.numpy(), p.mean1.numpy(), p.cov0.numpy(), p.cov1.numpy()
    )
    assert p.w2_sq_true == pytest.approx(float(w) ** 2, rel=1e-8)
    # inverse map undoes the forward map
    np.testing.assert_allclose(
        p.inverse_transport_true(p.transport_true(x)).numpy(), x.numpy(), atol=1e-8
    )


def test_lagrangian_test_costs():
    # T1c ground truth (Lagrangian paper, Tables 3.1-3.2): 16, 16 + d(1 − √0.3)², 128
    for d in (2, 10, 50):
        assert GaussianProblem(d, "shift").w2_sq_true == pytest.approx(16.0)
        assert GaussianProblem(d, "scale_shift").w2_sq_true == pytest.approx(
            16 + d * (1 - math.sqrt(0.3)) ** 2
        )
        assert GaussianProblem(d, "two_axis_shift").w2_sq_true == pytest.approx(128.0)


def test_same_seed_same_pair_and_different_seed_differs():
    a, b, c = GaussianProblem(4, seed=1), GaussianProblem(4, seed=1), GaussianProblem(4, seed=2)
    assert torch.equal(a.cov0, b.cov0) and torch.equal(a.cov1, b.cov1)
    assert not torch.allclose(a.cov0, c.cov0)


def test_ncf_benchmark_eigenvalues_in_range():
    p = GaussianProblem(16, seed=0)
    for cov in (p.cov0, p.cov1):
        ev = torch.linalg.eigvalsh(cov)
        assert ev.min() >= 0.5 - 1e-9 and ev.max() <= 2.0 + 1e-9
    assert p.mean0.abs().max() == 0 and p.mean1.abs().max() == 0


def test_samples_have_the_right_moments():
    p = GaussianProblem(3, "wishart", seed=0)
    g = torch.Generator().manual_seed(0)
    x = p.sample_source(200_000, generator=g).double()
    np.testing.assert_allclose(x.mean(0), p.mean0, atol=0.05 * p.cov0.diag().sqrt().max())
    np.testing.assert_allclose(torch.cov(x.T), p.cov0, rtol=0.05, atol=0.05)


def test_log_density_matches_torch_distribution():
    p = GaussianProblem(4, "ncf_benchmark", seed=0)
    x = torch.randn(10, 4, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(p.mean0, p.cov0).log_prob(x)
    np.testing.assert_allclose(p.log_density_source(x), ref, atol=1e-10)
    ref1 = torch.distributions.MultivariateNormal(p.mean1, p.cov1).log_prob(x)
    np.testing.assert_allclose(p.log_density_target(x), ref1, atol=1e-10)


def test_preset_needing_more_dimensions_says_so():
    with pytest.raises(ConfigError, match="needs d >= 2"):
        GaussianProblem(1, "two_axis_shift")
    with pytest.raises(ConfigError, match="set d=2"):
        GaussianProblem(3, "gaussian2d")
    with pytest.raises(ConfigError, match="choose one of"):
        GaussianProblem(2, "nope")
    with pytest.raises(ConfigError, match="integer >= 1"):
        GaussianProblem(0)


@pytest.mark.parametrize("shape", SHAPES)
def test_toy_shapes_sample(shape):
    p = Toy2DProblem(2, source=shape, target=shape)
    g = torch.Generator().manual_seed(0)
    x = p.sample_source(5000, generator=g)
    assert x.shape == (5000, 2) and torch.isfinite(x).all()
    assert 0.1 < x.std(0).min() and x.abs().max() < 10


def test_toy_checkerboard_occupies_dark_squares_only():
    x = Toy2DProblem(2, target="checkerboard").sample_target(20_000)
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert torch.all(parity == 0) or torch.all(parity == 1)


def test_toy_errors():
    with pytest.raises(ConfigError, match="two-dimensional"):
        Toy2DProblem(3)
    with pytest.raises(ConfigError, match="not a toy shape"):
        Toy2DProblem(2, source="banana")


def test_class_mixture_labels_and_density():
    p = ClassMixtureProblem()
    assert p.classes == (0, 1, 2) and "labels" in p.offers
    x = p.sample_source(1000, cls=2)
    assert torch.allclose(x.mean(0), p.a[2], atol=0.05)
    y = p.sample_target(1000, cls=2)
    assert torch.allclose(y.mean(0), p.b[2], atol=0.05)
    # density integrates to one on a grid
    g = torch.linspace(-6, 6, 301)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    mass = p.log_density_source(grid).exp().sum() * (g[1] - g[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-3)


# -- the problem → method channel ---------------------------------------------------------
def test_problem_owned_metrics_reach_a_method_without_paths(tmp_path):
    """Crowd motion's obstacle metrics come from the problem, so NCF (a static map, charged
    along straight lines) gets them too; the run records the problem's label and no hints."""
    from .conftest import FAST, read_results, run_folders, train

    train(tmp_path, *FAST, "problem=crowd_motion", "threads=1")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    assert res["label"] == "test4" and res["hints"] == {}
    assert res["metrics"]["obstacle_cost"] > 0
    assert 0 <= res["metrics"]["obstacle_fraction"] <= 1


def test_straight_line_paths_cost_what_the_obstacle_charges():
    """A static map's paths are (1 − t) x + t T(x); for T(x) = x + 6 e1 through test4's Gaussian
    obstacle the Simpson cost matches a fine trapezoid of Q along the same lines."""
    from ot_experiments.methods.base import OTMethod
    from ot_experiments.problems.crowd_motion import CrowdMotionProblem

    class Shift(OTMethod):
        def transport(self, x):
            return x + torch.tensor([6.0, 0.0])

    problem = CrowdMotionProblem(2, "test4")
    method = Shift(problem, optimizer=None)
    x = problem.sample_source(300, generator=torch.Generator().manual_seed(0))
    paths = method.paths(x)
    assert paths.shape == (41, 300, 2)
    assert torch.allclose(paths[20], x + torch.tensor([3.0, 0.0]))
    t = torch.linspace(0, 1, 4001)
    q = problem.path_cost(
        (x[None] + 6 * t[:, None, None] * torch.tensor([1.0, 0.0])).reshape(-1, 2)
    )
    exact = float(torch.trapezoid(q.reshape(4001, 300).mean(1), t))
    assert problem.evaluate_method(method, x)["obstacle_cost"] == pytest.approx(exact, rel=1e-3)


def test_method_hints_fill_only_auto_options():
    from omegaconf import OmegaConf

    from ot_experiments.build import problem_hints
    from ot_experiments.problems.crowd_motion import CrowdMotionProblem

    maze = CrowdMotionProblem(2, "maze1")
    cfg = OmegaConf.create(
        {
            "method": {
                "name": "lagrangian",
                "kl_weight": 7.0,
                "h1_weight": "auto",
                "obstacle_weight": "auto",
                "obstacle_ramp_steps": "auto",
            }
        }
    )
    assert problem_hints(cfg, maze) == {
        "h1_weight": 0.0,
        "obstacle_weight": 5e4,
        "obstacle_ramp_steps": 300,
    }
    assert CrowdMotionProblem(2, "maze4").method_hints("lagrangian")["obstacle_ramp_steps"] == 0
    assert maze.method_hints("ncf") == {}
